import ast
import subprocess
import sys

import pytest

from pipeline.tolerances import ATOL_PROB

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

    from pipeline.torch_export import load_pt2

    _, _, paths, _, _ = tiny_converted
    module = load_pt2(paths.pt2_opt)
    inductor_config.freezing = True
    compiled = torch.compile(module)
    x = torch.rand(8, 32, 32, 3) * 255
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), module(x), atol=ATOL_PROB, rtol=0)
    inductor_config.freezing = False


def test_pt2_validated_against_onnxruntime(tiny_converted):
    *_, result = tiny_converted
    assert result.validation.max_abs_diff <= ATOL_PROB and result.validation.argmax_disagreements == 0
    assert result.validation_opt.max_abs_diff <= ATOL_PROB and result.validation_opt.argmax_disagreements == 0
    assert result.reshapes_made_static == 1 and result.optimizations.linears_folded == 1


def test_fx_code_is_readable_python(tiny_converted):
    _, _, paths, _, _ = tiny_converted
    source = paths.fx_code.read_text()
    ast.parse(source)
    assert "def forward" in source and "torch.reshape" in source
