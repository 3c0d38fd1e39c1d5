"""`make aot-options`: the convolution-as-GEMM rewrite it measures, and its table's verdicts."""

import pytest
import torch

from pipeline.common.tolerances import ATOL_PROB
from pipeline.converters import conv_as_gemm
from pipeline.stages import aot_options


@pytest.mark.parametrize("kernel,stride,padding,bias", [
    ((3, 3), (1, 1), (1, 1), True), ((3, 3), (2, 2), (0, 0), True), ((1, 1), (2, 2), (0, 0), False),
    ((3, 1), (2, 1), (1, 0), True),  # every pair unequal: a swapped height and width shows
])
def test_conv_as_gemm_is_the_convolution(kernel, stride, padding, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 8, dtype=torch.float64)
    weight = torch.randn(7, 5, *kernel, dtype=torch.float64)
    b = torch.randn(7, dtype=torch.float64) if bias else None
    expected = torch.nn.functional.conv2d(x, weight, b, stride, padding)
    got = conv_as_gemm.conv_as_gemm(x, conv_as_gemm.gemm_matrix(weight), b, kernel, stride, padding)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)  # not covered: left as a convolution
        self.down = torch.nn.Conv2d(8, 4, 1, stride=2, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.depthwise(self.conv(x.permute(0, 3, 1, 2)))))


def test_rewrite_replaces_the_covered_convolutions_of_an_exported_module():
    torch.manual_seed(0)
    net, x = _Net().eval(), torch.randn(2, 10, 10, 3)
    module = torch.export.export(net, (x,)).module()
    assert conv_as_gemm.rewrite(module) == 2
    convs = [n for n in module.graph.nodes if n.target is torch.ops.aten.conv2d.default]
    assert len(convs) == 1 and convs[0].args[-1] == 8  # the depthwise one
    # The matrices are constants of the module (inductor's GEMM template packs only those), not reshapes in the graph.
    assert sorted(n for n, _ in module.named_buffers() if n.startswith(conv_as_gemm.MATRIX_PREFIX)) == ["gemm_matrix_0", "gemm_matrix_1"]
    with torch.no_grad():
        assert torch.allclose(module(x), net(x), atol=1e-5)


def _row(**changes):
    row = {"name": "v", "what": "w", "compile_s": 1.0, "max_abs_diff": 1e-7, "flips": 0,
           "ort_p50_us": 100.0, "aoti_p50_us": 200.0, "aoti_p99_us": 300.0, "ort_b256": 1000.0, "aoti_b256": 1100.0}
    return {**row, **changes}


def test_the_table_gives_ratios_and_marks_a_variant_that_disagrees():
    text = aot_options.table([_row(), _row(name="bad", max_abs_diff=3e-4), _row(name="flipped", flips=1)])
    good, bad, flipped = text.splitlines()[2:5]
    assert "0.50×" in good and "1.10×" in good and "✓" in good
    assert "✗" in bad and "✗" in flipped


def test_an_unknown_variant_is_bad_input(tmp_path):
    from pipeline.common.errors import BadInput
    from pipeline.common.paths import ModelPaths

    paths = ModelPaths(tmp_path)
    paths.onnx.write_bytes(b"x")
    paths.pt2_opt.write_bytes(b"x")
    with pytest.raises(BadInput, match="unknown AOT variant"):
        aot_options.run(paths, tmp_path, ("no such setting",), progress=False)


@pytest.mark.real_data
@pytest.mark.zoo  # a tuning tool's compile of ~20 s: `make zoo-test`; its table and rewrite are tested in CI
def test_a_variant_is_compiled_checked_and_timed_in_its_own_process(real_run):
    _, paths, data = real_run
    (row,) = aot_options.run(paths, data, ("freezing",), progress=False)
    assert row["max_abs_diff"] <= ATOL_PROB and row["flips"] == 0
    assert row["images_checked"] == aot_options.TIMED_IMAGES + aot_options.TIMED_IMAGES // 5  # all at 256, a fifth at 1
    assert row["aoti_p50_us"] > 0 and row["aoti_b256"] > 0 and row["ort_b256"] > 0
    assert "| freezing |" in (paths.dir / "aot_options.md").read_text()


@pytest.mark.real_data
def test_rewrite_reaches_every_convolution_of_the_real_program(real_run):
    from pipeline.runtimes.pt2 import load_program

    _, paths, _ = real_run
    assert conv_as_gemm.rewrite(load_program(paths.pt2_opt).module()) == 9  # ResNet8's nine: the im2col rows time them all
