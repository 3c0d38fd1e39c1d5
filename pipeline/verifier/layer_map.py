"""Map each Keras layer to the tensor that holds its output in the ONNX graph and the FX graph.

Names cannot be trusted (Keras 3 and tf2onnx rename layers), so the map follows the graph: starting
from the tensors of a layer's inputs, it walks forward through layout-only ops (Transpose, Pad, ...)
to the first op of the kind that layer becomes (`OP_SPECS`), and extends through what the converter
splits off (a bias or BatchNorm `Add` with a constant, the activation inside a Conv or Dense). Where
two candidate ops fit (branches of a residual block), the one whose weights are closest to the Keras
layer's — compared as sorted values, so a perturbed or permuted kernel still finds its layer — wins.

A layer the converter folded into its neighbour (BatchNorm into Conv) or dropped has no op of its own:
it is mapped to its input's tensor and *shares* that comparison point with it. Each shared point is
compared once, at the last layer that has it, and the report says which layers share it. Padding
folded into the next convolution has no tensor of its own: it is walked through, never compared.

Where the converter wrote a layer as several ops (swish, GELU, Keras 2's hard sigmoid), the layer's
output is the single tensor that closes the ops in its own name scope (`_scoped_region`). A layer the
walk cannot place is left unmapped (reported, not compared); a later Conv or Dense is found again by
its weights, so one unknown layer does not blind the rest of the map.

Layouts: Keras is NHWC; the ONNX graph is NCHW after its first Transpose. Each tensor's layout is
tracked through the Transposes the walk passes, so comparisons know when to permute.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pipeline.converters.onnx_graph import layer_owners
from pipeline.keras_file.graph import KerasLayer

KERAS, CHANNELS_FIRST = "keras", "channels_first"
# Ops that move or reshape data without computing: the walk passes through them.
LAYOUT_OPS = frozenset({"Transpose", "Identity", "Pad", "Cast", "Squeeze", "Unsqueeze", "Dropout"})
ACTIVATION_OPS = {
    "relu": {"Relu"}, "sigmoid": {"Sigmoid"}, "tanh": {"Tanh"}, "softmax": {"Softmax"}, "elu": {"Elu"},
    "selu": {"Selu"}, "softplus": {"Softplus"}, "relu6": {"Clip"}, "hard_sigmoid": {"HardSigmoid"},
    # No single ONNX op below opset 20: found as the ops in the layer's scope (`_scoped_region`).
    "swish": {"Swish"}, "silu": {"Swish"}, "gelu": {"Gelu"}, "leaky_relu": {"LeakyRelu"}, "linear": set(),
}
_TO_CHANNELS_FIRST = ((0, 3, 1, 2), (0, 2, 1), (0, 4, 1, 2, 3))
_TO_KERAS = ((0, 2, 3, 1), (0, 2, 1), (0, 2, 3, 4, 1))


@dataclass(frozen=True)
class OpSpec:
    """How a Keras layer class shows up in ONNX."""

    ops: frozenset[str]  # the op that starts it; empty: the layer computes nothing (Dropout, InputLayer)
    weight: str | None = None  # Keras weight that tells branches apart
    bias_add: bool = False  # an Add with a constant may follow (bias, BatchNorm's shift)
    inner_activation: bool = False  # the config's `activation` is applied inside the layer


OP_SPECS: dict[str, OpSpec] = {}


def register(*class_names: str, **spec):
    """Register the ONNX appearance of Keras layer classes (a registry, one place to extend)."""
    for name in class_names:
        OP_SPECS[name] = OpSpec(**{**spec, "ops": frozenset(spec.get("ops", ()))})


register("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Conv2DTranspose", ops={"Conv", "ConvTranspose"}, weight="kernel",
         bias_add=True, inner_activation=True)
register("Dense", ops={"MatMul", "Gemm"}, weight="kernel", bias_add=True, inner_activation=True)
register("BatchNormalization", ops={"Mul", "BatchNormalization"}, bias_add=True)
register("Add", ops={"Add", "Sum"})
register("Subtract", ops={"Sub"})
register("Multiply", ops={"Mul"})
register("Concatenate", ops={"Concat"})
register("AveragePooling1D", "AveragePooling2D", ops={"AveragePool"})
register("MaxPooling1D", "MaxPooling2D", ops={"MaxPool"})
register("GlobalAveragePooling1D", "GlobalAveragePooling2D", ops={"GlobalAveragePool", "ReduceMean"})
register("GlobalMaxPooling1D", "GlobalMaxPooling2D", ops={"GlobalMaxPool", "ReduceMax"})
register("Flatten", "Reshape", ops={"Reshape", "Flatten"})
register("ReLU", ops={"Relu", "Clip"})
register("LeakyReLU", ops={"LeakyRelu"})
register("Softmax", ops={"Softmax"})
register("Cropping1D", "Cropping2D", ops={"Slice"})
register("UpSampling1D", "UpSampling2D", ops={"Resize", "Upsample"})
register("ZeroPadding1D", "ZeroPadding2D", ops={"Pad"})
register("InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", ops=())
# Shape-keeping classes a converter may fold into the op before them (BatchNorm into a Conv): when no
# op of theirs is found, they share their input's tensor and are compared there — so a dropped ReLU
# shows as a divergence at the ReLU itself.
FOLDED_BACKWARD = frozenset({"BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"})
# Classes a converter may fold into the op after them (a Conv's pads): no tensor of their own.
FOLDED_FORWARD = frozenset({"ZeroPadding1D", "ZeroPadding2D"})
# Ops a multi-op layer's region never includes: they change layout or shape, which the map tracks elsewhere.
_NOT_IN_REGION = LAYOUT_OPS | {"Reshape", "Flatten", "Shape", "Concat", "Slice", "Gather", "Tile", "Expand"}
# ...except for layers that only move data, which converters write as such ops (UpSampling2D as
# Unsqueeze, Tile, Transpose, Reshape); their region may hold these.
_MOVE_OPS = frozenset({"Unsqueeze", "Squeeze", "Tile", "Expand", "Transpose", "Reshape", "Identity"})
MOVING_CLASSES = frozenset({"UpSampling1D", "UpSampling2D", "UpSampling3D", "Permute"})


@dataclass
class LayerPoint:
    """Where one Keras layer's output is found in the ONNX graph."""

    layer: KerasLayer
    tensor: str | None  # ONNX tensor name; None if the walk could not reach the layer
    layout: str = KERAS
    onnx_node: str | None = None  # the node producing `tensor`
    own_op: bool = True  # False: folded or missing; the layer shares its input's tensor
    note: str = ""
    shared_with: list[str] = field(default_factory=list)  # other layers whose output is this same tensor
    compared: bool = False  # mapped, and the last of the layers sharing its tensor: its row is compared
    walk_only: bool = False  # folded into the next op: `tensor` is where the walk goes on from, not its output
    inferred: bool = False  # placed by name scope (`_scoped_region`), not by structure: a shape mismatch means a wrong guess
    fused_into: str | None = None  # the layer the converter fused this one into (placed by value: `value_map`)
    by_value: bool = False  # placed by value: `layout` is exact (`value_map.in_keras_layout`), not inferred


