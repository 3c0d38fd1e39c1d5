"""The Keras model rebuilt in float64, in the TensorFlow process: the ground truth of the float64 proof.

Every `dtype` of the model's own config is set to float64, the model is rebuilt from that config and
given its float32 weights, cast (exact). Its float64 rounding (~1e-15) sits eleven orders of magnitude
below a wrong conversion (≥ 1e-4); float32 leaves one or two (../shared/NOTES.md). The inputs keep
their float32 values: the check set is float32, so the InputLayer's own cast loses nothing.
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.tf_side import float64_resize
from pipeline.tf_side.loading import keras_api

FLOAT32, FLOAT64 = "float32", "float64"


# The floating dtypes and policies a layer computes in: a mixed-precision model (tf-keras `Policy`, Keras 3
# `DTypePolicy` "mixed_float16") rounds in float16 — its float64 twin is the exact model that rounding departs
# from, so the float16 noise is measured as float32's is, and the tolerances come from it.
FLOATING = (FLOAT32, "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")


def float64_config(config):
    """`config` with every floating dtype — a plain name or a policy (tf-keras `Policy`, Keras 3 `DTypePolicy`,
    mixed precision included) — made float64."""
    if isinstance(config, list):
        return [float64_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    result = {}
    for key, value in config.items():
        if key == "dtype" and value in FLOATING:
            result[key] = FLOAT64
        elif key == "dtype" and isinstance(value, dict) and value.get("config", {}).get("name") in FLOATING:
            result[key] = {**value, "config": {**value["config"], "name": FLOAT64}}
        else:
            result[key] = float64_config(value)
    return result


# TensorFlow's words for an op that has no float64 kernel (MaxPool3D takes half, bfloat16 and float only)
_NO_FLOAT64 = ("float64 not in list of allowed values", "of double is not in the list of allowed values")


def unconverted_layer(model, exc: Exception) -> str:
    """Why the float64 rebuild does not run, naming the layer (and the op, where TensorFlow's message does) of an
    op with no float64 kernel: "layer max_pooling3d (MaxPooling3D): TensorFlow's MaxPool3D has no float64 kernel".
    Else the error's type and first 160 characters."""
    text = " ".join(str(exc).split())
    called = (re.search(r'layer "(\w+)"', text) or re.search(r"when calling (\w+)\.call\(\)", text))
    if called and any(words in text for words in _NO_FLOAT64):
        found = [layer for layer in model.layers if called.group(1) in (layer.name, type(layer).__name__)]
        where = f"layer {found[0].name} ({type(found[0]).__name__})" if len(found) == 1 else f"a {called.group(1)} layer"
        op = re.search(r"\[Op:(\w+)\]", text) or re.search(r"\{\{node (\w+)\}\}", text)
        return f"{where}: TensorFlow's {op.group(1)} has no float64 kernel" if op else f"{where}: TensorFlow has no float64 kernel for it"
    kernel = re.search(r"No OpKernel was registered to support Op '(\w+)' used by \{\{node ([\w/]+)\}\}", text)
    if kernel:  # a kernel registered for float32 only on this machine (AvgPool3D), found when the graph runs
        scopes = kernel.group(2).split("/")  # Keras 3 numbers a second instance's scope: average_pooling3d_1
        found = [layer for layer in model.layers if any(re.fullmatch(rf"{re.escape(layer.name)}(_\d+)?", scope) for scope in scopes)]
        where = f"layer {found[0].name} ({type(found[0]).__name__})" if found else f"node {kernel.group(2)}"
        return f"{where}: TensorFlow's {kernel.group(1)} has no float64 kernel"
    return f"{type(exc).__name__}: {text[:160]}"


def rebuild(model):
    """The float64 twin of `model`, with its weights.

    Raises:
        ValueError: the model cannot be rebuilt in float64 (the message says why).
    """
    keras = keras_api(model)
    kind = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    try:
        twin = kind.from_config(float64_config(model.get_config()))
        twin.set_weights([np.asarray(w, dtype=np.float64) if np.asarray(w).dtype.kind == "f" else w for w in model.get_weights()])
    except Exception as exc:  # noqa: BLE001 — any layer that refuses float64; the proof is then left out, with the reason
        raise ValueError(f"the model cannot be rebuilt in float64 ({unconverted_layer(model, exc)})") from exc
    leaves = _leaves(twin, keras)
    for layer in leaves:
        # An adapted Normalization computes from tensors cast from its variables when it is built (zeros and ones),
        # set again by `finalize_state` — which loading a file calls, and `set_weights` does not: without it the
        # twin normalizes by mean 0 and variance 1, and the float64 reference is another model.
        getattr(layer, "finalize_state", lambda: None)()
    float64_resize.take_float64(leaves)
    kept = sorted({layer.name for layer in leaves if getattr(layer, "compute_dtype", FLOAT64) != FLOAT64
                   and type(layer).__name__ != "InputLayer"})
    if kept:
        raise ValueError(f"layers {', '.join(kept[:5])} stay in {FLOAT32} when rebuilt in float64")
    return twin


def _leaves(model, keras) -> list:
    """The layers that compute: a nested model (ConvNeXt's stem is a Sequential) stands for its own layers —
    its own dtype policy stays the global default, and decides nothing."""
    leaves = []
    for layer in model.layers:
        leaves.extend(_leaves(layer, keras) if isinstance(layer, keras.Model) else [layer])
    return leaves
