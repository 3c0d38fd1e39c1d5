"""Training parity: one training step of the native PyTorch model against the same step in Keras.

The torch side picks the batch (real test images with their labels where the model takes CIFAR-10
images, else seeded inputs in the model's range with seeded labels or targets), Keras runs the step in
its own process (`tf_side.training`), and the native model runs it here in training mode with every
dropout at 0, in float32 — and in float64 on both sides, which measures each float32 step's own
rounding (Keras's float64 step is its float64 rebuild's, `tf_side.training`). Compared,
each as a relative L2 error (`TRAIN_RTOL`): every trainable weight's gradient, the BatchNorm moving
statistics after the forward pass, and every weight after one SGD step and after one Adam step (Keras's
defaults mapped to torch's: `torch_adam_epsilon`), measured on the update (after − before).

TensorFlow crashes in that step on some trained Keras 2 files (SIGSEGV, or SIGABRT on a corrupted heap).
A crash is a finding, not the end: the step is taken once more the safe way (`SAFE_BATCH` samples, run
eagerly, in a fresh process) and, where that crashes too, parity is skipped with the reason (`ParityReport.skipped`).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.common.atomic import write_text
from pipeline.common.errors import CheckFailed, WorkerCrashed
from pipeline.common.keras_job import KerasJob
from pipeline.common.tolerances import TRAIN_NOISE_FACTOR, TRAIN_RTOL
from pipeline.keras_file.model import KerasModel
from pipeline.native import load
from pipeline.native.layers.registry import WeightRule
from pipeline.verifier.training_batch import batch_for_several, batch_for, read_step, stored_step, write_batch

ADAM_BETAS = (0.9, 0.999)  # Keras's and torch's defaults alike
STORED_STEP = "taken by the onnx stage's TensorFlow process, stored with the batch"
OWN_STEP = "taken in a TensorFlow process of its own"
NOISE_GRADIENT = "gradient below its own float32 rounding (zero in exact arithmetic): the step on it is not compared"
# The retry's batch after Keras's step crashed its process: as small as can be, but two samples — torch's
# BatchNorm refuses to train on one sample of a rank-2 input (no batch variance).
SAFE_BATCH = 2
SAFE_STEP = "taken again, eagerly on {batch} samples in a fresh TensorFlow process, after the first try crashed ({signal})"


def torch_adam_epsilon(keras_epsilon: float, step: int = 1, beta2: float = ADAM_BETAS[1]) -> float:
    """Keras adds epsilon to √v, torch to √v̂ = √v / √(1 − β₂ᵗ): the torch epsilon that takes step `step`
    exactly as Keras's (1e-7 → 3.2e-6 at the first step; torch's default 1e-8 is another optimizer)."""
    return keras_epsilon / math.sqrt(1.0 - beta2**step)


@dataclass
class ParityRow:
    weight: str  # the Keras weight, `layer/weight`
    kind: str  # "gradient", "moving statistic", "after SGD", "after Adam"
    rel_l2: float  # ‖torch − Keras‖ / max(‖Keras‖, floor); for optimizer steps, of the update
    norm: float  # ‖Keras‖ (the gradient, the statistic, or the update)
    passed: bool
    note: str = ""
    rounding: float = 0.0  # the float32 steps' own error on it (‖float32 − float64‖, the larger side's)

    @property
    def widened(self) -> bool:
        """Judged against its rounding rather than its norm (`TRAIN_NOISE_FACTOR`)."""
        return TRAIN_NOISE_FACTOR * self.rounding / TRAIN_RTOL > self.norm


@dataclass
class ParityReport:
    batch: int
    inputs: str  # where the batch came from
    loss: str
    loss_keras: float
    loss_torch: float
    rows: list[ParityRow] = field(default_factory=list)
    keras_step: str = ""  # where Keras's step came from: STORED_STEP, OWN_STEP or SAFE_STEP
    rtol: float = TRAIN_RTOL
    skipped: str = ""  # why nothing was compared (Keras's step crashed TensorFlow twice); "" where compared

    @property
    def passed(self) -> bool:
        """Every check within its bound; False where parity was skipped (nothing shown)."""
        return not self.skipped and all(row.passed for row in self.rows)

    @property
    def worst(self) -> dict[str, float]:
        """The largest relative error of each kind."""
        worst: dict[str, float] = {}
        for row in self.rows:
            worst[row.kind] = max(worst.get(row.kind, 0.0), row.rel_l2)
        return worst

    def as_dict(self) -> dict:
        if self.skipped:  # `passed` null: neither passed nor failed
            return {"passed": None, "skipped": self.skipped, "rtol": self.rtol, "batch": self.batch, "inputs": self.inputs, "loss": self.loss}
        return {"passed": self.passed, "rtol": self.rtol, "noise_factor": TRAIN_NOISE_FACTOR, "batch": self.batch, "inputs": self.inputs,
                "loss": self.loss, "loss_keras": self.loss_keras, "loss_torch": self.loss_torch, "keras_step": self.keras_step, "worst": self.worst,
                "widened": sum(row.widened for row in self.rows), "rows": [asdict(row) | {"widened": row.widened} for row in self.rows]}

    def raise_if_failed(self) -> None:
        failing = [row for row in self.rows if not row.passed]
        if failing:
            first = failing[0]
            raise CheckFailed(f"training parity failed at {first.weight} ({first.kind}): relative error {first.rel_l2:.3g} > {self.rtol:g}"
                              f"; {len(failing)} of {len(self.rows)} checks fail")


def keras_step(keras: KerasModel, inputs: np.ndarray, labels: np.ndarray, loss: str, safe: bool = False) -> dict[str, np.ndarray]:
    """Keras's training step on the batch, run in the TensorFlow process (`tf_side.training`); `safe`: the
    retry after a crash (eagerly, no XLA: `KerasJob.training_safe`).

    Raises:
        WorkerCrashed: TensorFlow crashed in the step.
    """
    from pipeline.runtimes import keras as keras_runtime

    with tempfile.TemporaryDirectory() as scratch:
        batch, result = write_batch(Path(scratch) / "batch.npz", inputs, labels, loss), Path(scratch) / "step.npz"
        keras_runtime.run(KerasJob(model=keras.path, training_batch=batch, training=result, training_safe=safe))
        return read_step(result)[0]


def _keras_step_or_retry(keras: KerasModel, inputs: np.ndarray, labels: np.ndarray, loss: str
                         ) -> tuple[dict[str, np.ndarray] | None, np.ndarray, np.ndarray, str]:
    """(Keras's step, the inputs and labels it was taken on, where it came from) — taken again the safe way on
    the first `SAFE_BATCH` samples where the first try crashed; (None, ..., why) where the retry crashed too."""
    try:
        return keras_step(keras, inputs, labels, loss), inputs, labels, OWN_STEP
    except WorkerCrashed as first:
        inputs, labels = (_first_rows(value, SAFE_BATCH) for value in (inputs, labels))
        try:
            return keras_step(keras, inputs, labels, loss, safe=True), inputs, labels, SAFE_STEP.format(batch=_rows(inputs), signal=first.signal)
        except WorkerCrashed as again:
            return None, inputs, labels, (f"{first}; retried eagerly on {_rows(inputs)} samples in a fresh process, "
                                          f"it crashed again ({again.signal})")


def _first_rows(value, n: int):
    """The first `n` samples of an array, or of each of a list of arrays (several inputs or outputs)."""
    return [array[:n] for array in value] if isinstance(value, list) else value[:n]


def _rows(value) -> int:
    """The number of samples of an array, or of a list of arrays."""
    return len(value[0]) if isinstance(value, list) else len(value)


def _named(loss) -> str:
    """A loss name, or several outputs' summed: `a + b`."""
    return " + ".join(loss) if isinstance(loss, list) else loss


def _entry(weights_map: dict[str, dict], name: str) -> dict | None:
    """`name`'s entry, also under the other name Keras versions give a depthwise kernel."""
    layer, weight = name.rsplit("/", 1)
    for candidate in (weight, {"kernel": "depthwise_kernel", "depthwise_kernel": "kernel"}.get(weight)):
        if candidate and f"{layer}/{candidate}" in weights_map:
            return weights_map[f"{layer}/{candidate}"]
    return None


def _as_torch(array: np.ndarray, entry: dict) -> np.ndarray:
    """A Keras array in its state_dict tensor's layout, by its `weights_map.json` entry (the tensors of its
    keys stacked, for a weight torch keeps as several: see `_torch_value`)."""
    return WeightRule.from_map(entry).apply(array)


def _torch_value(values: dict[str, np.ndarray], entry: dict) -> np.ndarray | None:
    """The torch tensor(s) of `entry`'s key(s) in `values` (stacked, as `_as_torch` lays the Keras array out);
    None where one is missing (not trained)."""
    keys = _keys(entry)
    if any(key not in values for key in keys):
        return None
    return np.stack([values[key] for key in keys]) if isinstance(entry["key"], list) else values[keys[0]]


def _keys(entry: dict) -> list[str]:
    """The state_dict key(s) of a `weights_map.json` entry: one, or a list for a weight torch keeps as several."""
    return entry["key"] if isinstance(entry["key"], list) else [entry["key"]]


def _row(weight: str, kind: str, torch_value: np.ndarray, keras_value: np.ndarray, rounding: float) -> ParityRow:
    """`torch_value` against `keras_value` (float32 both) as a relative L2 error, the denominator floored
    at the float32 steps' own `rounding` (the larger of torch's and Keras's error against their float64
    steps) — see `TRAIN_NOISE_FACTOR`."""
    norm = float(np.linalg.norm(keras_value.astype(np.float64)))
    error = float(np.linalg.norm(torch_value - keras_value))
    floor = TRAIN_NOISE_FACTOR * rounding / TRAIN_RTOL
    rel = float(error / max(norm, floor, np.finfo(np.float64).tiny))
    return ParityRow(weight, kind, rel, norm, bool(rel <= TRAIN_RTOL), rounding=rounding)


@dataclass
class TorchStep:
    """The step in torch, by state_dict key: gradients, statistics after the forward pass, weights
    after SGD and after Adam (float64 arrays), and the loss."""

    gradients: dict[str, np.ndarray]
    statistics: dict[str, np.ndarray]
    sgd: dict[str, np.ndarray]
    adam: dict[str, np.ndarray]
    loss: float


def _loss(outputs, local: dict, logits: str | None, labels, loss: str):
    """One output's loss, as Keras computes it (see `torch_step`)."""
    import torch
    import torch.nn.functional as F

    if loss == "sparse_categorical_crossentropy" and logits is not None:
        # Keras takes the logits behind a softmax output (the `_keras_logits` it attaches), not the
        # probabilities: no clipping, so a true class of probability < 1e-7 still has its gradient
        return F.cross_entropy(local[logits], torch.from_numpy(labels))
    if loss == "sparse_categorical_crossentropy":
        # probabilities alone: Keras clips them to [1e-7, 1 − 1e-7], then −log p[label], over the batch
        picked = outputs.clamp(1e-7, 1 - 1e-7).gather(1, torch.from_numpy(labels).view(-1, 1))
        return -torch.log(picked).mean()
    return F.mse_loss(outputs, torch.from_numpy(labels))


def torch_step(model, logits, inputs, labels, loss, keras_epsilon: float,
               learning_rates: dict[str, float], float64: bool = False) -> TorchStep:
    """The same step as Keras's in torch, on a copy of `model` (in float64 with `float64`: the measure
    of the float32 step's own rounding). `logits`: the variable of `forward` holding the pre-softmax
    logits (the generated source's `LOGITS`), where the model ends in a softmax. `inputs`, `labels`,
    `loss`: one array, array and loss name, or lists of them for a model of several inputs or outputs
    (`LOGITS` then a list too), whose outputs' losses are summed, as Keras sums them."""
    import copy

    import torch

    model = copy.deepcopy(model).train()
    inputs, labels, losses = (value if isinstance(value, list) else [value] for value in (inputs, labels, loss))
    logits = logits if isinstance(logits, list) else [logits]
    if float64:
        model = model.double()
        inputs = [value.astype(np.float64) for value in inputs]
        labels = [target if kind == "sparse_categorical_crossentropy" else target.astype(np.float64)
                  for target, kind in zip(labels, losses, strict=True)]
    for module in model.modules():
        if hasattr(module, "p") and "Dropout" in type(module).__name__:
            module.p = 0.0
    start = {key: value.detach().clone() for key, value in model.state_dict().items()}
    outputs, local = load.run_with_locals(model, *(torch.from_numpy(value) for value in inputs))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    value = sum(_loss(output, local, name, target, kind) for output, name, target, kind in zip(outputs, logits, labels, losses, strict=True))
    value.backward()
    named = dict(model.named_parameters())
    gradients = {key: p.grad.detach().numpy().astype(np.float64) for key, p in named.items() if p.grad is not None}
    statistics = {key: v.detach().numpy().astype(np.float64) for key, v in model.state_dict().items() if "running_" in key}
    after = {}
    for kind, make in (("sgd", lambda ps: torch.optim.SGD(ps, lr=learning_rates["sgd"])),
                       ("adam", lambda ps: torch.optim.Adam(ps, lr=learning_rates["adam"], betas=ADAM_BETAS,
                                                            eps=torch_adam_epsilon(keras_epsilon)))):
        with torch.no_grad():
            for key, p in named.items():
                p.copy_(start[key])
        optimizer = make([p for p in named.values() if p.grad is not None])
        optimizer.step()
        after[kind] = {key: p.detach().numpy().astype(np.float64) for key, p in named.items()}
    return TorchStep(gradients, statistics, after["sgd"], after["adam"], float(value.detach()))


def run(keras: KerasModel, model, source, weights_map: dict[str, dict], data: Path | None, out: Path,
        stored: Path | None = None) -> ParityReport:
    """Training parity of the native `model` (with its `source` module and the `weights_map` it was
    written with, `native.load`) with `keras`; written to `out` (parity.json). Keras's step is the one
    the onnx stage stored at `stored`, where it was taken on this model and batch
    (`training_batch.stored_step`), else `keras_step`'s — taken again the safe way where TensorFlow crashed
    in it, and skipped with the reason where it crashed again. The caller decides whether a failure raises."""
    import torch

    several = len(keras.inputs) > 1 or isinstance(source.LOGITS, list)
    with torch.inference_mode():
        shapes = [shape for _, shape in keras.inputs] if several else ([keras.input_shape] if keras.input_shape else [])
        outputs = model.eval()(*(torch.zeros((1, *shape)) for shape in shapes)) if shapes else None
    outputs = () if outputs is None else (outputs if isinstance(outputs, tuple) else (outputs,))
    if several:
        inputs, labels, loss, origin = batch_for_several(keras, [tuple(o.shape[1:]) for o in outputs], keras.output_classifiers)
        found = None  # the onnx stage stores a step of one input and output only
    else:
        inputs, labels, loss, origin = batch_for(keras, data, tuple(outputs[0].shape[1:]) if outputs else ())
        found = stored_step(stored, keras, inputs, labels, loss) if stored is not None else None
    if found is not None:
        reference, taken = found, STORED_STEP
    else:
        reference, inputs, labels, taken = _keras_step_or_retry(keras, inputs, labels, loss)
    if reference is None:
        report = ParityReport(_rows(inputs), origin, _named(loss), math.nan, math.nan, skipped=taken)
        write_text(out, json.dumps(report.as_dict(), indent=2) + "\n")
        return report
    epsilon = float(reference["adam_epsilon"])
    rates = {key.split("/", 1)[1]: float(value) for key, value in reference.items() if key.startswith("learning_rate/")}
    step = torch_step(model, source.LOGITS, inputs, labels, loss, epsilon, rates)
    exact = torch_step(model, source.LOGITS, inputs, labels, loss, epsilon, rates, float64=True)
    report = ParityReport(_rows(inputs), origin, _named(loss), float(reference["loss"]), step.loss, keras_step=taken)
    starts = {key: value.detach().numpy().astype(np.float64) for key, value in model.state_dict().items()}
    keras64 = "f64/loss" in reference  # Keras's own float64 step, where the model rebuilds in float64

    def rounding(ours: np.ndarray, ours64: np.ndarray, key: str, entry: dict, start: np.ndarray | int = 0) -> float:
        """The float32 steps' own error on this tensor: torch's against its float64 step, and Keras's."""
        torch_error = float(np.linalg.norm(ours - ours64))
        if not keras64:
            return torch_error
        keras_value = _as_torch(reference[key], entry).astype(np.float64) - start
        return max(torch_error, float(np.linalg.norm(keras_value - (_as_torch(reference[f"f64/{key}"], entry) - start))))

    for name in sorted(key[len("grad/"):] for key in reference if key.startswith("grad/")):
        entry = _entry(weights_map, name)
        gradient = None if entry is None else _torch_value(step.gradients, entry)
        if gradient is None:
            raise CheckFailed(f"training parity: Keras trains {name}, which the native model does not (no state_dict key)")
        start, exact_gradient = _torch_value(starts, entry), _torch_value(exact.gradients, entry)
        noise = rounding(gradient, exact_gradient, f"grad/{name}", entry)
        report.rows.append(_row(name, "gradient", gradient, _as_torch(reference[f"grad/{name}"], entry), noise))
        if float(np.linalg.norm(exact_gradient)) < TRAIN_NOISE_FACTOR * noise:
            # zero in exact arithmetic: each framework steps along its own rounding noise (Adam, by its sign)
            report.rows.extend(ParityRow(name, label, 0.0, 0.0, True, NOISE_GRADIENT) for label in ("after SGD", "after Adam"))
            continue
        for kind, label in (("sgd", "after SGD"), ("adam", "after Adam")):  # compared as updates: after − before
            keras_update = _as_torch(reference[f"{kind}/{name}"], entry).astype(np.float64) - start
            ours, ours64 = _torch_value(getattr(step, kind), entry) - start, _torch_value(getattr(exact, kind), entry) - start
            report.rows.append(_row(name, label, ours, keras_update, rounding(ours, ours64, f"{kind}/{name}", entry, start)))
    trained_by_keras = {key for name in reference if name.startswith("grad/") and (entry := _entry(weights_map, name[len("grad/"):]))
                        for key in _keys(entry)}
    extra = sorted(set(step.gradients) - trained_by_keras)
    if extra:  # a frozen layer (trainable=False) the native model would train
        raise CheckFailed(f"training parity: the native model trains {extra[0]}, which Keras keeps frozen")
    for key, value in reference.items():
        if key.startswith("moving/"):
            name = key[len("moving/"):]
            entry = _entry(weights_map, name)
            ours = None if entry is None else _torch_value(step.statistics, entry)
            if ours is None:
                raise CheckFailed(f"training parity: {name} has no statistic in the native model")
            report.rows.append(_row(name, "moving statistic", ours, value, rounding(ours, _torch_value(exact.statistics, entry), key, entry)))
    write_text(out, json.dumps(report.as_dict(), indent=2) + "\n")
    return report

