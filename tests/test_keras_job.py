"""The contract with the TensorFlow process: a job and a result survive their JSON files unchanged."""

from pathlib import Path

from pipeline.common.keras_job import DEFAULT_OPSET, KerasBench, KerasJob, KerasJobResult


def test_job_round_trips_through_json():
    job = KerasJob(Path("m.h5"), allow_unsafe_code=True, data=Path("data"), onnx=Path("out/model.onnx"),
                   reference=Path("out/ref.npz"), bench=KerasBench((1, 32), 64, 2, 2))
    again = KerasJob.from_json(job.to_json())
    assert again == job and isinstance(again.model, Path) and again.layers is None and again.opset == DEFAULT_OPSET


def test_result_round_trips_through_its_file(tmp_path):
    result = KerasJobResult("keras 3.15.1", (32, 32, 3), onnx_rewrites={"erfc": 1}, bench={"1": 250.0})
    result.write(tmp_path / "result.json")
    assert KerasJobResult.read(tmp_path / "result.json") == result
