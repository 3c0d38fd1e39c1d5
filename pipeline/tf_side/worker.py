"""Run one `KerasJob` (common.keras_job) in this, the TensorFlow process.

The model is checked with h5py before Keras sees it (this is the process that would run a Lambda's
code), loaded once, then the job's parts run in order: conversion, reference outputs, layer outputs,
timing, training step. Each part is named on stderr (`STEP_PREFIX`) before it starts, so a crash inside
TensorFlow, which cannot report, is still placed. Any failure ends in exit code 2 and one stderr line
prefixed `ERROR_PREFIX` (`REFUSAL_PREFIX` for our own refusal of the file) — but a training step asked for
ahead (`training_ahead`), which is left out instead.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path

# Keras 3 warns on every call that a legacy model's input is named; the warning says nothing useful.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

from pipeline.common.errors import BadInput  # noqa: E402
from pipeline.common.messages import library_error  # noqa: E402
from pipeline.common.keras_job import ERROR_PREFIX, REFUSAL_PREFIX, STEP_PREFIX, KerasJob, KerasJobResult  # noqa: E402
from pipeline.data import checkset  # noqa: E402
from pipeline.keras_file import safety  # noqa: E402
from pipeline.tf_side import float64, float64_resize, grouped_conv, outputs, timing, to_onnx, training  # noqa: E402
from pipeline.tf_side.loading import input_layout, keras_api, load_keras_model  # noqa: E402


def _tokens(job: KerasJob) -> dict[str, checkset.TokenIds]:
    return {name: checkset.TokenIds.unpack(packed) for name, packed in job.tokens.items()}


def run_job(job: KerasJob) -> KerasJobResult:
    """Do what `job` asks (see `KerasJob`); raise on the first failure."""
    if job.bench is not None:
        timing.set_threads(job.bench.threads)
    if not job.input_ranges:
        job = dataclasses.replace(job, input_ranges=checkset.DEFAULT_RANGES)
    safety.check(job.model, job.allow_unsafe_code)  # again here: this process is the one that would run the code
    _starting("loading the Keras model")
    model = load_keras_model(job.model, job.allow_unsafe_code)
    api, layout = keras_api(model), input_layout(model)
    result = KerasJobResult(keras_version=f"{api.__name__} {api.__version__}", input_shape=layout.shapes[0],
                            inputs=layout.describe() if layout.several else "")
    # Checked before anything is written: a wrong file must not leave a new model.onnx behind.
    user_inputs = checkset.load_user_inputs(job.inputs, layout) if job.inputs else None
    if job.onnx:
        _starting("the conversion to ONNX (tf2onnx)")
        result.onnx_rewrites = to_onnx.convert(model, job.onnx, job.opset)
    if job.reference:
        _starting("Keras's outputs on the check set")
        result.reference_sets = outputs.reference(model, job.model, job.reference, job.data, user_inputs, job.input_ranges, _tokens(job))
    if job.layers:
        _starting("Keras's every layer output")
        result.layers = outputs.layer_outputs(model, job.model, job.layers, job.data, job.input_ranges, _tokens(job))
    if job.onnx_f64 or job.reference_f64 or job.layers_f64:
        _starting("the float64 rebuild of the model")
        result.float64 = _float64_parts(model, job, user_inputs)
    if job.bench is not None:
        _starting("timing Keras")
        result.bench = timing.bench(model, job.data, job.bench)
    if job.training is not None:
        _starting("the Keras training step for training parity" + (" (retried eagerly)" if job.training_safe else ""))
        try:
            with grouped_conv.without_xla(api, tracing=False):
                training.step(model, job.model, job.training_batch, job.training, safe=job.training_safe)
        except Exception:
            if not job.training_ahead:
                raise
            # Taken ahead (the onnx stage's job, for the native stage): its failure must not fail the
            # conversion. No step is stored; the native stage takes it itself and reports what fails.
    return result


def _starting(part: str) -> None:
    """Name the part of the job about to run, for the launcher to place a crash (`STEP_PREFIX`)."""
    print(f"{STEP_PREFIX}{part}", file=sys.stderr, flush=True)


def _float64_parts(model, job: KerasJob, user_inputs) -> str:
    """The float64 rebuild's conversion and outputs; "" when done, else why the rebuild is missing
    (the float64 proof is then left out, not failed: the float32 checks still run)."""
    try:
        twin = float64.rebuild(model)
        if job.onnx_f64:
            try:
                to_onnx.convert(twin, job.onnx_f64, job.opset, dtype=float64.FLOAT64)
            except Exception as exc:  # noqa: BLE001 — tf2onnx or the checker refused the float64 graph
                raise ValueError(f"the float64 rebuild does not convert ({float64.unconverted_layer(twin, exc)})") from exc
    except ValueError as exc:
        if job.reference_f64:
            outputs.unavailable(job.reference_f64, job.model, job.data, str(exc))
        return str(exc)
    try:
        # XLA's float64 grouped convolution is slow beyond use; TensorFlow's bilinear resize computes in float32
        with grouped_conv.without_xla(keras_api(twin)), float64_resize.exact():
            if job.reference_f64:
                outputs.reference(twin, job.model, job.reference_f64, job.data, user_inputs, job.input_ranges, _tokens(job))
            if job.layers_f64:
                outputs.layer_outputs(twin, job.model, job.layers_f64, job.data, job.input_ranges, _tokens(job))
    except Exception as exc:  # noqa: BLE001 — an op with no float64 kernel on this machine (AvgPool3D): no proof, said why
        reason = f"the float64 rebuild does not run ({float64.unconverted_layer(twin, exc)})"
        for made in (job.onnx_f64, job.layers_f64):
            if made:
                Path(made).unlink(missing_ok=True)
        if job.reference_f64:
            outputs.unavailable(job.reference_f64, job.model, job.data, reason)
        return reason
    return ""


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.tf_side JOB.json RESULT.json`: run the job, write the result; 0 or 2."""
    job_path, result_path = (Path(arg) for arg in (sys.argv[1:] if argv is None else argv))
    try:
        result = run_job(KerasJob.from_json(job_path.read_text()))
    except Exception as exc:  # noqa: BLE001 — one line for the parent process, whatever failed
        if isinstance(exc, BadInput):  # our own message stands alone
            print(f"{REFUSAL_PREFIX}{' '.join(str(exc).split())[:2000]}", file=sys.stderr)
        else:
            print(f"{ERROR_PREFIX}{library_error(exc)[:2000]}", file=sys.stderr)
        if os.environ.get("PIPELINE_DEBUG"):
            raise
        return 2
    result.write(result_path)
    return 0
