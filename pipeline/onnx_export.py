"""Stage 1: Keras .h5 → `model.onnx` (tf2onnx), plus Keras's reference outputs on the check set.

TensorFlow runs in its own process (`keras_worker`). Back here, the ONNX file is validated at once
against those Keras outputs under ONNX Runtime; a tolerance breach fails the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import backends, keras_graph, model_check
from pipeline.compare import PairResult, compare
from pipeline.errors import CheckFailed
from pipeline.keras_process import run_worker
from pipeline.paths import ModelPaths

# Tested by both tf2onnx 1.17 and onnx2torch 1.5 (their CI covers 14–16; ../shared/NOTES.md).
DEFAULT_OPSET = 15


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = DEFAULT_OPSET
    allow_unsafe_code: bool = False  # let Keras deserialize Lambda layers (runs code from the file)
    inputs: Path | None = None  # the user's own sample inputs (.npy), added to the check set


@dataclass
class OnnxResult:
    onnx: Path
    reference: Path
    keras_version: str
    input_shape: tuple[int, ...]
    validation: PairResult  # onnxruntime against Keras on the check set


def check_model_file(model: Path, allow_unsafe_code: bool = False) -> None:
    """Fail early, with what to do, if `model` is not a Keras model that is safe to load (`model_check`)."""
    model_check.check(model, allow_unsafe_code)


def run(model: Path, out: Path, data: Path | None, options: OnnxOptions = OnnxOptions()) -> OnnxResult:
    """Convert `model` to `<out>/<stem>/model.onnx` and write Keras's reference outputs beside it.

    Args:
        model: the Keras .h5 file.
        out: the artifacts root.
        data: the CIFAR-10 folder (the test images join the check set for 32×32×3 models), or None.
        options: conversion options.

    Raises:
        BadInput: the model or data cannot be used.
        CheckFailed: ONNX Runtime disagrees with Keras beyond `ATOL_PROB`.
    """
    check_model_file(model, options.allow_unsafe_code)
    paths = ModelPaths.for_model(model, out)
    summary = run_worker(model, onnx=paths.onnx, opset=options.opset, reference=paths.keras_reference,
                         layers=paths.keras_layers, data=data, allow_unsafe_code=options.allow_unsafe_code,
                         inputs=options.inputs)
    classifier = keras_graph.is_classifier(keras_graph.layers(keras_graph.read_model_config(model)))
    validation = validate(paths.onnx, paths.keras_reference, classifier)
    return OnnxResult(paths.onnx, paths.keras_reference, summary["keras_version"], tuple(summary["input_shape"]), validation)


def validate(onnx_path: Path, reference_path: Path, classifier: bool) -> PairResult:
    """ONNX Runtime against the Keras reference on the check sets stored with their inputs (the random
    batches, and the user's `--inputs`); raise CheckFailed on a breach."""
    keras = backends.KerasReference(reference_path)
    sets = {name: keras.inputs(name) for name in keras.set_names() if keras.inputs(name) is not None}
    ort = backends.run_sets(backends.load("onnxruntime", backends.Artifacts(onnx=onnx_path)), sets)
    result = compare("onnxruntime", ort, "keras", keras.outputs(), classifier)
    if not result.passed:
        raise CheckFailed(
            f"{onnx_path} disagrees with Keras: max |Δ| {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g}), "
            f"{result.argmax_disagreements} argmax disagreements on {result.images} inputs"
        )
    return result
