import json

import pytest

from pipeline.stages import evaluate
from pipeline.common.errors import CheckFailed
from pipeline.common.tolerances import ACCURACY_GATE


def test_random_model_fails_the_gate(tiny_converted, tiny_data, tmp_path):
    _, _, paths, _, _ = tiny_converted
    result = evaluate.run(paths.pt2, tiny_data, tmp_path, onnx=paths.onnx, progress=False)
    assert result.total == 64 and not result.passed
    assert result.subset_total == 10
    assert sum(map(sum, result.confusion)) == 64
    assert result.side_by_side["onnxruntime"]["correct"] == result.correct
    with pytest.raises(CheckFailed, match="below the gate"):
        result.raise_if_failed()
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.real_data
@pytest.mark.slow
def test_real_accuracy_equals_keras(real_run):
    completed, paths, _ = real_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    saved = json.loads(paths.evaluate_json.read_text())
    assert saved["passed"] and saved["gate"] == ACCURACY_GATE
    assert abs(saved["correct"] - 8719) <= 2 and saved["total"] == 10_000
    assert saved["side_by_side"]["keras"]["correct"] == saved["correct"]
    assert abs(saved["side_by_side"]["onnxruntime"]["correct"] - 8719) <= 2
    assert saved["subset_total"] == 200 and saved["subset_accuracy"] > 0.8
    assert saved["from_verify"] == ["torch", "onnxruntime"]  # verify ran both over the test set just before
    for name in ("model.onnx", "model.pt2", "model_fx.py", "verify.json", "evaluate.json", "report.md", "confusion.png"):
        assert (paths.dir / name).is_file(), name


@pytest.mark.real_data
@pytest.mark.slow
def test_right_model_on_wrongly_normalised_inputs_fails_the_gate(real_run, tmp_path):
    _, paths, data = real_run
    result = evaluate.run(paths.pt2, data, tmp_path, options=evaluate.EvaluateOptions(input_scale=1 / 255), progress=False)
    assert result.accuracy < 0.5 and not result.passed
    with pytest.raises(CheckFailed):
        result.raise_if_failed()


@pytest.mark.parametrize("stored_for", ["this model", "another file", "another test set", "scaled pixels"])
def test_verify_classes_are_scored_only_for_the_same_model_and_test_set(tiny_converted, tiny_data, tmp_path, stored_for):
    """evaluate scores the classes verify kept (`test_predictions`) for this very model.pt2 / model.onnx and
    test set, run as verify ran them, and runs the model itself for anything else: here the kept classes are
    all right, which the random model's are not."""
    from pipeline.common.paths import ModelPaths
    from pipeline.data import cifar
    from pipeline.verifier import test_predictions

    _, _, paths, _, _ = tiny_converted
    test = cifar.load(tiny_data)
    ran = {"torch": paths.onnx if stored_for == "another file" else paths.pt2, "onnxruntime": paths.onnx}
    test_set = paths.onnx if stored_for == "another test set" else test.source
    test_predictions.save(ModelPaths(tmp_path).test_predictions, {"torch": test.labels, "onnxruntime": test.labels}, ran, test_set)
    options = evaluate.EvaluateOptions(input_scale=0.5 if stored_for == "scaled pixels" else 1.0)
    result = evaluate.run(paths.pt2, tiny_data, tmp_path, onnx=paths.onnx, options=options, progress=False)
    if stored_for == "this model":
        assert result.correct == 64 and result.side_by_side["onnxruntime"]["correct"] == 64
        assert result.from_verify == ["torch", "onnxruntime"]
    else:
        assert result.correct < 64 and "torch" not in result.from_verify
