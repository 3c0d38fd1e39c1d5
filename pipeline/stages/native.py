"""Stage `native`: the Keras file → a native PyTorch model users keep developing — `native/model.py`
(plain source, one submodule per Keras layer with weights, named after it), `native/model.safetensors`
(its state_dict) and `native/weights_map.json` (each Keras weight's key and layout transform).

Generated from the file alone (`native.generate`: no TensorFlow, no ONNX), then loaded back in this
process and checked against Keras's stored outputs, where the onnx stage wrote them, and — with
`parity` — trained one step against Keras (`verifier.training`: `native/parity.json`) before it returns.

All or nothing: the files are written and checked in a temporary folder, renamed to `native/` as the
stage's last act (`atomic.atomic_dir`). A failure leaves no `native/` — an older one is removed: it is not
this model's native model — and records why in `native_status.json` (`common.stage_status`), which a
success records too: `verify` reads it, and Make takes it for "the native stage was tried".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common import manifest
from pipeline.common.atomic import atomic_dir, atomic_path, remove_dir, write_text
from pipeline.common.errors import PipelineError
from pipeline.common.paths import ModelPaths, NativePaths
from pipeline.common.stage_status import StageStatus
from pipeline.keras_file.model import KerasModel
from pipeline.verifier.compare import PairResult
from pipeline.verifier.training import ParityReport

STAGE = "native"


@dataclass
class NativeResult:
    source: Path
    weights: Path
    weights_map: Path
    parameters: int
    not_carried: list[str]  # regularizers and constraints the weights do not carry (`layer/option`)
    validation: PairResult | None  # against Keras's stored outputs, where the onnx stage wrote them
    parity: ParityReport | None = None  # one training step against Keras's, where asked for
    notes: list[str] = field(default_factory=list)  # config fields left out of the native model, each a line (`generate`)


def run(model_path: Path, out_dir: Path, keras: KerasModel | None = None, parity: bool = False, data: Path | None = None) -> NativeResult:
    """Generate the native model of `model_path` into `out_dir/native/`, reload it, and check it;
    with `parity`, also train it one step against Keras on a batch from `data` (CIFAR-10 models) or
    seeded inputs, into `native/parity.json` (skipped, with the reason there, where Keras's step crashes
    TensorFlow even when retried: `verifier.training`). The outcome — built, or the error's line — goes to
    `native_status.json`.

    Raises:
        BadInput: the model file is unreadable, or a layer has no native equivalent (named).
        CheckFailed: the reloaded model disagrees with Keras's stored outputs beyond the model's tolerance,
            or its training step with Keras's beyond `TRAIN_RTOL`.
    """
    started = time.time()
    keras = keras or KerasModel.open(model_path)  # an unreadable model file is not this stage's finding: nothing recorded
    paths = ModelPaths(Path(out_dir))
    try:
        keras.check_weights()
        with atomic_dir(paths.native_dir) as folder:
            native, validation, report = _build(keras, paths, NativePaths(folder), parity, data)
    except PipelineError as exc:
        remove_dir(paths.native_dir)
        StageStatus(STAGE, keras.sha256, built=False, reason=" ".join(str(exc).split())).write(paths.native_status)
        raise
    written = [paths.native_source, paths.native_weights, paths.native_weights_map] + ([paths.native_parity] if report else [])
    skipped = {"parity_skipped": report.skipped} if report is not None and report.skipped else {}
    manifest.record(paths.dir, STAGE, keras.path, written, started, not_carried=native.not_carried, **skipped)
    StageStatus(STAGE, keras.sha256, built=True).write(paths.native_status)
    parameters = sum(array.size for array in native.state_dict.values())
    return NativeResult(paths.native_source, paths.native_weights, paths.native_weights_map, parameters, native.not_carried, validation, report,
                        native.notes)


def _build(keras: KerasModel, paths: ModelPaths, staged: NativePaths, parity: bool, data: Path | None):
    """The native model written into `staged` and checked there: (what `generate` made, the check against
    Keras's stored outputs, the parity report or None). Raises as `run` does, after the first failure."""
    from safetensors.numpy import save_file

    from pipeline.native import generate

    native = generate.generate(keras, keras2=_loaded_by_tf_keras(paths, keras))
    with atomic_path(staged.weights) as tmp:
        save_file(native.state_dict, str(tmp), metadata={"source": keras.name, "model_sha256": keras.sha256})
    write_text(staged.weights_map, json.dumps(native.weights_map, indent=2) + "\n")
    write_text(staged.source, native.source)
    validation = _validate(paths, staged, keras)
    report = _parity(paths, staged, keras, native.weights_map, data) if parity else None
    if report is not None:
        report.raise_if_failed()
    return native, validation, report


def _parity(paths: ModelPaths, staged: NativePaths, keras: KerasModel, weights_map: dict, data: Path | None) -> ParityReport:
    """One training step of the reloaded native model (in `staged`) against Keras's (`verifier.training`;
    Keras's step the onnx stage stored, where it fits)."""
    from pipeline.native import load
    from pipeline.verifier import training

    model, source = load.load(staged.source, staged.weights)
    return training.run(keras, model, source, weights_map, data, staged.parity, stored=paths.keras_training_step)


def _loaded_by_tf_keras(paths: ModelPaths, keras: KerasModel) -> bool:
    """Whether the onnx stage's Keras was tf-keras for this very file (the native model then takes Keras 2's
    meaning of its activations, as the reference does); False where no onnx stage ran: Keras 3's."""
    recorded = manifest.load(paths.dir)
    if recorded.get("model", {}).get("sha256") != keras.sha256:
        return False
    return str(recorded.get("stages", {}).get("onnx", {}).get("keras_loader", "")).startswith("tf_keras")


def _validate(paths: ModelPaths, staged: NativePaths, keras: KerasModel) -> PairResult | None:
    """The reloaded native model (in `staged`) against Keras's stored outputs on the random check sets (None
    where the onnx stage has not written them), within the model's own float32 noise where it was measured."""
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
    predict = backends.load("native", Sources(Artifacts(model=keras.path, native=staged.source), keras, inputs=stored.input_layout))
    keras_outputs = {name: out for name, out in stored.outputs().items() if name in sets}
    result = compare("native", backends.run_sets(predict, sets), "keras", keras_outputs, keras.classifier, noise)
    return require(result, f"{paths.native_source} disagrees with {keras.name}", with_counts=False)
