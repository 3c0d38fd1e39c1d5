"""Questions asked of an ONNX graph, answered in one place: which Keras layer a node comes from, where
the pre-softmax logits are, what one sample's input shape is."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from pipeline.common.errors import BadInput

_SUFFIX = re.compile(r"_\d+$")  # the `_N` Keras 3 appends to a layer's name scope


def suffixed_scopes(node_names: list[str], layer_names: Collection[str]) -> bool:
    """Whether the graph's name scopes are layer names plus a `_N` suffix (Keras 3 traces so) rather
    than the names themselves (tf-keras): true if some scope is not a layer name but is one minus `_N`."""
    known = set(layer_names)
    return any(scope not in known and _SUFFIX.sub("", scope) in known for name in node_names for scope in name.split("/"))


def keras_layer_of(node_name: str, layer_names: Collection[str], suffixed: bool = True) -> str | None:
    """The Keras layer a tf2onnx node name comes from: `model_1/conv2d_1_2/Conv2D` → `conv2d_1`.

    tf2onnx names nodes after TensorFlow name scopes. Keras 3 makes them layer names with a `_N`
    suffix; tf-keras uses the names as they are (`suffixed_scopes` tells which). With `suffixed`, a
    scope minus one such suffix is tried first, then the scope as it is.
    """
    for scope in node_name.split("/"):
        stripped = _SUFFIX.sub("", scope)
        if suffixed and stripped != scope and stripped in layer_names:
            return stripped
        if scope in layer_names:
            return scope
    return None


def layer_owners(node_names: list[str], layer_names: list[str]) -> dict[str, str | None]:
    """{node name: the Keras layer it comes from, or None} for one graph: the naming style is decided
    once for the whole graph (`suffixed_scopes`), then each node is looked up (`keras_layer_of`)."""
    known = set(layer_names)
    suffixed = suffixed_scopes(node_names, known)
    return {name: keras_layer_of(name, known, suffixed) for name in node_names}


def softmax_input(graph) -> str | None:
    """The input of the Softmax that produces the graph's (first) output — the logits — or None if the
    output does not come from a Softmax, i.e. the outputs are not class probabilities."""
    if len(graph.output) > 1:  # several outputs are compared as they are, each on its own scale
        return None
    output = graph.output[0].name
    producer = next((node for node in graph.node if output in node.output), None)
    return producer.input[0] if producer is not None and producer.op_type == "Softmax" else None


def input_shape(onnx_path: Path) -> tuple[int, ...]:
    """One sample's input shape from the ONNX graph (the batch dimension is dropped).

    Raises:
        BadInput: a dimension is not fixed.
    """
    return input_layout(onnx_path).shapes[0]


def input_names(onnx_path: Path) -> list[str]:
    """The graph's input names, in its order."""
    import onnx

    return [i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input]


def input_layout(onnx_path: Path):
    """Every input's name and one-sample shape (batch dropped), in the graph's order: a `data.feeds.Layout`.

    Raises:
        BadInput: a dimension is not fixed.
    """
    import onnx

    from pipeline.data.feeds import Layout

    inputs = onnx.load(str(onnx_path), load_external_data=False).graph.input
    shapes = [tuple(d.dim_value for d in i.type.tensor_type.shape.dim[1:]) for i in inputs]
    for shape in shapes:
        if not shape or any(d <= 0 for d in shape):
            raise BadInput(f"{onnx_path}: input shape {shape} is not fully known; convert with a fixed input shape")
    return Layout.of([i.name for i in inputs], shapes)


def input_sample(onnx_path: Path):
    """What a converted model is traced and exported with: its one input's shape (batch dropped), or the
    `Layout` of its several inputs (`data.feeds`)."""
    layout = input_layout(onnx_path)
    return layout if layout.several else layout.shapes[0]


def torch_module_name(node) -> str:
    """The name onnx2torch gives the module it makes of ONNX `node` (`OnnxNode.unique_name` in onnx2torch
    1.5): torch forbids dots in module names, so they become slashes — `mobilenet_1.00_96/conv1` is
    `mobilenet_1/00_96/conv1` in the GraphModule."""
    return (f"{node.domain}/" + (node.name.replace(".", "/") or node.op_type)).lstrip("/")
