"""Our convolution kernel (`k2t::conv2d_direct`) and the rewrite that calls it (`converters.conv_direct`)."""

import pytest
import torch

from pipeline.common import cpuinfo
from pipeline.converters import conv_direct
from pipeline.runtimes import direct_conv


@pytest.fixture(scope="module")
def kernel():
    if not cpuinfo.has_avx512():
        pytest.skip("the kernel is AVX-512 code; this processor has none")
    assert direct_conv.load()


# (batch, Cin, H, W, Cout, kernel, stride, padding): ResNet8's shapes, and the edges — 3 input channels, an
# output width that is no multiple of 16 (10, 40), more than 64 (80: two channel blocks), 5×5, stride 2.
SHAPES = [(1, 3, 32, 32, 16, 3, 1, 1), (1, 16, 32, 32, 16, 3, 1, 1), (1, 16, 33, 33, 32, 3, 2, 0), (1, 16, 32, 32, 32, 1, 2, 0),
          (1, 64, 8, 8, 64, 3, 1, 1), (1, 64, 8, 8, 10, 3, 1, 1), (2, 24, 7, 9, 40, 5, 1, 2), (3, 8, 6, 6, 80, 3, 2, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu, residual", [(False, False), (True, False), (True, True)])
def test_the_kernel_is_the_convolution_to_float32_rounding(kernel, shape, relu, residual):
    """Against float64, the kernel's error is within a few times ATen's own float32 error (the order of the
    sums differs, nothing else may), on a channels-last input and on an NCHW one (another copy path)."""
    n, cin, h, w, cout, k, s, p = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(n, cin, h, w, generator=gen)
    weight, bias = torch.randn(cout, cin, k, k, generator=gen), torch.randn(cout, generator=gen)
    exact = torch.nn.functional.conv2d(x.double(), weight.double(), bias.double(), stride=s, padding=p)
    extra = torch.randn(exact.shape, generator=gen) if residual else None
    if residual:
        exact = exact + extra.double()
    if relu:
        exact = exact.relu()
    ours32 = torch.nn.functional.conv2d(x, weight, bias, stride=s, padding=p)
    aten = ((ours32 + extra) if residual else ours32)
    aten = aten.relu() if relu else aten
    aten_error = float((aten.double() - exact).abs().max())
    packed, full_bias = direct_conv.pack(weight, bias)
    for layout in (torch.channels_last, torch.contiguous_format):
        got = torch.ops.k2t.conv2d_direct(x.contiguous(memory_format=layout), packed, full_bias, cout, [s, s], [p, p], relu,
                                          extra)
        assert got.shape == exact.shape and got.is_contiguous(memory_format=torch.channels_last)
        assert float((got.double() - exact).abs().max()) <= 4 * aten_error + 1e-6


def test_padding_may_differ_on_each_side(kernel):
    """(top, bottom, left, right): what a zero pad folded into the convolution leaves it."""
    gen = torch.Generator().manual_seed(1)
    x, weight = torch.randn(1, 16, 9, 9, generator=gen), torch.randn(32, 16, 3, 3, generator=gen)
    packed, bias = direct_conv.pack(weight, None)
    got = torch.ops.k2t.conv2d_direct(x, packed, bias, 32, [2, 2], [0, 1, 2, 1], False, None)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 1, 0, 1)), weight, stride=2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_a_wrong_packed_weight_is_seen(kernel):
    """The comparison above fails a kernel fed one weight moved by 2 % of the largest: it is not blind."""
    gen = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(1, 16, 8, 8, generator=gen), torch.randn(32, 16, 3, 3, generator=gen), torch.randn(32, generator=gen)
    packed, full_bias = direct_conv.pack(weight, bias)
    packed[1, 1, 3, 7] += 0.02 * float(weight.abs().max())
    got = torch.ops.k2t.conv2d_direct(x, packed, full_bias, 32, [1, 1], [1, 1], False, None)
    exact = torch.nn.functional.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    aten_error = float((torch.nn.functional.conv2d(x, weight, bias, padding=1).double() - exact).abs().max())
    assert float((got.double() - exact).abs().max()) > 100 * aten_error


