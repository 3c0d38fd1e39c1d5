"""What a damaged or hand-edited Keras file gets wrong, found in its config and weights before Keras
sees them — Keras can loop forever on a layer listed as its own input, and converts NaN weights into a
model that verifies as "max |Δ| nan". Each finding is one line naming the layer and the field.
"""

from __future__ import annotations

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.keras_file.graph import KerasLayer, _inbound_names

# Config fields that must be positive integers (or lists of them), where a layer has them.
POSITIVE_FIELDS = ("filters", "units", "kernel_size", "strides", "pool_size", "dilation_rate", "depth_multiplier", "size")
# The Keras weight whose last axis is the layer's output width, and the config field that states it.
OUTPUT_WIDTH = {"Conv1D": "filters", "Conv2D": "filters", "Conv3D": "filters", "Dense": "units"}


def _named(layer: KerasLayer) -> str:
    return f"layer {layer.name} ({layer.class_name})"


def check_graph(config: dict, layers: list[KerasLayer]) -> None:
    """The layer graph is one Keras could build: unique names, inputs that exist and come first, no
    cycle, output layers that exist, fields of the right sign.

    Raises:
        BadInput: the first problem found, naming the layer and the field.
    """
    if not layers:
        raise BadInput("the model config holds no layers; save the whole model again with model.save(...)")
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise BadInput(f"{_named(layer)}: name used by more than one layer; layer names must be unique")
        seen.add(layer.name)
    names = {layer.name for layer in layers}
    for layer in layers:
        if layer.name in layer.inbound:
            raise BadInput(f"{_named(layer)}: inbound_nodes lists the layer as its own input")
        missing = [name for name in layer.inbound if name not in names]
        if missing:
            raise BadInput(f"{_named(layer)}: inbound_nodes names {missing[0]!r}, which is no layer of the model")
        _check_fields(layer)
    _check_acyclic(layers)
    raw = config.get("config", {})
    if config.get("class_name") != "Sequential" and isinstance(raw, dict):
        outputs = _inbound_names(raw.get("output_layers", []))
        if not outputs:
            raise BadInput("the model config names no output layers (output_layers is empty); save the whole model again")
        unknown = [name for name in outputs + _inbound_names(raw.get("input_layers", [])) if name not in names]
        if unknown:
            raise BadInput(f"the model config's input/output layers name {unknown[0]!r}, which is no layer of the model")


def _check_fields(layer: KerasLayer) -> None:
    for field in POSITIVE_FIELDS:
        value = layer.config.get(field)
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise BadInput(f"{_named(layer)}: {field} {value!r} must be positive integers")
    rate = layer.config.get("rate")
    if rate is not None and not (isinstance(rate, int | float) and 0 <= rate < 1):
        raise BadInput(f"{_named(layer)}: rate {rate!r} must be in [0, 1)")


def _check_acyclic(layers: list[KerasLayer]) -> None:
    """Every layer's inputs can be computed before it: a layer reached again on its own input path is a cycle."""
    inbound = {layer.name: layer.inbound for layer in layers}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for source in inbound.get(name, ()):
            if state.get(source) == 1:
                raise BadInput(f"layer {name}: its inputs loop back to it ({' → '.join(path + [source])})")
            if source not in state:
                visit(source, path + [source])
        state[name] = 2

    for layer in layers:
        if layer.name not in state:
            visit(layer.name, [layer.name])


def check_weights(layers: list[KerasLayer], weights: dict[str, dict[str, np.ndarray]]) -> None:
    """Every weight finite, and of the shape its layer's config says where the config states it.

    Raises:
        BadInput: the first bad weight, named `layer/weight`.
    """
    for layer in layers:
        tensors = weights.get(layer.name, {})
        for name, value in tensors.items():
            array = np.asarray(value)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = int((~np.isfinite(array)).sum())
                raise BadInput(f"{_named(layer)}: weight {layer.name}/{name} holds {bad} NaN or infinite value(s); "
                               "the file is damaged or the training diverged")
        field = OUTPUT_WIDTH.get(layer.class_name)
        kernel, bias = tensors.get("kernel"), tensors.get("bias")
        width = layer.config.get(field) if field else None
        if kernel is not None and isinstance(width, int) and np.ndim(kernel) and np.shape(kernel)[-1] != width:
            raise BadInput(f"{_named(layer)}: weight {layer.name}/kernel has shape {tuple(np.shape(kernel))}, "
                           f"but {field} is {width}")
        size = layer.config.get("kernel_size")
        if kernel is not None and isinstance(size, list) and np.ndim(kernel) >= len(size) and list(np.shape(kernel)[:len(size)]) != size:
            raise BadInput(f"{_named(layer)}: weight {layer.name}/kernel has shape {tuple(np.shape(kernel))}, "
                           f"but kernel_size is {size}")
        if bias is not None and kernel is not None and isinstance(width, int) and np.shape(bias) != (width,):
            raise BadInput(f"{_named(layer)}: weight {layer.name}/bias has shape {tuple(np.shape(bias))}, but {field} is {width}")
