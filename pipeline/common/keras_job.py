"""The contract between the torch side and the TensorFlow process: what a job asks, how a failure is
reported, what the result file holds. Imports neither TensorFlow nor torch: both sides read it.

The torch side (`runtimes.keras`) writes a `KerasJob` as JSON and starts `python -m pipeline.tf_side
JOB RESULT`; the TensorFlow process (`tf_side.worker`) runs it and writes the result as JSON, or exits
with code 2 after one stderr line starting with `ERROR_PREFIX`. Nothing else crosses the boundary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# Tested by both tf2onnx 1.17 and onnx2torch 1.5 (their CI covers 14–16; ../shared/NOTES.md).
DEFAULT_OPSET = 15
# The module the launcher runs: `python -m pipeline.tf_side`; and the zoo's builder, `make zoo`'s.
WORKER_MODULE = "pipeline.tf_side"
ZOO_BUILDER_MODULE = f"{WORKER_MODULE}.zoo_build"
TRAINED_BUILDER_MODULE = f"{WORKER_MODULE}.trained_build"
BARE_TOOLS_MODULE = f"{WORKER_MODULE}.bare"  # the bare tools, the floor `stages.floor` measures the pipeline against
BARE_ONNX, BARE_IO = "bare.onnx", "bare_io.npz"  # what it writes: their ONNX file; the inputs and Keras's outputs on them
# The file each Keras writes the trained members as: tf-keras (the Keras 2 API users' files come from) the
# legacy .h5, Keras 3 its own .keras (`tf_side.trained_build`, `stages.zoo`).
TRAINED_FLAVOURS = {"keras2": ".h5", "keras3": ".keras"}
# A worker's one-line error on stderr starts with this; the launcher turns it into BadInput. A library's
# error (ERROR_PREFIX) is said to be Keras/TensorFlow's; our own refusal of the file (REFUSAL_PREFIX, a
# BadInput raised in the worker) is already a sentence for the user and stands alone.
ERROR_PREFIX = "pipeline-error: "
REFUSAL_PREFIX = "pipeline-refusal: "
# The worker names each part of its job on stderr, on a line starting with this, before it starts it: a
# crash inside TensorFlow cannot report, so the launcher says where it happened by the last such line.
STEP_PREFIX = "pipeline-step: "
# Test hook: set in the environment, the training step's process kills itself with SIGSEGV, as TensorFlow
# does on some trained Keras 2 files — "first" in the first try only, "always" in the safe retry too.
CRASH_TRAINING_FOR_TESTS = "PIPELINE_TEST_CRASH_TRAINING"
# Longest a TensorFlow process may run before it is killed: never a hang, whatever a file makes Keras
# do. The longest job measured here (convert and reference a Keras Applications model at 96 px) takes
# about a minute; `PIPELINE_WORKER_TIMEOUT` (seconds) overrides it.
WORKER_TIMEOUT_S = 1800
# The environment variable naming a Python file of the user's custom layer classes (and functions), for
# Keras to build a model that uses them (`tf_side.loading.user_custom_objects`; README "Custom layers").
CUSTOM_OBJECTS_ENV = "PIPELINE_CUSTOM_OBJECTS"
# Most resident memory a TensorFlow process may take, as a share of the machine's: a config that makes
# Keras allocate without end (or a model too large for the machine) ends in one line instead of the
# kernel's out-of-memory killer, which takes other processes with it. Resident, not reserved: TensorFlow
# reserves far more than it touches (`runtimes.keras._run_watched`, docs/memory.md). `PIPELINE_WORKER_MEMORY_GB`
# overrides it.
WORKER_MEMORY_SHARE = 0.9


# What a stored training step was taken on (`training` below): the batch, and the model's SHA-256.
STEP_BATCH_KEYS = ("batch/inputs", "batch/labels", "batch/loss")
STEP_MODEL_KEY = "model_sha256"


@dataclass(frozen=True)
class KerasBench:
    """Time Keras `predict` on the first `images` test images (or the arrays in `inputs`, an .npy) at each
    batch size, best of `repeats`."""

    sizes: tuple[int, ...]
    images: int
    repeats: int
    threads: int
    inputs: Path | None = None  # the model's own inputs where they are not CIFAR-10 images (`stages.bench.bench_inputs`)


@dataclass(frozen=True)
class KerasJob:
    """One run of the TensorFlow process. Every output path is optional: the job does what is set.

    The model is always loaded (after the h5py safety check); then, in this order: conversion to
    `onnx`, Keras's outputs on the check set into `reference`, every layer's output into `layers`,
    the same three for the float64 rebuild, the `bench` timing, and the `training` step (last: it
    changes the loaded model's weights).
    """

    model: Path
    allow_unsafe_code: bool = False  # let Keras deserialize Lambda layers (runs code from the file)
    data: Path | None = None  # the CIFAR-10 folder: test images join the check set of 32×32×3 models
    inputs: Path | None = None  # the user's own sample inputs (.npy), added to the check set
    input_ranges: tuple[tuple[float, float], ...] = ()  # random inputs are drawn from these; () for `checkset.DEFAULT_RANGES`
    # The inputs that are token ids: {input name: (vocabulary, mask_zero) of `checkset.TokenIds`}
    tokens: dict[str, tuple[int, bool]] = field(default_factory=dict)
    onnx: Path | None = None  # convert with tf2onnx and write the ONNX file here
    opset: int = DEFAULT_OPSET
    reference: Path | None = None  # Keras's outputs on the check set (.npz)
    layers: Path | None = None  # every layer's output on the layer check set (.npz)
    # The same three for the model rebuilt in float64 (`tf_side.float64`); skipped, with the reason in
    # the result, where the model cannot be rebuilt so.
    onnx_f64: Path | None = None
    reference_f64: Path | None = None
    layers_f64: Path | None = None
    bench: KerasBench | None = None
    # One training step on the batch in `training_batch` (.npz: inputs, labels, loss), its gradients,
    # BatchNorm statistics and optimizer steps written to `training` (`tf_side.training`), with what it
    # was taken on under STEP_BATCH_KEYS and STEP_MODEL_KEY.
    training_batch: Path | None = None
    training: Path | None = None
    training_ahead: bool = False  # taken ahead for a later stage: a failure leaves the step out instead of failing the job
    # The retry after the step crashed the process: every function run eagerly and no XLA in the optimizers
    # (`tf_side.training`) — TensorFlow's plainest way to take the step.
    training_safe: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> KerasJob:
        raw = json.loads(text)
        paths = {f.name for f in fields(cls) if "Path" in str(f.type)}
        values = {key: (Path(value) if key in paths and value is not None else value) for key, value in raw.items()}
        values["input_ranges"] = tuple(tuple(pair) for pair in values.get("input_ranges", ()))
        values["tokens"] = {name: tuple(packed) for name, packed in (values.get("tokens") or {}).items()}
        if values.get("bench") is not None:
            inputs = values["bench"].get("inputs")
            values["bench"] = KerasBench(**{**values["bench"], "sizes": tuple(values["bench"]["sizes"]),
                                            "inputs": Path(inputs) if inputs else None})
        return cls(**values)


@dataclass
class KerasJobResult:
    """What the worker reports back (JSON): the loader it used, the input shape, and per-job facts."""

    keras_version: str  # "keras 3.15.1" or "tf_keras 2.21.0" (the Keras 2 fallback)
    input_shape: tuple[int, ...]  # the first input's, of a model of several
    inputs: str = ""  # a model of several inputs: each one's name and shape (`feeds.Layout.describe`); "" for one
    onnx_rewrites: dict[str, int] = field(default_factory=dict)  # rewrites applied to the ONNX graph, by kind
    reference_sets: list[str] = field(default_factory=list)  # check sets in the reference file
    layers: list[str] = field(default_factory=list)  # layers in the layer-output file
    bench: dict[str, float] = field(default_factory=dict)  # {batch size: images/s}
    float64: str = ""  # why the float64 rebuild is missing, where it was asked for and is; "" otherwise

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> KerasJobResult:
        raw = json.loads(Path(path).read_text())
        return cls(**{**raw, "input_shape": tuple(raw["input_shape"])})
