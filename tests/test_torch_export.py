import ast
import subprocess
import sys

from pipeline.tolerances import ATOL_PROB

LOAD_WITHOUT_ONNX2TORCH = """
import sys
sys.modules["onnx2torch"] = None  # any import of it now fails
import torch
module = torch.export.load(sys.argv[1]).module()
print(tuple(module(torch.rand(3, 32, 32, 3) * 255).shape))
"""


def test_pt2_loads_and_runs_without_onnx2torch(tiny_converted):
    _, _, paths, _, _ = tiny_converted
    completed = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_ONNX2TORCH, str(paths.pt2)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "(3, 10)"


def test_pt2_validated_against_onnxruntime(tiny_converted):
    *_, result = tiny_converted
    assert result.validation.max_abs_diff <= ATOL_PROB and result.validation.argmax_disagreements == 0
    assert result.reshapes_made_static == 1


def test_fx_code_is_readable_python(tiny_converted):
    _, _, paths, _, _ = tiny_converted
    source = paths.fx_code.read_text()
    ast.parse(source)
    assert "def forward" in source and "torch.reshape" in source
