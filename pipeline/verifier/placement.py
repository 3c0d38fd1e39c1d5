"""Which tensor of the converted graph is each Keras layer's output — and how sure we are.

The one place that answers it. A claim "ONNX node n's output is Keras layer L's output" is made only
when it is *confirmed by value*: the conversion's graph, run in float64 (onnx2torch's GraphModule,
`.double()`), holds at n the layer's float64 output (Keras float64, from the rebuild) up to layout
(`in_keras_layout`) and to the rounding of the graph's own float32 weights
(`tolerances.placement_tolerance`). Names are never trusted: tf2onnx renames layers, splits them into
several ops, and folds a trained BatchNorm into the convolution before it — whose tensor, named after
the convolution, then *is* the BatchNorm's output. Found by value, such a tensor is the BatchNorm's,
and the convolution folded into it is compared there, as one group (`LayerPoint.fused`:
`conv2d + batch_normalization (folded)`).

Where the float64 rebuild is missing, the graph's float64 values are matched against Keras float32's
instead, to the layer comparison's own tolerance (`placed_by` says which).

The graph searched is the model's own conversion (`Artifacts.onnx_reference`, the onnx stage's
`model.onnx`) when another ONNX file is under test — a conversion with a planted fault holds the fault's
values, not the model's — and the placement is carried over to that file node for node (`counterparts`:
names from the model first, then the op sequence aligned); otherwise the file under test itself. A layer
whose value no tensor holds, or whose node the file under test lacks, is not compared, with the reason.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from dataclasses import dataclass, field

import numpy as np

from pipeline.common.tolerances import placement_tolerance, scaled_tolerance
from pipeline.converters.onnx_graph import torch_module_name
from pipeline.data import feeds
from pipeline.data.feeds import Layout
from pipeline.keras_file.graph import KerasLayer

KERAS, CHANNELS_FIRST = "keras", "channels_first"
MATCH_SAMPLES = 8  # inputs the graph runs on to place layers: a coincidence on all of them is out of reach
# A name tf2onnx made for a node of its own, numbered in creation order: `Conv__110`, `const_fold_opt__12`.
_COUNTER_NAME = re.compile(r".*__\d+")


@dataclass
class LayerPoint:
    """Where one Keras layer's output is in the graph under test, or why it is not compared."""

    layer: KerasLayer
    onnx_node: str | None = None  # the node of the graph under test whose first output holds it
    tensor: str | None = None  # that output's name
    layout: str = KERAS  # KERAS or CHANNELS_FIRST: how the tensor holds the Keras value
    note: str = ""
    fused: list[str] = field(default_factory=list)  # layers the converter folded into this tensor (before this one)
    shared_with: list[str] = field(default_factory=list)  # other layers whose output is this same tensor
    compared: bool = False  # placed, and the last of the layers sharing its tensor: its row is compared


@dataclass(frozen=True)
class _Hit:
    position: int  # the FX node's index in execution order
    onnx_node: str
    layout: str
    error: float = 0.0  # its max |Δ| from the Keras value, in that layout


