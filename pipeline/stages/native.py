"""Stage `native`: the Keras file → a native PyTorch model users keep developing — `native/model.py`
(plain source, one submodule per Keras layer with weights, named after it), `native/model.safetensors`
(its state_dict) and `native/weights_map.json` (each Keras weight's key and layout transform).

Generated from the file alone (`native.generate`: no TensorFlow, no ONNX), then loaded back in this
process and checked against Keras's stored outputs, where the onnx stage wrote them, and — with
`parity` — trained one step against Keras (`verifier.training`: `native/parity.json`) before it returns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.common import manifest
from pipeline.common.atomic import atomic_path, write_text
from pipeline.common.paths import ModelPaths
from pipeline.keras_file.model import KerasModel
from pipeline.verifier.compare import PairResult
from pipeline.verifier.training import ParityReport


@dataclass
class NativeResult:
    source: Path
    weights: Path
    weights_map: Path
    parameters: int
    not_carried: list[str]  # regularizers and constraints the weights do not carry (`layer/option`)
    validation: PairResult | None  # against Keras's stored outputs, where the onnx stage wrote them
    parity: ParityReport | None = None  # one training step against Keras's, where asked for


def run(model_path: Path, out_dir: Path, keras: KerasModel | None = None, parity: bool = False, data: Path | None = None) -> NativeResult:
    """Generate the native model of `model_path` into `out_dir/native/`, reload it, and check it;
    with `parity`, also train it one step against Keras on a batch from `data` (CIFAR-10 models) or
    seeded inputs, into `native/parity.json`.

    Raises:
        BadInput: the model file is unreadable, or a layer has no native equivalent (named).
        CheckFailed: the reloaded model disagrees with Keras's stored outputs beyond the model's tolerance,
            or its training step with Keras's beyond `TRAIN_RTOL`.
    """
    from safetensors.numpy import save_file

    from pipeline.native import generate

    started = time.time()
    keras = keras or KerasModel.open(model_path)
    keras.check_weights()
    paths = ModelPaths(Path(out_dir))
    native = generate.generate(keras, keras2=_loaded_by_tf_keras(paths, keras))
    paths.native_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths.native_weights) as tmp:
        save_file(native.state_dict, str(tmp), metadata={"source": keras.name, "model_sha256": keras.sha256})
    write_text(paths.native_weights_map, json.dumps(native.weights_map, indent=2) + "\n")
    write_text(paths.native_source, native.source)
    validation = _validate(paths, keras)
    report = _parity(paths, keras, native.weights_map, data) if parity else None
    parameters = sum(array.size for array in native.state_dict.values())
    written = [paths.native_source, paths.native_weights, paths.native_weights_map] + ([paths.native_parity] if report else [])
    manifest.record(paths.dir, "native", keras.path, written, started, not_carried=native.not_carried)
    if report is not None:
        report.raise_if_failed()
    return NativeResult(paths.native_source, paths.native_weights, paths.native_weights_map, parameters, native.not_carried, validation, report)


def _parity(paths: ModelPaths, keras: KerasModel, weights_map: dict, data: Path | None) -> ParityReport:
    """One training step of the reloaded native model against Keras's (`verifier.training`; Keras's step
    the onnx stage stored, where it fits)."""
    from pipeline.native import load
    from pipeline.verifier import training

    model, source = load.load(paths.native_source, paths.native_weights)
    return training.run(keras, model, source, weights_map, data, paths.native_parity, stored=paths.keras_training_step)


def _loaded_by_tf_keras(paths: ModelPaths, keras: KerasModel) -> bool:
    """Whether the onnx stage's Keras was tf-keras for this very file (the native model then takes Keras 2's
    meaning of its activations, as the reference does); False where no onnx stage ran: Keras 3's."""
    recorded = manifest.load(paths.dir)
    if recorded.get("model", {}).get("sha256") != keras.sha256:
        return False
    return str(recorded.get("stages", {}).get("onnx", {}).get("keras_loader", "")).startswith("tf_keras")


def _validate(paths: ModelPaths, keras: KerasModel) -> PairResult | None:
    """The reloaded native model against Keras's stored outputs on the random check sets (None where the
    onnx stage has not written them), within the model's own float32 noise where it was measured."""
    from pipeline.verifier import backends, precision
    from pipeline.verifier.backends import Artifacts, Sources
    from pipeline.verifier.compare import compare, require
    from pipeline.verifier.keras_reference import KerasReference

    if not paths.keras_reference.is_file():
        return None
    stored = KerasReference(paths.keras_reference)
    if stored.model_sha256 != keras.sha256:
        return None
    sets = {name: stored.inputs(name) for name in stored.set_names() if stored.inputs(name) is not None}
    noise = precision.measure_stored(stored, paths.keras_reference_f64)
    predict = backends.load("native", Sources(Artifacts(model=keras.path, native=paths.native_source), keras))
    keras_outputs = {name: out for name, out in stored.outputs().items() if name in sets}
    result = compare("native", backends.run_sets(predict, sets), "keras", keras_outputs, keras.classifier, noise)
    return require(result, f"{paths.native_source} disagrees with {keras.name}", with_counts=False)
