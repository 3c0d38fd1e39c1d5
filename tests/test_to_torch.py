import ast
import subprocess
import sys

import pytest

import helpers
from pipeline.common.errors import CheckFailed
from pipeline.common.tolerances import ATOL_PROB
from pipeline.keras_file.model import KerasModel

LOAD_WITHOUT_ONNX2TORCH = """
import sys
sys.modules["onnx2torch"] = None  # any import of it now fails
import torch
module = torch.export.load(sys.argv[1]).module()
print(tuple(module(torch.rand(3, 32, 32, 3) * 255).shape))
"""


@pytest.mark.parametrize("artifact", ["pt2", "pt2_opt"])
def test_pt2_loads_and_runs_without_onnx2torch(tiny_converted, artifact):
    _, _, paths, _, _ = tiny_converted
    path = getattr(paths, artifact)
    completed = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_ONNX2TORCH, str(path)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "(3, 10)"


def test_optimized_pt2_runs_under_torch_compile(tiny_converted):
    import torch
    import torch._inductor.config as inductor_config

    from pipeline.runtimes.pt2 import load_module

    _, _, paths, _, _ = tiny_converted
    module = load_module(paths.pt2_opt)
    inductor_config.freezing = True
    compiled = torch.compile(module)
    x = torch.rand(8, 32, 32, 3) * 255
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), module(x), atol=ATOL_PROB, rtol=0)
    inductor_config.freezing = False


def test_stage_reports_its_rewrites(tiny_converted):
    *_, result = tiny_converted
    assert result.reshapes_made_static == 1 and result.optimizations.linears_folded == 1


def test_validation_fails_on_a_program_that_disagrees(tiny_converted, tmp_path):
    """The torch stage's own check is shown to fail: a program exported from a broken ONNX, judged
    against ONNX Runtime on the good one."""
    from pipeline.converters import onnx_graph, to_fx
    from pipeline.stages.to_torch import _onnxruntime_reference, _save, validate

    model, _, paths, _, _ = tiny_converted
    helpers.perturb_onnx_kernel(paths.onnx, tmp_path / "broken.onnx", KerasModel.open(model).weights["conv2d_1"]["kernel"], delta=5.0)
    shape = onnx_graph.input_shape(paths.onnx)
    broken_pt2 = tmp_path / "broken.pt2"
    _save(to_fx.export(to_fx.convert(tmp_path / "broken.onnx")[0], shape), broken_pt2)
    sets, ort_outputs, classifier = _onnxruntime_reference(paths.onnx)
    with pytest.raises(CheckFailed, match="disagrees with"):
        validate(broken_pt2, paths.onnx, sets, ort_outputs, classifier)


def test_fx_code_is_readable_python(tiny_converted):
    _, _, paths, _, _ = tiny_converted
    source = paths.fx_code.read_text()
    ast.parse(source)
    assert "def forward" in source and "torch.reshape" in source
