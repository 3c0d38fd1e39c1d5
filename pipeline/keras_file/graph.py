"""The Keras model's layer graph as its config states it — plain JSON, no Keras.

Layers are reported by these names: they are what the user's file calls them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.data import checkset


Ref = tuple[str, int, int]  # a tensor of the graph: (layer name, which call of it made it, which of its outputs)


@dataclass(frozen=True)
class KerasLayer:
    name: str
    class_name: str
    config: dict
    inbound: tuple[str, ...]  # names of the layers whose outputs this one takes, in order
    # An op of the config rather than a layer (Keras 3 `x + 3.0`, Keras 2 TFOpLambda): its operands in
    # order, a layer name for a tensor and a float for a number; None for a layer.
    operands: tuple[str | float, ...] | None = None
    calls: int = 1  # how many times the model calls the layer: more than once for a shared layer
    # The layer whose output the call passes as `mask=` (Keras 3 writes an Embedding's mask as a `NotEqual` op
    # and passes it on so); not in `inbound`. None where the config passes none (Keras 2 computes masks unwritten).
    mask: str | None = None
    # The options of its first call that are not tensors (`use_causal_mask`, `training`), as the config writes
    # them; a tensor option (an `attention_mask`) is "<tensor>" here and among `inbound`.
    call_options: dict = field(default_factory=dict)
    # Per call, the tensors it takes as (layer, node, tensor index) — `node`: which call of that layer made it —
    # where the config says so (a Functional model's layers); () for a Sequential's. What tells a shared layer's
    # second output from its first, which `inbound`'s names cannot.
    call_refs: tuple[tuple[Ref, ...], ...] = ()

    @property
    def activation(self) -> str | None:
        """The activation inside the layer (Conv2D/Dense 'activation', or the Activation layer's own), by
        name: a string in most files; tf-keras 2.13+ writes a function as `{"class_name": "function",
        "config": "relu", ...}` (its name) and a layer given as activation as that layer's config (its
        class name, e.g. "LeakyReLU"). None where the layer has none."""
        value = self.config.get("activation")
        if isinstance(value, dict):
            value = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
        return value if isinstance(value, str) else None

    @property
    def dtype(self) -> str | None:
        """The dtype the layer computes in, by name (`dtype_name`); None where the config states none."""
        return dtype_name(self.config.get("dtype"))


def dtype_name(value) -> str | None:
    """A config's `dtype` as a name ("float32", "mixed_float16", "int32"), in each form Keras wrote it: a
    string (Keras 2.0 on; "tf.float32" or "<dtype: 'float32'>" where a TensorFlow DType was stringified),
    a policy dict (tf-keras `{"class_name": "Policy", "config": {"name": "mixed_float16"}}`, Keras 3's
    `{"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}`). None where absent."""
    if isinstance(value, dict):
        value = value.get("config", {}).get("name") if isinstance(value.get("config"), dict) else None
    if not isinstance(value, str):
        return None
    found = re.fullmatch(r"(?:tf\.|<dtype: ')?(\w+)'?>?", value.strip())
    return found.group(1) if found else value


def _inbound_names(nodes) -> list[str]:
    """Layer names referenced by `inbound_nodes` (the layers of its `_refs`)."""
    return [name for name, _, _ in _refs(nodes)]


def _refs(nodes) -> tuple[Ref, ...]:
    """The tensors referenced by `nodes` — `inbound_nodes`, or one call's item of it — as (layer, node, tensor
    index), in order, in Keras 2 ([[name, i, j, kw]]) or Keras 3 (keras_history) form."""
    refs: list[Ref] = []

    def walk(item):
        if isinstance(item, dict):
            history = item.get("config", {}).get("keras_history") if item.get("class_name") == "__keras_tensor__" else None
            if history:
                refs.append(_ref(history))
                return
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                refs.append(_ref(item))  # Keras 2: [layer_name, node_index, tensor_index, kwargs]
                if len(item) > 3 and isinstance(item[3], dict):
                    walk(item[3])  # tensors passed by keyword: a MultiHeadAttention's value, a TFOpLambda's y
                return
            for value in item:
                walk(value)

    walk(nodes)
    return tuple(refs)


def _ref(triple: list) -> Ref:
    """(layer, node, tensor index) of a keras_history or Keras 2 entry; an index the file does not give as a number, 0."""
    def index(at: int) -> int:
        return triple[at] if len(triple) > at and isinstance(triple[at], int) else 0

    return triple[0], index(1), index(2)


def _operands(entry: dict) -> tuple[str | float, ...] | None:
    """The operands of an op node (see `KerasLayer.operands`); None where `entry` is a layer."""
    nodes = entry.get("inbound_nodes") or []
    module = str(entry.get("module") or "")
    if nodes and isinstance(nodes[0], dict) and (module.startswith("keras.src.ops") or (not module and len(nodes[0].get("args", [])) > 1)):
        # Keras 3: a layer mostly takes one argument (a tensor, or a list of them); an op takes its operands
        # as arguments — the legacy .h5 Keras 3 writes drops the `module` that says so (a layer of several
        # arguments, MultiHeadAttention's query and value, is `keras.layers` where it is written)
        args = nodes[0]["args"]
    elif entry.get("class_name") == "TFOpLambda" and nodes and isinstance(nodes[0], list) and nodes[0]:
        # Keras 2: [[[name, node, tensor, {"y": 3.0, "name": ...}]]]; tf-keras writes a TFOpLambda's node one level
        # flatter, [[name, node, tensor, {"y": <a number, or a tensor [name, node, tensor]>}]]
        first = nodes[0] if isinstance(nodes[0][0], str) else nodes[0][0]
        args = [[first[0], 0, 0]] + [first[3]["y"]] if len(first) > 3 and isinstance(first[3], dict) and "y" in first[3] else [first]
    else:
        return None
    operands: list[str | float] = []
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            names = _inbound_names(arg)
            if len(names) != 1:
                return tuple(operands) + ("?",)  # an operand the native model cannot read: refused there
            operands.append(names[0])
        else:
            operands.append(float(arg))
    return tuple(operands)


def _first_kwargs(nodes) -> dict | None:
    """The keyword arguments of the first call in `inbound_nodes` (Keras 3 `kwargs`, Keras 2 the 4th item of the
    first tensor); None where it has none."""
    first = nodes[0] if isinstance(nodes, list) and nodes else None
    if isinstance(first, dict):
        return first.get("kwargs") if isinstance(first.get("kwargs"), dict) else None
    if isinstance(first, list) and first and isinstance(first[0], list) and len(first[0]) > 3 and isinstance(first[0][3], dict):
        return first[0][3]
    if isinstance(first, list) and len(first) > 3 and isinstance(first[0], str) and isinstance(first[3], dict):
        return first[3]  # tf-keras's TFOpLambda writes its node one level flatter: [name, node, tensor, kwargs]
    return None


def _without_mask(nodes) -> tuple[list, list[str]]:
    """`inbound_nodes` without the `mask=` of the first call, and the layers that mask comes from."""
    kwargs = _first_kwargs(nodes)
    if not kwargs or "mask" not in kwargs:
        return nodes, []
    rest = {key: value for key, value in kwargs.items() if key != "mask"}
    first = {**nodes[0], "kwargs": rest} if isinstance(nodes[0], dict) else [[*nodes[0][0][:3], rest], *nodes[0][1:]]
    return [first, *nodes[1:]], _inbound_names(kwargs["mask"])


def _call_options(nodes) -> dict:
    """The keyword options of the first call in `inbound_nodes` (Keras 3 `kwargs`, Keras 2 the 4th item), tensors as "<tensor>"."""
    kwargs = _first_kwargs(nodes) or {}
    return {key: "<tensor>" if _inbound_names(value) else value for key, value in kwargs.items() if key != "name"}


def layers(model_config: dict) -> list[KerasLayer]:
    """Every layer in config order (topological for models Keras writes); Sequential layers chain."""
    raw = model_config.get("config", {})
    entries = raw.get("layers", []) if isinstance(raw, dict) else raw
    result: list[KerasLayer] = []
    sequential = model_config.get("class_name") == "Sequential"
    for index, entry in enumerate(entries):
        config = entry.get("config", {})
        if isinstance(config, list):  # a Sequential nested as a layer, written by Keras 2.0–2.1: its layers alone
            config = {"name": entry.get("name", f"layer_{index}"), "layers": config}
        nodes = entry.get("inbound_nodes") or []
        mask = None
        if sequential:
            inbound = (result[-1].name,) if result else ()
        else:
            unmasked, masks = _without_mask(nodes)
            mask = masks[0] if len(masks) == 1 else None
            inbound = tuple(_inbound_names(unmasked)) + (tuple(masks) if len(masks) > 1 else ())  # several masks: kept as inputs
        calls = max(len(nodes), 1) if isinstance(nodes, list) else 1
        refs = tuple(_refs(node) for node in _without_mask(nodes)[0]) if not sequential and isinstance(nodes, list) else ()
        result.append(KerasLayer(config.get("name", f"layer_{index}"), entry["class_name"], config, inbound, _operands(entry), calls, mask,
                                 _call_options(nodes), refs))
    return _calls_counted_from_zero(result, entries)


def _calls_counted_from_zero(graph: list[KerasLayer], entries: list) -> list[KerasLayer]:
    """`graph` with each (layer, node, tensor) triple's node counting the layer's calls from 0. Keras 2 counts a
    nested model's nodes from its own first — the one its Input made when it was built, left out of the config
    (tf-keras `functional._should_skip_first_node`) —, so its first call in the outer model is node 1; Keras 3
    counts the model's calls alone."""
    keras2 = any(isinstance(node, list) for entry in entries if isinstance(entry, dict) for node in entry.get("inbound_nodes") or [])
    built = {layer.name for layer in graph if (inner := nested_layers(layer)) and inner[0].class_name == "InputLayer"}
    if not keras2 or not built:
        return graph
    return [replace(layer, call_refs=tuple(tuple((name, node - 1 if name in built and node else node, index) for name, node, index in refs)
                                           for refs in layer.call_refs)) for layer in graph]