def in_keras_layout(value: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """`value`, held in `layout`, as the Keras tensor of `shape` (None if the sizes differ): channels
    moved last if channels-first, then reshaped (size-1 axes, flattening). The one layout function."""
    if layout == CHANNELS_FIRST and value.ndim >= 3:
        value = np.moveaxis(value, 1, -1)
    return value.reshape(shape) if value.size == int(np.prod(shape)) else None


def _equal_layout(reference: np.ndarray, value: np.ndarray, tolerance: float) -> str | None:
    """The layout in which `value` equals `reference` to `tolerance`, or None. Where both do — values the
    same in either order, as a ReLU all zero on the matching inputs — the one that holds the reference's
    shape without a reshape: an NCHW tensor read as NHWC would fail on the inputs that are not zero."""
    found = []
    for order, layout in enumerate((KERAS, CHANNELS_FIRST) if value.ndim >= 3 else (KERAS,)):
        candidate = in_keras_layout(value, layout, reference.shape)
        if candidate is not None and np.abs(candidate - reference).max() <= tolerance:
            moved = np.moveaxis(value, 1, -1) if layout == CHANNELS_FIRST else value
            found.append((moved.shape != reference.shape, order, layout))
    return min(found)[2] if found else None


def tolerances(references: dict[str, np.ndarray], layer_noise: dict[str, float] | None) -> dict[str, float]:
    """{layer: how far the graph's float64 value may be from `references[layer]` and still be that layer}."""
    if layer_noise is None:  # float32 references: the layer comparison's own bound
        return {name: scaled_tolerance(float(np.abs(value).max())) for name, value in references.items()}
    return {name: placement_tolerance(float(np.abs(value).max()), layer_noise.get(name)) for name, value in references.items()}


def find(layers: list[KerasLayer], references: dict[str, np.ndarray], tolerance: dict[str, float], gm, proto,
         inputs: np.ndarray, layout: Layout | None = None) -> dict[str, _Hit]:
    """{layer: where its value is} in `proto`, whose GraphModule `gm` runs here in float64 on `inputs`
    (several inputs packed as `layout` says, where given: `feeds`).

    Args:
        layers: the Keras layers, in graph order.
        references: {layer: Keras output on `inputs`} (float64 where the rebuild exists).
        tolerance: {layer: the bound of `tolerances`}.
        gm: onnx2torch's GraphModule of `proto` (left as it is: a float64 copy runs here).
        proto: the ONNX graph (for its node names).
        inputs: at most MATCH_SAMPLES inputs.
    """
    import torch
    from torch import fx

    by_size: dict[int, list[str]] = {}
    for name, value in references.items():
        by_size.setdefault(value.size, []).append(name)
    nodes = {torch_module_name(node): node.name for node in proto.graph.node if node.output}
    hits: dict[str, list[_Hit]] = {name: [] for name in references}
    position = itertools.count()

    class Finder(fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            if node.op != "call_module" or node.target not in nodes:
                return result  # inputs, constants, getattr: not ops, so they take no position ("the op right after")
            index = next(position)
            if isinstance(result, torch.Tensor) and result.numel():
                value = result.detach().numpy()
                high, low = float(value.max()), float(value.min())
                for name in by_size.get(value.size, ()):
                    reference, bound = references[name], tolerance[name]
                    if abs(float(reference.max()) - high) <= bound and abs(float(reference.min()) - low) <= bound:
                        layout = _equal_layout(reference, value, bound)
                        if layout is not None:
                            error = float(np.abs(in_keras_layout(value, layout, reference.shape) - reference).max())
                            hits[name].append(_Hit(index, nodes[node.target], layout, error))
            return result

    try:
        with torch.inference_mode():
            Finder(_in_float64(gm)).run(*(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
                                                      for a in feeds.split(inputs, layout)))
    except Exception as exc:  # noqa: BLE001 — e.g. a float32 Cast inside the graph: nothing is placed, and the rows say why
        raise NotPlaced(f"the graph does not run in float64 ({' '.join(str(exc).split())[:160]})") from exc
    return _choose(layers, references, hits)


def _in_float64(gm):
    """A float64 copy of `gm`: its weights, and its casts to a floating dtype (a mixed-precision model's float16
    Casts around each layer, its float32 Cast before the softmax), which would take the values out of float64."""
    import torch
    from onnx2torch.node_converters.cast import OnnxCast

    twin = copy.deepcopy(gm).double()
    for module in twin.modules():
        if isinstance(module, OnnxCast) and module.torch_dtype.is_floating_point:
            module.torch_dtype = torch.float64
    return twin


class NotPlaced(Exception):
    """The graph could not be searched: no layer is placed (each row says why)."""


def _choose(layers: list[KerasLayer], references: dict[str, np.ndarray], hits: dict[str, list[_Hit]]) -> dict[str, _Hit]:
    """Of the tensors equal to a layer's output, the closest — the first of equals — computed after its inputs'
    places (its own op, a Flatten's Reshape), else its input's own (a layer that computes nothing shares it) — its input's own
    first for a nested model's row after its own layers. A constant
    output, which many tensors may equal by coincidence, only at its input's place or the op right after.
    A layer not placed (folded into a later one) passes its inputs' place on to its consumers."""
    placed: dict[str, _Hit] = {}
    reached: dict[str, int] = {}  # layer -> the position its output is known to be computed by
    for layer in layers:
        after = max((reached[name] for name in layer.inbound if name in reached), default=-1)
        found = hits.get(layer.name, [])
        later = [hit for hit in found if hit.position > after] + [hit for hit in found if hit.position == after]
        nested = layer.inbound and all(name.startswith(f"{layer.name}/") for name in layer.inbound)
        if nested:
            # a nested model laid out as its own layers (`graph.with_nested`) computes nothing after them: its
            # output is its last layer's tensor, not a later one that happens to equal it (a residual add
            # of a block that adds almost nothing, as ConvNeXt's LayerScale at 1e-6 does)
            later = [hit for hit in found if hit.position == after] + [hit for hit in found if hit.position > after]
        if layer.name in references and float(np.ptp(references[layer.name])) == 0.0:
            later = [hit for hit in later if hit.position in (after, after + 1)]
        if later:
            # else the closest, the first of equals: within a float16 model's wide bound a Dense's MatMul equals its
            # output before the bias is added (a float32 bound leaves ≥ 3,000× between the right tensor and any other)
            placed[layer.name] = later[0] if nested else min(later, key=lambda hit: (hit.error, later.index(hit)))
        reached[layer.name] = placed[layer.name].position if layer.name in placed else after
    return placed


def counterparts(proto_from, proto_to) -> dict:
    """{node name of `proto_from`: the same node of `proto_to`}, for two conversions of one architecture.

    tf2onnx writes two such graphs alike, but not always node for node: it may order sibling branches
    differently (NASNetMobile: `reduction_add3` before `reduction_add_2` in one graph, after it in the
    other), its optimizers may leave one more op in one of them (EfficientNetB0: a Reshape in one
    squeeze-excite block), and the names of the nodes it makes carry counters (`Conv__110`) that then
    point at different nodes. So a node whose name comes from the model (no counter) pairs with the node
    of that name; the others by aligning the two op-type sequences (the longest matching blocks), among
    nodes not paired by name. A node left over has no counterpart — never paired with another node."""
    nodes_from, nodes = [n for n in proto_from.graph.node if n.output], [n for n in proto_to.graph.node if n.output]
    named = {n.name: n for n in nodes if n.name and not _COUNTER_NAME.fullmatch(n.name)}
    pairs = {n.name: named[n.name] for n in nodes_from if n.name in named}
    taken = {id(node) for node in pairs.values()}
    matcher = difflib.SequenceMatcher(None, [n.op_type for n in nodes_from], [n.op_type for n in nodes], autojunk=False)
    for block in matcher.get_matching_blocks():
        for a, b in zip(nodes_from[block.a: block.a + block.size], nodes[block.b: block.b + block.size], strict=True):
            if a.name not in pairs and id(b) not in taken:
                pairs[a.name] = b
                taken.add(id(b))
    return pairs


def place(layers: list[KerasLayer], references: dict[str, np.ndarray], layer_noise: dict[str, float] | None,
          searched, proto_under_test, inputs: np.ndarray, layout: Layout | None = None) -> list[LayerPoint]:
    """Every Keras layer's point in `proto_under_test` (see the module docstring).

    Args:
        layers: the Keras layers, in graph order.
        references: {layer: Keras output on `inputs`}: float64 where the rebuild exists, else float32.
        layer_noise: {layer: Keras float32's own error against float64 there} with float64 references;
            None with float32 ones.
        searched: (GraphModule, ONNX graph) placed by value: the model's own conversion, or the one under test.
        proto_under_test: the ONNX graph whose tensors are compared; the placement is carried over to it
            where it is not `searched`'s graph.
        inputs: the inputs `references` were computed on (the first MATCH_SAMPLES are used); a layer
            missing from `references` has no Keras output of its own (an op in the config).
        layout: the model's several inputs, packed in `inputs` (`feeds`); None for one.
    """
    gm, proto_searched = searched
    count = min(MATCH_SAMPLES, len(inputs))
    wanted = {layer.name: references[layer.name][:count] for layer in layers
              if layer.name in references and references[layer.name].size and layer.class_name != "InputLayer"}
    try:
        placed, why_none = find(layers, wanted, tolerances(wanted, layer_noise), gm, proto_searched, inputs[:count], layout), ""
    except NotPlaced as exc:
        placed, why_none = {}, f"{exc}: not compared"
    searched_itself = proto_searched is proto_under_test
    nodes = {n.name: n for n in proto_under_test.graph.node} if searched_itself else counterparts(proto_searched, proto_under_test)
    consumers: dict[str, list[str]] = {}
    for layer in layers:
        for name in layer.inbound:
            consumers.setdefault(name, []).append(layer.name)
    graph_inputs = [i.name for i in proto_under_test.graph.input]
    points = []
    for layer in layers:
        hit = placed.get(layer.name)
        if layer.class_name == "InputLayer" or not layer.inbound:  # several inputs keep their Keras names (`tf_side.to_onnx`)
            points.append(LayerPoint(layer, None, layer.name if layer.name in graph_inputs else graph_inputs[0]))
        elif hit is not None and hit.onnx_node in nodes:
            node = nodes[hit.onnx_node]
            points.append(LayerPoint(layer, node.name, node.output[0], hit.layout, note="placed by value"))
        elif layer.name not in wanted:
            points.append(LayerPoint(layer, note=NO_KERAS_OUTPUT))
        elif why_none:
            points.append(LayerPoint(layer, note=why_none))
        elif hit is not None:
            points.append(LayerPoint(layer, note=f"its value is at {hit.onnx_node} of the model's own conversion, a node the "
                                                 "ONNX file under test lacks: not compared"))
        else:
            points.append(LayerPoint(layer, note=NOT_FOUND))
    _mark_shared(points)
    _fold(points, consumers)
    return points


NOT_FOUND = "no tensor of the converted graph holds its value: not compared"


def _fold(points: list[LayerPoint], consumers: dict[str, list[str]]) -> None:
    """Each layer no tensor holds, whose single-consumer chain leads to a compared layer (Conv → BatchNorm:
    the BatchNorm's scale folded into the Conv's weights; padding → Conv), listed on that layer's row as
    folded into it. The chain stops at a layer not compared: a group is only ever named where it is compared."""
    by_name = {point.layer.name: point for point in points}
    for point in points:
        if point.note != NOT_FOUND:
            continue
        name = point.layer.name
        while len(consumers.get(name, ())) == 1:
            name = consumers[name][0]
            target = by_name[name]
            if target.tensor is not None and target.onnx_node is not None:
                if not target.compared:  # shares its tensor with a later layer, which is the compared row
                    target = next(p for p in points if p.tensor == target.tensor and p.compared)
                target.fused.append(point.layer.name)
                point.note = f"folded by the converter into {target.layer.name}: no tensor of its own, compared with it"
                break
            if target.note != NOT_FOUND:
                break


# An op in the model config (`x + 3.0`) that is not one of Keras's `model.layers`: there is no Keras output
# to compare it with; the layer that consumes it checks it.
NO_KERAS_OUTPUT = "Keras gives no output of its own for it (an op in the config, not one of the model's layers): not compared"


def _mark_shared(points: list[LayerPoint]) -> None:
    """Layers whose outputs are one tensor share it: each learns the others', the last one is compared."""
    by_tensor: dict[str, list[LayerPoint]] = {}
    for point in points:
        if point.tensor is not None and point.layer.class_name != "InputLayer" and point.onnx_node is not None:
            by_tensor.setdefault(point.tensor, []).append(point)
    for group in by_tensor.values():  # each group is in topological order
        names = [p.layer.name for p in group]
        for point in group:
            point.shared_with = [n for n in names if n != point.layer.name]
        group[-1].compared = True
