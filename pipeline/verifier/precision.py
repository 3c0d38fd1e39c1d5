"""What float32 rounding alone does to this model, measured against its float64 rebuild — so a float32
artifact is judged against the model's own noise, not a constant that happened to fit ResNet8 — and
whether a check set's outputs can show anything at all (saturated or collapsed outputs cannot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.verifier.backends import Outputs
from pipeline.verifier.keras_reference import KerasReference


@dataclass
class Float32Noise:
    """Keras float32's own largest error against Keras float64, over the pooled check set."""

    outputs: float  # max |Keras float32 − Keras float64| of the outputs (probabilities for a classifier)
    logits: float | None  # the same for the pre-softmax logits, where Keras has them
    margins: dict[str, np.ndarray] = field(default_factory=dict)  # per check set: float64 top-1 − top-2, per sample
    by_output: dict[str, float] = field(default_factory=dict)  # a model of several outputs: `outputs`, of each


def _pooled(outputs: dict[str, Outputs], names: list[str], logits: bool = False) -> np.ndarray:
    return np.concatenate([(outputs[n].logits if logits else outputs[n].probs).astype(np.float64).reshape(len(outputs[n].probs), -1)
                           for n in names])


def measure(keras32: dict[str, Outputs], keras64: dict[str, Outputs]) -> Float32Noise:
    """Keras float32's error against its float64 rebuild, pooled over the check sets both hold."""
    names = sorted(set(keras32) & set(keras64))
    p32, p64 = _pooled(keras32, names), _pooled(keras64, names)
    with_logits = all(keras32[n].logits is not None and keras64[n].logits is not None for n in names)
    logits = float(np.abs(_pooled(keras32, names, True) - _pooled(keras64, names, True)).max()) if with_logits else None
    margins = {}
    for name in names:
        top = np.sort(keras64[name].probs.astype(np.float64).reshape(len(keras64[name].probs), -1), axis=1)
        margins[name] = top[:, -1] - top[:, -2] if top.shape[1] > 1 else np.full(len(top), np.inf)
    error = np.abs(p32 - p64)
    layout = keras32[names[0]].layout
    by_output = {output: float(error[:, columns].max()) for output, columns in layout.parts()} if layout is not None and layout.several else {}
    return Float32Noise(float(error.max()), logits, margins, by_output)


def measure_stored(reference: KerasReference, reference_f64: Path) -> Float32Noise | None:
    """`measure` of the float32 reference against the float64 one stored at `reference_f64`; None where
    that file is missing or says the model could not be rebuilt in float64."""
    if not Path(reference_f64).is_file():
        return None
    stored_f64 = KerasReference(reference_f64)
    return None if stored_f64.unavailable else measure(reference.outputs(), stored_f64.outputs())


def ratio(backend: dict[str, Outputs], keras64: dict[str, Outputs], noise: Float32Noise) -> float:
    """A float32 backend's largest error against Keras float64, in units of Keras float32's own (pooled)."""
    names = sorted(set(backend) & set(keras64))
    error = float(np.abs(_pooled(backend, names) - _pooled(keras64, names)).max())
    return error / noise.outputs if noise.outputs > 0 else (0.0 if error == 0 else float("inf"))


# A top probability of 1 − 2⁻²⁴ (the largest float32 below 1) is 1 rounded otherwise: TensorFlow's softmax
# gives a one-hot sample exactly 1.0 at batch 7 and 0.99999994 at batch 256 on the same processor (AMD EPYC,
# no AVX-512; measured on tests/test_precision.py's saturated model, every other class exactly 0).
SATURATED_TOP = float(np.float32(1) - np.finfo(np.float32).epsneg)


def saturation(outputs: dict[str, Outputs], classifier: bool) -> dict[str, dict]:
    """Per check set: how many samples' outputs are saturated (top probability 1 to float32 resolution,
    `SATURATED_TOP`) or collapsed (all outputs equal) — samples on which a comparison of probabilities
    proves nothing."""
    found = {}
    for name, out in sorted(outputs.items()):
        values = out.probs.reshape(len(out.probs), -1)
        saturated = int((values.max(axis=1) >= SATURATED_TOP).sum()) if classifier else 0
        collapsed = int((values.max(axis=1) == values.min(axis=1)).sum()) if values.shape[1] > 1 else 0
        found[name] = {"samples": len(values), "saturated": saturated, "collapsed": collapsed}
    return found


def no_evidence(saturation_by_set: dict[str, dict]) -> bool:
    """Whether every sample of every check set is saturated or collapsed: such a check set is not evidence."""
    total = sum(s["samples"] for s in saturation_by_set.values())
    return total > 0 and all(s["saturated"] + s["collapsed"] >= s["samples"] for s in saturation_by_set.values())
