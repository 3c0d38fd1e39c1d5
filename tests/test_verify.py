import json

import pytest

import helpers
from pipeline.stages import verify
from pipeline.verifier.backends import Artifacts
from pipeline.common.errors import CheckFailed
from pipeline.data import checkset
from pipeline.common.tolerances import ATOL_PROB


def test_tiny_conversion_passes_with_manual_not_applicable(tiny_converted, tiny_data):
    model, _, paths, _, _ = tiny_converted
    result = verify.run(Artifacts(model, paths.onnx, paths.pt2), tiny_data, paths.dir, progress=False)
    assert result.passed
    assert result.backends == ["keras", "onnxruntime", "fx", "torch"]
    assert "manual" in result.not_applicable
    per_range = sum(checkset.RANDOM_BATCH_SIZES)
    assert result.test_images == 64 and result.random_images == per_range * len(checkset.DEFAULT_RANGES)
    assert result.as_dict()["input_ranges"] == [list(r) for r in sorted(checkset.DEFAULT_RANGES)]
    assert len(result.pairs) == 6
    saved = json.loads(paths.verify_json.read_text())
    assert saved["passed"] and {"a", "b", "max_abs_diff", "max_rel_diff", "argmax_disagreements", "images"} <= set(saved["pairs"][0])


def test_tiny_weight_changed_by_2e_2_fails(tiny_converted, tiny_data, tmp_path):
    model, _, paths, _, _ = tiny_converted
    broken = tmp_path / "broken.onnx"
    helpers.perturb_onnx_kernel(paths.onnx, broken, helpers.h5_tensor(model, "conv2d_1/kernel"))
    result = verify.run(Artifacts(model, broken, onnx_reference=paths.onnx), tiny_data, tmp_path, progress=False)
    assert not result.passed
    failing = {(p.a, p.b) for p in result.pairs if not p.passed}
    assert failing == {("onnxruntime", "keras"), ("fx", "keras")}
    assert result.layers.first_divergence["keras_layer"] == "conv2d_1"
    # the line names the first divergence and counts the rest (onnxruntime vs keras, fx vs keras): verify.json lists them
    with pytest.raises(CheckFailed, match=r"first divergent layer: conv2d_1 in onnxruntime .*; 2 more failure\(s\) in verify.json"):
        result.raise_if_failed()


@pytest.mark.real_data
@pytest.mark.slow
def test_real_verify_json(real_run):
    completed, paths, _ = real_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    saved = json.loads(paths.verify_json.read_text())
    assert saved["passed"] and saved["test_images"] == 10_000
    assert {"keras", "onnxruntime", "torch", "native", "manual"} <= set(saved["backends"])
    for pair in saved["pairs"]:
        assert pair["max_abs_diff"] <= ATOL_PROB and pair["argmax_disagreements"] == 0
        assert pair["test_images"] == 10_000
    assert saved["first_divergence"] is None and saved["layers"]["passed"]
    assert len(saved["layers"]["layers"]) == 29 and saved["layers"]["backends"] == ["onnxruntime", "fx", "native", "manual"]


@pytest.mark.real_data
@pytest.mark.slow
def test_real_conv2d_4_weight_changed_by_2e_2_fails(real_run, real_reference_copy):
    # NOTES.md: this change flips no prediction and moves probabilities by ~1e-2 at most, so an
    # argmax check or a ±0.01 tolerance passes it. Ours must not.
    _, paths, data = real_run
    model = data / "models" / "pretrainedResnet.h5"
    broken = real_reference_copy / "broken.onnx"
    helpers.perturb_onnx_kernel(paths.onnx, broken, helpers.h5_tensor(model, "conv2d_4/kernel"))
    result = verify.run(Artifacts(model, broken, onnx_reference=paths.onnx), data, real_reference_copy, progress=False)
    assert not result.passed and result.layers.first_divergence["keras_layer"] == "conv2d_4"
    worst = max(p.max_abs_diff for p in result.pairs if p.a == "onnxruntime" and p.b == "keras")
    assert ATOL_PROB < worst < 0.05


def test_a_fault_in_the_searched_graph_is_still_located(tiny_converted, tiny_data, tmp_path):
    """Searched in itself (no conversion of the model's own to place layers in), a broken file holds no
    value of the model's from the fault on: no layer is ✗, and the error names where the values stop."""
    model, _, paths, _, _ = tiny_converted
    broken = tmp_path / "broken.onnx"
    helpers.perturb_onnx_kernel(paths.onnx, broken, helpers.h5_tensor(model, "conv2d_1/kernel"))
    result = verify.run(Artifacts(model, broken), tiny_data, tmp_path, progress=False)
    assert not result.passed and result.layers.first_divergence is None
    assert result.layers.first_unplaced == "conv2d_1"
    with pytest.raises(CheckFailed, match="from layer conv2d_1 on no tensor of the conversion holds the model's values"):
        result.raise_if_failed()