def with_nested(graph: list[KerasLayer], captured: Collection[str] | None = None) -> list[KerasLayer]:
    """`graph` with the layers of each model nested as a layer and called once (a pretrained base in a
    Sequential) just before it, named `outer/inner` as the TensorFlow process captures them
    (`tf_side.outputs.layer_outputs`), their inputs where the outer model feeds the nested one. A nested
    model called twice (a siamese encoder) stays one layer: its layers have no one output each. `captured`:
    the names the TensorFlow process captured, where given — a nested model none of whose layers it
    captured (one called with a mask, a subclassed one) stays one layer too."""
    result: list[KerasLayer] = []
    for layer in graph:
        prefix = f"{layer.name}/"
        within = None if captured is None else {name[len(prefix):] for name in captured if name.startswith(prefix)}
        inner = with_nested(nested_layers(layer), within) if layer.calls == 1 and within != set() else []
        entries = [entry for entry in inner if entry.class_name != "InputLayer"]
        if not entries:
            result.append(layer)
            continue
        feeds = iter(layer.inbound)
        fed = {name: (next(feeds, None),) for name in _input_names(layer, inner)}
        consumed = {source for entry in entries for source in (*entry.inbound, entry.mask) if source}  # a mask op is read too
        for entry in entries:
            inbound = (tuple(name for source in entry.inbound for name in fed.get(source, (f"{layer.name}/{source}",)) if name)
                       if entry.inbound else layer.inbound)
            operands = None if entry.operands is None else tuple(  # "?": an operand the config does not say, kept so
                fed.get(op, (f"{layer.name}/{op}",))[0] if isinstance(op, str) and op != "?" else op for op in entry.operands)
            mask = None if entry.mask is None else fed.get(entry.mask, (f"{layer.name}/{entry.mask}",))[0]
            result.append(replace(entry, name=f"{layer.name}/{entry.name}", inbound=inbound, operands=operands, mask=mask))
        # the nested model's own row takes its inner outputs, so that a chain folded into it passes through
        result.append(replace(layer, inbound=tuple(f"{layer.name}/{e.name}" for e in entries if e.name not in consumed)))
    return result


