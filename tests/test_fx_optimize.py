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
