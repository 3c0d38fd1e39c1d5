"""What a damaged or hand-edited Keras file gets wrong, found in its config and weights before Keras
sees them — Keras can loop forever on a layer listed as its own input, and converts NaN weights into a
model that verifies as "max |Δ| nan". Each finding is one line naming the layer and the field.
"""

from __future__ import annotations

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.keras_file import fields, graph
from pipeline.keras_file.graph import KerasLayer, _inbound_names



def _bare(value, limit: int) -> str:
    """A name as an error shows it: without JSON's quotes, cut where it is absurdly long (`fields.show`)."""
    return fields.show(value, limit).strip('"')


def _named(layer: KerasLayer) -> str:
    return f"layer {_bare(layer.name, 60)} ({_bare(layer.class_name, 40)})"


# Model classes whose config holds layers (a nested model is a layer entry of one of these).
MODEL_CLASSES = ("Functional", "Model", "Sequential")
# How deep models may nest inside each other: transfer models nest one or two; a config nested
# thousands deep is damage (and Python's recursion limit).
MAX_NESTING = 32


def check_entries(config, depth: int = 0) -> None:
    """The model config has the shape `graph.layers` reads: a mapping with a class name, and a list of
    layer entries each a mapping with a class name and a config mapping (a list of layers for a
    Sequential written by Keras 2.0–2.1), a name, inbound nodes as a list, and every field the
    `fields` table knows of the right type and range — nested models' layers included.

    Raises:
        BadInput: the first bad entry or field, naming the layer (or its position) and the field.
    """
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise BadInput("the model config is not a Keras model's (no class_name); save the whole model again with model.save(...)")
    if depth == 0 and config["class_name"] not in MODEL_CLASSES:
        raise BadInput(f"the model's class {fields.show(config['class_name'])} is not a Keras model class (a subclassed model?); "
                       "save a Functional or Sequential model")
    if depth > MAX_NESTING:
        raise BadInput(f"the model config nests models more than {MAX_NESTING} deep; the file is damaged")
    inner = config.get("config")
    entries = inner.get("layers") if isinstance(inner, dict) else inner
    if not isinstance(entries, list):
        raise BadInput(f"the model config's layers are not a list ({fields.show(entries)}); save the whole model again")
    for index, entry in enumerate(entries):
        _check_entry(entry, index, config.get("class_name") == "Sequential", depth)
    if isinstance(inner, dict) and config["class_name"] != "Sequential":
        for key in ("input_layers", "output_layers"):
            if not isinstance(inner.get(key), list):
                raise BadInput(f"the model config's {key} {fields.show(inner.get(key))} must be a list of layers")


def _check_entry(entry, index: int, sequential: bool, depth: int) -> None:
    where = f"layer #{index}"
    if not isinstance(entry, dict):
        raise BadInput(f"{where} of the model config is not a layer entry ({fields.show(entry)})")
    class_name, config = entry.get("class_name"), entry.get("config")
    named = config.get("name") if isinstance(config, dict) else entry.get("name")  # Keras 2 names the entry too
    if isinstance(named, str):
        where = f"layer {_bare(named, 60)}"
    wrong = fields.class_name(class_name)
    if wrong:
        raise BadInput(f"{where}: class_name {fields.show(class_name)} {wrong}")
    for key, check in (("module", fields.module_path), ("registered_name", fields.optional(fields.class_name))):
        wrong = check(entry.get(key)) if key in entry else None
        if wrong:  # Keras 3 imports `module` to find the class: only a plain dotted name may reach it
            raise BadInput(f"{where}: {key} {fields.show(entry[key])} {wrong}; refused")
    where = f"{where} ({_bare(class_name, 40)})"
    if isinstance(config, list) and class_name in MODEL_CLASSES:  # a nested Sequential, Keras 2.0–2.1: its layers alone
        check_entries({"class_name": "Sequential", "config": config}, depth + 1)
        return
    if not isinstance(config, dict):
        raise BadInput(f"{where}: config {fields.show(config)} must be a mapping of the layer's settings")
    nodes = entry.get("inbound_nodes")
    if nodes is not None and not isinstance(nodes, list):
        raise BadInput(f"{where}: inbound_nodes {fields.show(nodes)} must be a list")
    if not sequential:  # a Functional model wires its layers by the entry's own name and inbound nodes
        if entry.get("name") != config.get("name"):
            raise BadInput(f"{where}: the entry's name {fields.show(entry.get('name'))} must be its config's name")
        if class_name != "InputLayer" and not _inbound_names(nodes or []):
            raise BadInput(f"{where}: inbound_nodes names no input layer; the layer is not connected")
    wrong = fields.problem(class_name, config)
    if wrong:
        raise BadInput(f"{where}: {wrong}")
    if isinstance(config.get("layers"), list):  # a model nested as a layer
        check_entries({"class_name": class_name, "config": config}, depth + 1)


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
    _check_acyclic(layers)
    check_no_strings(layers)
    raw = config.get("config", {})
    if config.get("class_name") != "Sequential" and isinstance(raw, dict):
        outputs = _inbound_names(raw.get("output_layers", []))
        if not outputs:
            raise BadInput("the model config names no output layers (output_layers is empty); save the whole model again")
        unknown = [name for name in outputs + _inbound_names(raw.get("input_layers", [])) if name not in names]
        if unknown:
            raise BadInput(f"the model config's input/output layers name {unknown[0]!r}, which is no layer of the model")