class OnnxGraph:
    """Producers, consumers and constants of an ONNX graph, for walking it."""

    def __init__(self, proto, layers: list[KerasLayer] = ()):
        from onnx import numpy_helper

        self.proto = proto
        self.nodes = list(proto.graph.node)
        self.order = {id(n): i for i, n in enumerate(self.nodes)}
        self.initializers = {init.name: init for init in proto.graph.initializer}
        self._numpy_helper = numpy_helper
        self.constants = set(self.initializers)
        for node in self.nodes:
            if node.op_type == "Constant":
                self.constants.update(node.output)
        # Shape plumbing (Shape → Slice → Concat → Reshape's shape input) depends on no data value:
        # like a constant, it is not where a layer's data comes from. tf2onnx leaves it in some runs.
        self.shape_tensors: set[str] = set()
        for node in self.nodes:
            if node.op_type == "Shape" or all(name in self.constants or name in self.shape_tensors for name in node.input if name):
                self.shape_tensors.update(node.output)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.class_of = {layer.name: layer.class_name for layer in layers}
        self._owners = layer_owners([node.name for node in self.nodes], [layer.name for layer in layers])

    def layer_of(self, node) -> str | None:
        """The Keras layer whose name scope `node` is in (a hint, used only to bound searches)."""
        return self._owners.get(node.name)

    def dynamic_inputs(self, node) -> list[str]:
        """The inputs that carry data (not constants, not shape plumbing)."""
        return [name for name in node.input if name and name not in self.constants and name not in self.shape_tensors]

    def constant_value(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return self._numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return self._numpy_helper.to_array(node.attribute[0].t)
        return None

    def reachable(self, tensor: str, layout: str) -> dict[str, str]:
        """Tensors reached from `tensor` through layout-only ops, with their layouts."""
        found, todo = {tensor: layout}, [tensor]
        while todo:
            current = todo.pop()
            for node in self.consumers.get(current, ()):
                if node.op_type not in LAYOUT_OPS or len(node.output) != 1:
                    continue
                out_layout = found[current]
                if node.op_type == "Transpose":
                    perm = tuple(next(a.ints for a in node.attribute if a.name == "perm"))
                    out_layout = CHANNELS_FIRST if perm in _TO_CHANNELS_FIRST else KERAS if perm in _TO_KERAS else out_layout
                if node.output[0] not in found:
                    found[node.output[0]] = out_layout
                    todo.append(node.output[0])
        return found


def _weight_distance(keras_weight: np.ndarray | None, onnx_weight: np.ndarray | None) -> float:
    """Distance of two weight tensors as sorted values: blind to layout and to a permuted kernel."""
    if keras_weight is None or onnx_weight is None or keras_weight.size != onnx_weight.size:
        return float("inf")
    a, b = np.sort(keras_weight.ravel()), np.sort(onnx_weight.ravel())
    return float(np.linalg.norm(a - b) / (np.linalg.norm(a) + 1e-12))


def _follow(graph: OnnxGraph, tensor: str, layout: str, ops: set[str], need_constant: bool):
    """The single consumer of `tensor` (through layout ops) whose op is in `ops`; with a constant input if asked."""
    for candidate, candidate_layout in graph.reachable(tensor, layout).items():
        consumers = graph.consumers.get(candidate, [])
        if len(consumers) != 1 or consumers[0].op_type not in ops:
            continue
        node = consumers[0]
        has_constant = any(name in graph.constants for name in node.input)
        if need_constant == has_constant and len(graph.dynamic_inputs(node)) == 1:
            return node, candidate_layout
    return None, layout


def _scoped_region(graph: OnnxGraph, tensor: str, layout: str, layer: str, moves: bool = False) -> tuple[str, str] | None:
    """The one tensor that closes the ops of `layer`'s name scope fed by `tensor`, or None.

    Grows, in graph order, the set of nodes named after `layer` (see `onnx_graph.keras_layer_of`)
    whose data inputs all come from `tensor` or from nodes already in the set; the layer's output is
    the set's only tensor that no node in the set consumes, with its layout. Names only bound the
    search here: the values are still compared afterwards. With `moves`, the set may hold data-moving
    ops (`_MOVE_OPS`); a region ending in a Reshape is in Keras's layout (tf2onnx reshapes in Keras order).
    """
    reach = graph.reachable(tensor, layout)
    region = set(reach)
    produced: list[str] = []
    for node in graph.nodes:
        owner = graph.layer_of(node)
        if node.op_type in _NOT_IN_REGION and not (moves and node.op_type in _MOVE_OPS):
            continue
        if owner != layer and not (moves and owner is None):  # a moving layer's Transposes may be the optimizer's, unnamed
            continue
        dynamic = graph.dynamic_inputs(node)
        if dynamic and all(name in region for name in dynamic):
            if not produced:  # the region's entry: its layout is the region's (elementwise ops keep it)
                layout = next(reach[name] for name in dynamic if name in reach)
            region.update(node.output)
            produced.extend(node.output)
    mine = set(produced)
    consumed = {name for node in graph.nodes if mine.intersection(node.output) for name in node.input}
    sinks = [name for name in produced if name not in consumed]
    if len(sinks) != 1:
        return None
    if graph.producer[sinks[0]].op_type == "Reshape":
        layout = KERAS
    return sinks[0], layout


def _by_weight(graph: OnnxGraph, ops: set[str], keras_weight: np.ndarray | None, claimed: set[int]):
    """The unclaimed node of `ops` holding exactly `keras_weight` (as sorted values), or None."""
    if keras_weight is None:
        return None
    best = min(((_weight_distance(keras_weight, graph.constant_value(name)), graph.order[id(node)], node)
                for node in graph.nodes if node.op_type in ops and id(node) not in claimed
                for name in node.input if name in graph.constants), default=None, key=lambda t: t[:2])
    return best[2] if best is not None and best[0] < 1e-6 else None


def map_onnx(layers: list[KerasLayer], proto, weights: dict[str, dict[str, np.ndarray]]) -> list[LayerPoint]:
    """Find every Keras layer's output tensor in the ONNX graph (see the module docstring)."""
    graph = OnnxGraph(proto, layers)
    points: dict[str, LayerPoint] = {}
    claimed: set[int] = set()  # ids of the nodes already some layer's own
    for layer in layers:
        points[layer.name] = _place(graph, layer, points, weights, claimed)
    result = [points[layer.name] for layer in layers]
    mark_shared(result)
    return result


def _place(graph: OnnxGraph, layer: KerasLayer, points: dict[str, LayerPoint], weights: dict[str, dict[str, np.ndarray]],
           claimed: set[int]) -> LayerPoint:
    """One layer's point, given its inputs' points: the first strategy that applies places it."""
    if layer.class_name == "InputLayer" or not layer.inbound:
        return LayerPoint(layer, graph.proto.graph.input[0].name, KERAS, None)
    spec = OP_SPECS.get(layer.class_name)
    if layer.class_name == "Activation":
        ops = ACTIVATION_OPS.get(layer.activation or "", {"?"})  # "linear": empty, computes nothing
    else:
        ops = set(spec.ops) if spec else set()  # no spec: unknown here, only `_not_found` can place it
    keras_weight = weights.get(layer.name, {}).get(spec.weight) if spec is not None and spec.weight else None
    inbound = [points.get(name) for name in layer.inbound]
    if any(p is None or p.tensor is None for p in inbound):
        return _refound_by_weight(graph, layer, spec, ops, keras_weight, claimed)
    if not ops and (spec is not None or layer.class_name == "Activation"):  # Dropout, linear Activation
        first = inbound[0]
        return LayerPoint(layer, first.tensor, first.layout, first.onnx_node, own_op=False,
                          note=f"{layer.class_name} computes nothing at inference")
    return _after_inputs(graph, layer, spec, ops, inbound, keras_weight, claimed)


def _refound_by_weight(graph: OnnxGraph, layer: KerasLayer, spec: OpSpec | None, ops: set[str], keras_weight,
                       claimed: set[int]) -> LayerPoint:
    """A layer after an input that could not be placed: found again by its weights, if it has any."""
    node = _by_weight(graph, ops, keras_weight, claimed)
    if node is None:
        return LayerPoint(layer, None, note="an input of this layer could not be mapped")
    claimed.add(id(node))
    layout = CHANNELS_FIRST if node.op_type in {"Conv", "ConvTranspose"} else KERAS
    return _extend(graph, layer, spec, node, layout, claimed, note="found by its weights")


def _after_inputs(graph: OnnxGraph, layer: KerasLayer, spec: OpSpec | None, ops: set[str], inbound: list[LayerPoint],
                  keras_weight, claimed: set[int]) -> LayerPoint:
    """The unclaimed op of the layer's kind fed by all of its inputs (through layout ops) and by nothing
    else; of several, the one whose weights are closest to the layer's. `_not_found` if there is none."""
    reach = [graph.reachable(p.tensor, p.layout) for p in inbound]

    def fed_by_inputs(node) -> bool:
        dynamic = graph.dynamic_inputs(node)
        return (bool(dynamic) and all(any(t in r for t in dynamic) for r in reach)
                and all(any(t in r for r in reach) for t in dynamic))

    candidates = [node for node in graph.nodes if node.op_type in ops and id(node) not in claimed and fed_by_inputs(node)]
    if not candidates:
        return _not_found(graph, layer, ops, inbound, keras_weight, claimed)
    if keras_weight is not None and len(candidates) > 1:
        candidates.sort(key=lambda n: _weight_distance(
            keras_weight, next((graph.constant_value(i) for i in n.input if i in graph.constants), None)))
    node = candidates[0]
    claimed.add(id(node))
    layout = next((r[t] for t in graph.dynamic_inputs(node) for r in reach if t in r), KERAS)
    if node.op_type in {"Reshape", "Flatten", "MatMul", "Gemm"}:
        layout = KERAS  # tf2onnx transposes back to Keras order before a Reshape; MatMul works on rank 2
    return _extend(graph, layer, spec, node, layout, claimed)


def mark_shared(points: list[LayerPoint]) -> None:
    """Layers whose outputs are one tensor share it: each learns the others', the last one is compared."""
    by_tensor: dict[str, list[LayerPoint]] = defaultdict(list)
    for point in points:
        if point.tensor is not None and point.layer.class_name != "InputLayer" and not point.walk_only:
            by_tensor[point.tensor].append(point)
    for group in by_tensor.values():  # each group is in topological order
        names = [p.layer.name for p in group]
        for point in group:
            point.shared_with = [n for n in names if n != point.layer.name]
        group[-1].compared = True


def _extend(graph: OnnxGraph, layer: KerasLayer, spec: OpSpec | None, node, layout: str, claimed: set[int],
            note: str = "") -> LayerPoint:
    """The layer's point at `node`, extended through what the converter split off after it: the crop of
    a re-padded ConvTranspose (`onnx_fixes`), a bias or BatchNorm `Add`, the activation inside."""
    tensor = node.output[0]
    if node.op_type == "ConvTranspose":
        follower, _ = _follow(graph, tensor, layout, {"Slice"}, need_constant=True)
        if follower is not None:
            claimed.add(id(follower))
            node, tensor = follower, follower.output[0]
    if spec is not None and spec.bias_add:
        follower, _ = _follow(graph, tensor, layout, {"Add"}, need_constant=True)
        owner = graph.layer_of(follower) if follower is not None else None
        if owner not in (None, layer.name) and graph.class_of.get(owner) != "BatchNormalization":
            follower = None  # the next layer's own Add (a zero bias is dropped by the converter)
        if follower is not None:
            claimed.add(id(follower))
            node, tensor = follower, follower.output[0]
    if spec is not None and spec.inner_activation and (layer.activation or "linear") != "linear":
        follower, layout_after = _follow(graph, tensor, layout, ACTIVATION_OPS.get(layer.activation, {"?"}), need_constant=False)
        if follower is not None:
            claimed.add(id(follower))
            node, tensor, layout = follower, follower.output[0], layout_after
    return LayerPoint(layer, tensor, layout, node.name, note=note)


def _not_found(graph: OnnxGraph, layer: KerasLayer, ops: set[str], inbound: list[LayerPoint], keras_weight,
               claimed: set[int]) -> LayerPoint:
    """A layer whose op the walk did not find after its input: folded, written as several ops, or lost."""
    first = inbound[0]
    wanted = "/".join(sorted(ops)) or "ONNX"
    if layer.class_name in FOLDED_FORWARD:
        return LayerPoint(layer, first.tensor, first.layout, first.onnx_node, own_op=False, walk_only=True,
                          note="folded into the next op's padding: no tensor of its own, not compared")
    if len(inbound) == 1:
        found = _scoped_region(graph, first.tensor, first.layout, layer.name, moves=layer.class_name in MOVING_CLASSES)
        if found is not None:
            tensor, layout = found
            return LayerPoint(layer, tensor, layout, graph.producer[tensor].name, note="written as several ops", inferred=True)
    if layer.class_name in FOLDED_BACKWARD:
        return LayerPoint(layer, first.tensor, first.layout, first.onnx_node, own_op=False,
                          note=f"no {wanted} op of its own after {first.layer.name}: folded or missing")
    node = _by_weight(graph, ops, keras_weight, claimed)
    if node is not None:
        claimed.add(id(node))
        layout = CHANNELS_FIRST if node.op_type in {"Conv", "ConvTranspose"} else KERAS
        return _extend(graph, layer, OP_SPECS.get(layer.class_name), node, layout, claimed, note="found by its weights")
    return LayerPoint(layer, None, note=f"no {wanted} op found after {first.layer.name}; not compared")


def to_keras_layout(value: np.ndarray, layout: str) -> np.ndarray:
    """A backend tensor in Keras's (channels-last) layout."""
    if layout != CHANNELS_FIRST or value.ndim < 3:
        return value
    return np.moveaxis(value, 1, -1)

