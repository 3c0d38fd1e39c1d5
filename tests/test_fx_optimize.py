"""Each optimizing pass changes the graph and keeps its outputs, checked with the project's own comparison."""

import copy

import numpy as np
import pytest
import torch

from pipeline.converters import fx_optimize, fx_passes, to_fx
from pipeline.data import checkset
from pipeline.verifier.backends import Outputs
from pipeline.verifier.compare import compare


@pytest.fixture(scope="module")
def converted(tiny_converted):
    _, _, paths, _, _ = tiny_converted
    gm = to_fx.convert_raw(paths.onnx)
    fx_passes.static_reshapes(gm, (32, 32, 3))
    return gm


def _outputs(gm) -> dict[str, Outputs]:
    results = {}
    for name, inputs in checkset.random_batches((32, 32, 3)).items():
        with torch.inference_mode():
            results[name] = Outputs(gm(torch.from_numpy(inputs)).numpy())
    return results


def test_optimize_keeps_outputs_and_counts_changes(converted):
    optimized, report = fx_optimize.optimize(converted, (32, 32, 3))
    assert report.native_ops > 0 and report.linears_folded == 1
    assert compare("optimized", _outputs(optimized), "converted", _outputs(converted)).passed
    names = {type(m).__name__ for m in optimized.modules()}
    assert not names & {"OnnxBinaryMathOperation", "OnnxMatMul", "OnnxTranspose"}


@pytest.mark.parametrize("pass_name", ["native_ops", "fold_linear"])
def test_each_pass_alone_keeps_outputs(converted, pass_name):
    gm = copy.deepcopy(converted)
    fx_optimize.native_ops(gm)  # the folds work on native ops
    before = _outputs(gm)
    if pass_name != "native_ops":
        assert getattr(fx_optimize, pass_name)(gm) > 0
    assert compare("after", _outputs(gm), "before", before).passed


@pytest.mark.real_data
def test_batchnorm_folding_on_resnet8(real_run):
    import onnx2torch

    _, paths, _ = real_run
    gm = onnx2torch.convert(str(paths.onnx)).eval()
    optimized, report = fx_optimize.optimize(gm, (32, 32, 3))
    assert report.batchnorms_folded == 7  # every BatchNorm of ResNet8 into its conv
    assert not any(n.target in (torch.mul,) for n in optimized.graph.nodes)
    assert compare("optimized", _outputs(optimized), "converted", _outputs(gm)).passed


@pytest.mark.real_data
def test_a_wrong_fold_is_caught(real_run, monkeypatch):
    """The checker catches a fold that forgets the shift (a plausible bug), not just gross breakage."""
    import onnx2torch

    _, paths, _ = real_run
    gm = onnx2torch.convert(str(paths.onnx)).eval()
    real_parameter = torch.nn.Parameter
    calls = {"n": 0}

    def forgetful_parameter(value, *args, **kwargs):
        calls["n"] += 1
        return real_parameter(value * (1.0 if calls["n"] > 1 else 1.001), *args, **kwargs)  # first bias off by 0.1%

    monkeypatch.setattr(fx_optimize.nn, "Parameter", forgetful_parameter)
    optimized, _ = fx_optimize.optimize(gm, (32, 32, 3))
    monkeypatch.undo()
    result = compare("optimized", _outputs(optimized), "converted", _outputs(gm))
    assert not result.passed and np.isfinite(result.max_abs_diff)


def test_a_float16_matmul_is_folded_in_float16_and_a_float32_bias_left_apart():
    """A mixed-precision model's Dense: matmul of float16 weights, then a bias. Folded into an `nn.Linear` in
    float16 (a float32 Linear fed float16 fails: "mat1 and mat2 must have the same dtype"); a bias of another dtype
    promotes the sum, so it stays an add."""
    from torch import fx

    class Dense(torch.nn.Module):
        def __init__(self, bias_dtype):
            super().__init__()
            self.register_buffer("weight", torch.randn(6, 4, dtype=torch.float16))
            self.register_buffer("bias", torch.randn(4, dtype=bias_dtype))

        def forward(self, x):
            return torch.add(torch.matmul(x, self.weight), self.bias)

    x = torch.randn(3, 6, dtype=torch.float16)
    for bias_dtype, bias_folded in ((torch.float16, True), (torch.float32, False)):
        module = Dense(bias_dtype)
        expected = module(x)
        gm = fx.symbolic_trace(module)
        assert fx_optimize.fold_linear(gm) == 1
        assert (gm.linear_0.bias is not None) == bias_folded and gm.linear_0.weight.dtype == torch.float16
        with torch.inference_mode():
            result = gm(x)
        # one float16 rounding of the fused multiply-add instead of two: a float16 ulp (values up to ~6 here)
        assert result.dtype == expected.dtype and torch.allclose(result, expected, rtol=0, atol=2 ** -7)
