"""Stage 1: Keras → `model.onnx` (tf2onnx), plus Keras's reference outputs on the check set; and the
same for the model rebuilt in float64 (`model_f64.onnx`, the float64 proof's artifact, and the float64
outputs float32 is judged against); and, where its batch is known in advance, Keras's training step for
the native stage's parity (`keras_training_step.npz`, `verifier.training_batch`).

TensorFlow runs in its own process (`runtimes.keras` → `tf_side`). Back here, the ONNX file is checked
at once against those Keras outputs under ONNX Runtime, within the model's own float32 noise where it
was measured (`verifier.precision`); a breach fails the stage.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common import manifest
from pipeline.common.atomic import staged_files
from pipeline.common.keras_job import DEFAULT_OPSET, KerasJob
from pipeline.common.paths import ModelPaths
from pipeline.data import checkset, cifar
from pipeline.keras_file.model import KerasModel
from pipeline.runtimes import keras as keras_runtime
from pipeline.verifier import backends, precision, training_batch
from pipeline.verifier.compare import PairResult, compare, require
from pipeline.verifier.keras_reference import KerasReference
from pipeline.verifier.precision import Float32Noise


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = DEFAULT_OPSET
    allow_unsafe_code: bool = False  # let Keras deserialize Lambda layers (runs code from the file)
    inputs: Path | None = None  # the user's own sample inputs (.npy), added to the check set
    input_range: tuple[float, float] | None = None  # draw random inputs from here (else the model's range, else several)


@dataclass
class OnnxResult:
    onnx: Path
    reference: Path
    keras_version: str
    input_shape: tuple[int, ...]
    validation: PairResult  # onnxruntime against Keras on the check set
    float64_note: str = ""  # why there is no float64 rebuild; "" where there is
    inputs: str = ""  # a model of several inputs: each one's name and shape; "" for one (`input_shape`)
    other_lengths: list[int] = field(default_factory=list)  # where an open length is checked besides (`checkset.OTHER_LENGTHS`)


def check_inputs(model: KerasModel, options: OnnxOptions) -> None:
    """Fail early, in this process, on a `--inputs` file of the wrong shape (where the config states the
    shape). The TensorFlow process checks it again, before it writes anything, once it knows the shape — and
    alone checks a `.npz` of several inputs, once it knows them all."""
    if options.inputs is not None and model.input_shape is not None and options.inputs.suffix != ".npz":
        checkset.load_user_inputs(options.inputs, model.input_shape)


def run(model: Path | KerasModel, out: Path, data: Path | None, options: OnnxOptions = OnnxOptions()) -> OnnxResult:
    """Convert `model` to `<out>/<stem>/model.onnx`, write Keras's reference outputs beside it, and check
    the ONNX file against them.

    Args:
        model: the Keras `.h5` / `.keras` file, or the `KerasModel` already read from it.
        out: the artifacts root.
        data: the CIFAR-10 folder (the test images join the check set for CIFAR-10-shaped models), or
            None for random inputs only (`cifar.resolve` tells which, for the folder a user gave).
        options: conversion options.

    Raises:
        BadInput: the model or data cannot be used.
        CheckFailed: ONNX Runtime disagrees with Keras beyond the output tolerance.
    """
    started = time.time()
    keras = model if isinstance(model, KerasModel) else KerasModel.open(model, options.allow_unsafe_code)
    keras.check_weights()  # before Keras: NaN weights convert, and then verify as "max |Δ| nan"
    paths = ModelPaths.for_model(keras.path, out)
    # A model that no longer rebuilds must not keep an old proof, nor one without a known batch an old step.
    for stale in (paths.onnx_f64, paths.keras_layers_f64, paths.keras_training_step):
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as scratch, staged_files(paths.dir, [paths.onnx]) as folder:
        staged = ModelPaths(folder)  # every output is written here, and moved beside the others once all pass
        # Keras's training step for the native stage's parity, taken in this TensorFlow process where the
        # batch is known now (`training_batch`): the native stage then starts no TensorFlow of its own.
        batch = (training_batch.write_batch(Path(scratch) / "batch.npz", *training_batch.batch_for(keras, data, ())[:3])
                 if training_batch.known_in_advance(keras, data) else None)
        summary = keras_runtime.run(KerasJob(keras.path, allow_unsafe_code=options.allow_unsafe_code, data=data,
                                             inputs=options.inputs, onnx=staged.onnx, opset=options.opset,
                                             input_ranges=checkset.choose_ranges(keras.input_ranges, options.input_range),
                                             tokens=keras.packed_tokens(),
                                             reference=staged.keras_reference, layers=staged.keras_layers,
                                             onnx_f64=staged.onnx_f64, reference_f64=staged.keras_reference_f64,
                                             layers_f64=staged.keras_layers_f64,
                                             training_batch=batch, training=staged.keras_training_step if batch else None,
                                             training_ahead=True))
        reference = KerasReference(staged.keras_reference)
        noise = precision.measure_stored(reference, staged.keras_reference_f64)
        validation = validate(staged.onnx, reference, keras.classifier, noise)
    written = [path for path in (paths.onnx, paths.keras_reference, paths.keras_layers, paths.onnx_f64, paths.keras_reference_f64,
                                 paths.keras_layers_f64, paths.keras_training_step) if path.is_file()]
    manifest.record(paths.dir, "onnx", keras.path, written, started,
                    data_file=cifar.locate(data) if data is not None else None, opset=options.opset, keras_loader=summary.keras_version)
    other_lengths = sorted({checkset.length_of(name) for name in summary.reference_sets if checkset.is_length_set(name)})
    return OnnxResult(paths.onnx, paths.keras_reference, summary.keras_version, summary.input_shape, validation, summary.float64, summary.inputs,
                      other_lengths)


def validate(onnx_path: Path, reference: KerasReference, classifier: bool, noise: Float32Noise | None = None) -> PairResult:
    """ONNX Runtime against the Keras reference on the check sets stored with their inputs (the random
    batches, and the user's `--inputs`), within the model's own float32 `noise` where it was measured.

    Raises:
        CheckFailed: beyond the output tolerance, or an argmax differs (classifiers).
    """
    sets = {name: reference.inputs(name) for name in reference.set_names() if reference.inputs(name) is not None}
    predict = backends.load("onnxruntime", backends.Sources(backends.Artifacts(onnx=onnx_path)))
    result = compare("onnxruntime", backends.run_sets(predict, sets), "keras", reference.outputs(), classifier, noise)
    return require(result, f"{onnx_path} disagrees with Keras")