class _Block(torch.nn.Module):
    """A residual block as Keras's ResNets export it: conv → ReLU → conv, + shortcut, ReLU; then a zero pad of the
    bottom and right and a 1×1 stride-2 conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.down = torch.nn.Conv2d(8, 16, 1, stride=2)

    def forward(self, x):
        y = torch.relu(self.b(torch.relu(self.a(x))) + x)
        return self.down(torch.nn.functional.pad(y, (0, 1, 0, 1)))  # TensorFlow's 'same' at stride 2: bottom and right


def _exported(module, x):
    """`module` exported for `x` (the GraphModule a rewrite takes), its own output on `x`, and `x`."""
    with torch.no_grad():
        return torch.export.export(module, (x,)).module(), module(x), x


def _targets(graph) -> list:
    """What each call of `graph` calls, in order."""
    return [n.target for n in graph.nodes if n.op == "call_function"]


def test_the_rewrite_folds_the_residual_add_the_relus_and_the_pad_and_computes_the_same(kernel):
    exported, expected, x = _exported(_Block().eval(), torch.randn(1, 8, 10, 10))
    assert conv_direct.rewrite(exported) == 3
    targets = _targets(exported.graph)
    assert targets.count(torch.ops.k2t.conv2d_direct.default) == 3
    assert torch.ops.aten.relu.default not in targets and torch.ops.aten.add.Tensor not in targets
    assert torch.ops.aten.conv2d.default not in targets and torch.ops.aten.pad.default not in targets
    with torch.no_grad():
        torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-5)


def test_the_declared_c_entry_point_is_the_one_the_source_defines():
    """AOTInductor writes `SHIM` into a package's code and calls the kernel through it: a declaration that
    drifted from the definition would pass the arguments wrong, with no compiler to say so."""
    source = "".join(direct_conv.SOURCE.read_text().split())
    assert "".join(direct_conv.SHIM.split()) in source
    assert direct_conv.ENTRY in direct_conv.SHIM


def test_an_add_that_broadcasts_is_left_to_inductor(kernel):
    """The kernel adds a residual of the output's own shape; an Add that broadcasts (a per-channel term) is not
    folded in, and the module still computes the same."""

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 16, 3, padding=1)
            self.register_buffer("shift", torch.randn(1, 16, 1, 1))

        def forward(self, x):
            return torch.relu(self.conv(x) + self.shift)

    exported, expected, x = _exported(Scaled().eval(), torch.randn(1, 4, 6, 6))
    assert conv_direct.rewrite(exported) == 1
    targets = _targets(exported.graph)
    assert torch.ops.aten.add.Tensor in targets
    with torch.no_grad():
        torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-5)


def test_a_convolution_with_many_input_channels_is_left_to_im2col(kernel):
    """Above MAX_IN_CHANNELS the kernel loses to im2col + GEMM (measured, `conv_direct`): the batch-1 program
    gets the kernel for the narrow convolution and im2col for the wide one."""
    from pipeline.converters import aot_compile, conv_as_gemm

    wide = conv_direct.MAX_IN_CHANNELS * 2
    module = torch.nn.Sequential(torch.nn.Conv2d(8, wide, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(wide, 16, 3, padding=1)).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        program = torch.export.export(module, (x,))
        expected = module(x)
    batch1 = aot_compile.batch1_program(program, (8, 6, 6))
    targets = _targets(batch1.graph)
    assert targets.count(torch.ops.k2t.conv2d_direct.default) == 1
    assert conv_as_gemm.conv_as_gemm not in targets and torch.ops.aten.conv2d.default not in targets  # im2col, traced
    with torch.no_grad():
        torch.testing.assert_close(batch1.module()(x), expected, rtol=1e-5, atol=1e-4)