def nested_inputs(layer: KerasLayer) -> list[str]:
    """The input layers' names of a model nested as a layer, in its own order (`_input_names`)."""
    return _input_names(layer, nested_layers(layer))


def _input_names(layer: KerasLayer, inner: list[KerasLayer]) -> list[str]:
    """The nested model's input layers in its own order (`input_layers` of its config: `[name, 0, 0]` each,
    or one such triple), else in config order."""
    declared = layer.config.get("input_layers")
    if isinstance(declared, list) and declared and isinstance(declared[0], str):
        declared = [declared]
    names = [entry[0] for entry in declared if isinstance(entry, list) and entry and isinstance(entry[0], str)] if isinstance(declared, list) else []
    listed = [entry.name for entry in inner if entry.class_name == "InputLayer"]
    return names if sorted(names) == sorted(listed) else listed


def nested_layers(layer: KerasLayer) -> list[KerasLayer]:
    """The layers of a model nested as a layer (ConvNeXt's Sequential stem), as `layers` reads them; []
    for a plain layer."""
    return layers({"class_name": layer.class_name, "config": layer.config}) if isinstance(layer.config.get("layers"), list) else []


def _declared_shape(graph: list[KerasLayer]) -> list | None:
    """The first layer's stated batch shape (InputLayer `batch_shape` in Keras 3, `batch_input_shape` in
    Keras 2), batch first, where it is a list of sizes or None; else None."""
    for layer in graph[:1]:
        shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
        if isinstance(shape, list) and len(shape) > 1 and all(isinstance(d, int) or d is None for d in shape[1:]):
            return shape
    return None


