"""What each field of a layer's config may hold: its type and range, checked before anything uses it.

A damaged or hand-edited config otherwise reaches Keras, whose refusals are long, name neither the
layer nor the field, and sometimes do not come at all (a negative stride loops; a width of 10^12
allocates). One table, by field name, covers every layer family that has the field; where a name means
something else in one class (BatchNormalization's `scale` is a switch, Rescaling's a number) the class
has its own entry. A field the table does not know is left to Keras: an unknown field is no damage.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

# A check returns None for a good value, else what the value must be ("must be positive integers").
Check = Callable[[object], str | None]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _ints(value) -> list | None:
    """`value` as a list of integers (a single integer, or a list/tuple of them); None if it is not one."""
    values = value if isinstance(value, list | tuple) else [value]
    return list(values) if values and all(_is_int(v) for v in values) else None


# A window, stride, dilation or upsampling factor beyond any input a model is built for: refused before
# Keras allocates or loops on it (2^20 pixels or steps; the largest real input is a few thousand).
MAX_EXTENT = 2**20
# No Keras tensor has this many axes (Conv3D's have 5): an axis beyond it is damage.
MAX_AXES = 32


def positive_ints(value) -> str | None:
    values = _ints(value)
    return None if values and all(0 < v <= MAX_EXTENT for v in values) else f"must be positive integers up to {MAX_EXTENT}"


def positive_int(value) -> str | None:
    return None if _is_int(value) and value > 0 else "must be a positive integer"


def positive_extent(value) -> str | None:
    return None if _is_int(value) and 0 < value <= MAX_EXTENT else f"must be a positive integer up to {MAX_EXTENT}"


def boolean(value) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def fraction(value) -> str | None:
    return None if _is_number(value) and 0 <= value < 1 else "must be a number in [0, 1)"


def unit_interval(value) -> str | None:
    return None if _is_number(value) and 0 <= value <= 1 else "must be a number in [0, 1]"


def positive_number(value) -> str | None:
    return None if _is_number(value) and value > 0 else "must be a positive number"


def number(value) -> str | None:
    return None if _is_number(value) else "must be a finite number"


def nonnegative_number(value) -> str | None:
    return None if _is_number(value) and value >= 0 else "must be a finite number, 0 or more"


def numbers(value) -> str | None:
    """A finite number, or a (nested) list of them (Rescaling's per-channel scale, Normalization's mean)."""
    if isinstance(value, list):
        return None if value and all(numbers(v) is None for v in value) else "must be finite numbers"
    return number(value)


def optional(check: Check) -> Check:
    """`check`, with null allowed (a field whose null means "none", as ReLU's `max_value`)."""
    return lambda value: None if value is None else check(value)


def axes(value) -> str | None:
    values = _ints(value)
    return None if values is not None and all(-MAX_AXES < v < MAX_AXES for v in values) else "must be an axis or a list of axes"


def class_name(value) -> str | None:
    """A Python class's name (a custom layer's may carry its package: `Custom>Attention`, `my_pkg.Attention`)."""
    if isinstance(value, str) and len(value) <= 128 and re.fullmatch(r"[A-Za-z_][\w.>]*", value):
        return None
    return "must be the name of a layer class"


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def name(value) -> str | None:
    return None if isinstance(value, str) and 0 < len(value) <= 256 else "must be a name of 1 to 256 characters"


def activation(value) -> str | None:
    """A name (most files), or tf-keras 2.13+'s `{"class_name": ..., "config": ...}` (graph.KerasLayer.activation)."""
    if isinstance(value, str) and 0 < len(value) <= 64:
        return None
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        return None
    return "must be an activation's name"


def dtype(value) -> str | None:
    """A name ("float32", "tf.float32"), a policy mapping, or null (graph.dtype_name reads them all)."""
    if value is None or (isinstance(value, str) and 0 < len(value) <= 64) or isinstance(value, dict):
        return None
    return "must be a dtype's name or policy"


def batch_shape(value) -> str | None:
    """An input's shape with its batch dimension: null or a positive integer each."""
    if isinstance(value, list) and value and all(v is None or (_is_int(v) and v > 0) for v in value):
        return None
    return "must be a list of positive integers or nulls"


def target_shape(value) -> str | None:
    """Reshape's shape: positive integers, at most one -1 (inferred)."""
    values = _ints(value)
    if values and all(v > 0 or v == -1 for v in values) and values.count(-1) <= 1:
        return None
    return "must be positive integers (and at most one -1)"


def padding_amounts(value) -> str | None:
    """ZeroPadding's and Cropping's amounts: non-negative integers, flat or in pairs."""
    flat = value if isinstance(value, list) else [value]
    flat = [v for item in flat for v in (item if isinstance(item, list) else [item])]
    return None if flat and all(_is_int(v) and v >= 0 for v in flat) else "must be non-negative integers"


def module_path(value) -> str | None:
    """A Python module's dotted name (`keras.layers`, `keras.src.ops.numpy`), or null."""
    if value is None or (isinstance(value, str) and len(value) <= 128 and re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", value)):
        return None
    return "must be a module's dotted name"


def serialized(value) -> str | None:
    """An initializer, regularizer or constraint: a name, or Keras's `{"class_name": ..., "config": ...}`."""
    if (isinstance(value, str) and 0 < len(value) <= 64) or (isinstance(value, dict) and isinstance(value.get("class_name"), str)):
        return None
    return "must be a name or a {class_name, config} mapping"


PADDING_MODES = one_of("valid", "same", "causal")
DATA_FORMATS = optional(one_of("channels_last", "channels_first"))

# field → check, for every class that has the field (unless BY_CLASS says otherwise)
FIELDS: dict[str, Check] = {
    "name": name,
    "filters": positive_int, "units": positive_int, "depth_multiplier": positive_int, "groups": positive_extent,
    "input_dim": positive_int, "output_dim": positive_int, "num_heads": positive_int, "key_dim": positive_int,
    "n": positive_int,
    "kernel_size": positive_ints, "strides": positive_ints, "pool_size": positive_ints, "dilation_rate": positive_ints,
    "size": positive_ints, "dims": positive_ints,
    "rate": fraction, "dropout": fraction, "recurrent_dropout": fraction,
    "epsilon": positive_number, "momentum": unit_interval,
    "axis": axes,
    "padding": PADDING_MODES, "data_format": DATA_FORMATS,
    "use_bias": boolean, "center": boolean, "scale": boolean, "trainable": boolean, "keepdims": boolean,
    "return_sequences": boolean, "return_state": boolean, "go_backwards": boolean, "stateful": boolean,
    "ragged": boolean, "sparse": boolean,
    "activation": activation, "recurrent_activation": activation,
    "dtype": dtype,
    "batch_input_shape": batch_shape, "batch_shape": batch_shape,
    "target_shape": target_shape,
    "cropping": padding_amounts,
    "max_value": optional(nonnegative_number), "negative_slope": number, "threshold": number, "alpha": number,
    "stddev": nonnegative_number,
    "mean": optional(numbers), "variance": optional(numbers),
}
# fields named by what they hold: kernel_initializer, gamma_regularizer, bias_constraint, ...
SUFFIXES: dict[str, Check] = {"_initializer": serialized, "_regularizer": serialized, "_constraint": serialized}
# where a class gives a field another meaning
_PADDING = {"padding": padding_amounts}
BY_CLASS: dict[str, dict[str, Check]] = {
    "Rescaling": {"scale": numbers, "offset": numbers},
    "ZeroPadding1D": _PADDING, "ZeroPadding2D": _PADDING, "ZeroPadding3D": _PADDING,
    "MultiHeadAttention": {"dropout": fraction, "value_dim": optional(positive_int)},
}
# fields a class cannot be built without (Keras fails, or loops, when they are missing or null)
_CONV = ("filters", "kernel_size")
REQUIRED: dict[str, tuple[str, ...]] = {
    "Dense": ("units",), "Conv1D": _CONV, "Conv2D": _CONV, "Conv3D": _CONV, "Conv1DTranspose": _CONV,
    "Conv2DTranspose": _CONV, "SeparableConv1D": _CONV, "SeparableConv2D": _CONV, "DepthwiseConv2D": ("kernel_size",),
    "DepthwiseConv1D": ("kernel_size",), "Embedding": ("input_dim", "output_dim"), "Dropout": ("rate",),
    "Reshape": ("target_shape",), "LSTM": ("units",), "GRU": ("units",), "SimpleRNN": ("units",),
    "MultiHeadAttention": ("num_heads", "key_dim"), "Rescaling": ("scale",),
}


def show(value, limit: int = 40) -> str:
    """`value` as JSON, cut to about `limit` characters with its length said: a 10,000-character
    name must not make a 10,000-character error."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else f"{text[:limit - 10]}... ({len(text)} characters)"


def problem(class_name: str, config: dict) -> str | None:
    """The first field of `config` (a `class_name` layer's) that is missing or wrong, as
    "strides [-1, -1] must be positive integers"; None where every field the table knows is good."""
    for field in REQUIRED.get(class_name, ()):
        if config.get(field) is None:
            return f"{field} is missing (a {class_name} cannot be built without it)"
    checks = {**FIELDS, **BY_CLASS.get(class_name, {})}
    for field, value in config.items():
        check = checks.get(field) or next((c for suffix, c in SUFFIXES.items() if field.endswith(suffix)), None)
        if check is None or (value is None and field != "name"):  # null is Keras's "unset" (a required field is checked above)
            continue
        wrong = check(value)
        if wrong:
            return f"{field} {show(value)} {wrong}"
    return None