# Keras layers that take strings; neither ONNX (as tf2onnx writes it) nor PyTorch has a string tensor.
STRING_LAYERS = ("TextVectorization", "StringLookup")


def check_no_strings(layers: list[KerasLayer]) -> None:
    """BadInput naming the first layer that takes strings (a `TextVectorization`, a `StringLookup`, an input of
    dtype string), and what converts instead: the model behind it, fed the token ids it makes."""
    for layer in layers:
        string_input = layer.class_name == "InputLayer" and graph.dtype_name(layer.config.get("dtype")) == "string"
        if layer.class_name in STRING_LAYERS or string_input:
            while True:  # the last string layer of the chain: the one that makes the token ids
                nxt = next((other for other in layers if layer.name in other.inbound and other.class_name in STRING_LAYERS), None)
                if nxt is None:
                    break
                layer = nxt
            after = [other.name for other in layers if layer.name in other.inbound]
            behind = f"the layers from {_bare(after[0], 60)} on" if after else "the layers after it"
            raise BadInput(f"{_named(layer)} takes strings, which do not convert: convert {behind}, fed the token ids, "
                           "and keep the string step in your data pipeline")


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


# The weights a layer of these classes holds, by the names `weights.read` files them under (aliases:
# the name a .keras file's counter order gives, and the Keras 2 attribute name), each with the shape its
# config implies: an int is that size, a config field's name its value (a list spreads), None any size.
_CONV_KERNEL = ("kernel_size", None, "filters")
WEIGHTS: dict[str, dict[tuple[str, ...], tuple]] = {
    "Dense": {("kernel",): (None, "units"), ("bias",): ("units",)},
    "Conv1D": {("kernel",): _CONV_KERNEL, ("bias",): ("filters",)},
    "Conv2D": {("kernel",): _CONV_KERNEL, ("bias",): ("filters",)},
    "Conv3D": {("kernel",): _CONV_KERNEL, ("bias",): ("filters",)},
    "DepthwiseConv1D": {("depthwise_kernel", "kernel"): ("kernel_size", None, "depth_multiplier"), ("bias",): (None,)},
    "DepthwiseConv2D": {("depthwise_kernel", "kernel"): ("kernel_size", None, "depth_multiplier"), ("bias",): (None,)},
    "SeparableConv1D": {("depthwise_kernel",): ("kernel_size", None, "depth_multiplier"), ("pointwise_kernel",): (1, None, "filters"),
                        ("bias",): ("filters",)},
    "SeparableConv2D": {("depthwise_kernel",): ("kernel_size", None, "depth_multiplier"), ("pointwise_kernel",): (1, 1, None, "filters"),
                        ("bias",): ("filters",)},
    "Embedding": {("embeddings", "kernel"): ("input_dim", "output_dim")},
    "BatchNormalization": {("gamma",): (None,), ("beta",): (None,), ("moving_mean",): (None,), ("moving_variance",): (None,)},
}
# The weights a config switches off: no bias without use_bias, no gamma without scale, no beta without center.
_SWITCHED = {"bias": "use_bias", "gamma": "scale", "beta": "center"}


def _expected_shape(layer: KerasLayer, pattern: tuple) -> list[int | None] | None:
    """`pattern` (see WEIGHTS) with the config's values put in; None where the config does not state them."""
    shape: list[int | None] = []
    for part in pattern:
        value = layer.config.get(part) if isinstance(part, str) else part
        if isinstance(part, str) and value is None:
            return None
        shape += value if isinstance(value, list) else [value]
    return shape


def check_weights(layers: list[KerasLayer], weights: dict[str, dict[str, np.ndarray]]) -> None:
    """Every weight a number array, finite, and present and of the shape its layer's config implies where
    the layer is of a class whose weights are known (`WEIGHTS`) — nested models' layers included. A
    config that implies more than the file holds (a Dense of 10^12 units over a 40 kB kernel) is refused
    here, before anything allocates it.

    Raises:
        BadInput: the first bad or missing weight, named `layer/weight`.
    """
    for layer in [inner for outer in layers for inner in (outer, *graph.nested_layers(outer))]:
        tensors = weights.get(layer.name, {})
        for name, value in tensors.items():
            array = np.asarray(value)
            if array.dtype.kind not in "fiub":
                raise BadInput(f"{_named(layer)}: weight {layer.name}/{name} holds {array.dtype} data, not numbers; the file is damaged")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = int((~np.isfinite(array)).sum())
                raise BadInput(f"{_named(layer)}: weight {layer.name}/{name} holds {bad} NaN or infinite value(s); "
                               "the file is damaged or the training diverged")
        for names, pattern in WEIGHTS.get(layer.class_name, {}).items():
            if layer.config.get(_SWITCHED.get(names[0], ""), True) is False:
                continue
            found = next((name for name in names if name in tensors), None)
            if found is None:
                raise BadInput(f"{_named(layer)}: the file holds no weight {layer.name}/{names[0]}; the file is damaged")
            shape, expected = list(np.shape(tensors[found])), _expected_shape(layer, pattern)
            if expected is not None and (len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected, strict=True))):
                implied = "×".join("?" if e is None else str(e) for e in expected)
                stated = ", ".join(f"{part} {fields.show(layer.config[part])}" for part in pattern if isinstance(part, str))
                raise BadInput(f"{_named(layer)}: weight {layer.name}/{found} has shape {tuple(shape)}, but its config ({stated}) "
                               f"implies {implied}")