def input_shape(graph: list[KerasLayer]) -> tuple[int, ...] | None:
    """One sample's input shape as the config states it, without the batch dimension, a dimension left
    open (None) at `checkset.OPEN_DIMENSION_LENGTH`; None if absent."""
    shape = _declared_shape(graph)
    return checkset.fill_open(shape[1:]) if shape is not None else None


def model_inputs(model_config: dict, graph: list[KerasLayer]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, one sample's shape) of each input in the model's order — its config's `input_layers`, else the
    InputLayers' order — a dimension left open at `checkset.OPEN_DIMENSION_LENGTH`; inputs whose shape the
    config does not state are left out."""
    raw = model_config.get("config", {})
    declared = _inbound_names(raw.get("input_layers", [])) if isinstance(raw, dict) else []
    by_name = {layer.name: layer for layer in graph if layer.class_name == "InputLayer"}
    found = []
    for name in declared or list(by_name):
        shape = _declared_shape([by_name[name]]) if name in by_name else None
        if shape is not None:
            found.append((name, checkset.fill_open(shape[1:])))
    return found


def output_names(model_config: dict, graph: list[KerasLayer]) -> list[str]:
    """The model's output layers as its config lists them (`output_layers`; the last layer where it lists none)."""
    raw = model_config.get("config", {})
    outputs = raw.get("output_layers") if isinstance(raw, dict) else None
    if not outputs:
        return [graph[-1].name] if graph else []
    return _inbound_names(outputs)  # Keras 3 writes a single output unnested: ["name", 0, 0]


def open_dimensions(graph: list[KerasLayer]) -> list[int]:
    """The positions (1-based: after the batch) of the input dimensions the config leaves open (None)."""
    shape = _declared_shape(graph) or []
    return [i for i, dim in enumerate(shape) if i > 0 and dim is None]


def is_classifier(graph: list[KerasLayer]) -> bool:
    """Whether the model's output is class probabilities: its last layer ends in a softmax."""
    last = graph[-1] if graph else None
    return last is not None and (last.activation == "softmax" or last.class_name == "Softmax")


def input_ranges(graph: list[KerasLayer]) -> tuple[tuple[float, float], ...] | None:
    """The input range the model states, where a layer right after its input does: a Rescaling (the
    inputs it maps onto [0, 1], or onto [−1, 1] where its offset is negative), or a Normalization with
    its mean and variance in the config (mean ± 3 standard deviations). None where neither is there."""
    inputs = {layer.name for layer in graph if layer.class_name == "InputLayer"}
    for layer in graph:
        if layer.class_name == "InputLayer" or not set(layer.inbound) <= inputs:
            continue
        if layer.class_name == "Rescaling":
            scale, offset = layer.config.get("scale"), layer.config.get("offset", 0.0)
            if isinstance(scale, int | float) and isinstance(offset, int | float) and scale:
                low, high = (-1.0, 1.0) if offset < 0 else (0.0, 1.0)
                ends = sorted(((low - offset) / scale, (high - offset) / scale))
                return ((float(ends[0]), float(ends[1])),)
        if layer.class_name == "Normalization":
            mean, variance = layer.config.get("mean"), layer.config.get("variance")
            if mean is not None and variance is not None:
                mean, spread = np.asarray(mean, dtype=float), 3 * np.sqrt(np.asarray(variance, dtype=float))
                return ((float((mean - spread).min()), float((mean + spread).max())),)
        return None  # the first layer states no range
    return None


def input_tokens(graph: list[KerasLayer]) -> dict[str, checkset.TokenIds]:
    """{input name: the token ids it carries} for each input an `Embedding` reads straight: its table's size
    (`input_dim`) and whether 0 is padding (`mask_zero`). Empty where no input is token ids."""
    inputs = {layer.name for layer in graph if layer.class_name == "InputLayer"}
    found: dict[str, checkset.TokenIds] = {}
    for layer in graph:
        if layer.class_name == "Embedding" and len(layer.inbound) == 1 and layer.inbound[0] in inputs:
            size = layer.config.get("input_dim")
            if isinstance(size, int) and size > 0:
                found.setdefault(layer.inbound[0], checkset.TokenIds(size, bool(layer.config.get("mask_zero", False))))
    if not found and not inputs:  # a Sequential without an InputLayer: its first layer reads the input
        first = graph[0] if graph else None
        if first is not None and first.class_name == "Embedding" and isinstance(first.config.get("input_dim"), int) and first.config["input_dim"] > 0:
            found["input"] = checkset.TokenIds(first.config["input_dim"], bool(first.config.get("mask_zero", False)))
    return found


def token_ids(graph: list[KerasLayer]) -> checkset.TokenIds | None:
    """The token ids the model's (first such) input carries (`input_tokens`); None where no input does."""
    return next(iter(input_tokens(graph).values()), None)
