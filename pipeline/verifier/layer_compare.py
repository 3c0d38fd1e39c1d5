"""Layer by layer: where does a conversion part from Keras, in which backend, by how much?

Every Keras layer's output (from the TensorFlow process) is compared with the same tensor in ONNX
Runtime, in onnx2torch's FX graph and, where it applies, in the hand-written model, on a few hundred
test images and random inputs. The first layer (in topological order) out of tolerance in any backend
is the *first divergence*, named by the layer names of the user's .h5.

Never a false alarm from a wrong placement: where the float64 rebuild's conversion is there, each
layer is placed by value (`value_map`: the tensor of the float64 graph equal to Keras float64's layer
output) — no heuristics. A layer the converter fused into the next (a Conv into its BatchNorm) has no
tensor of its own: it is checked at that next layer, and the row says so (`fused`). Without the
float64 conversion, the graph walk of `layer_map` places layers, and a shape mismatch withdraws a guess.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline.common.errors import BadInput, NotApplicable
from pipeline.converters.onnx_graph import torch_module_name
from pipeline.common.tolerances import LAYER_ATOL, LAYER_RTOL, scaled_tolerance, with_noise
from pipeline.data import checkset
from pipeline.keras_file.model import KerasModel
from pipeline.runtimes import ort
from pipeline.verifier import layer_map, value_map
from pipeline.verifier.backends import Sources


@dataclass
class LayerDiff:
    backend: str
    max_abs_diff: float
    scale: float  # max |Keras output| of this layer
    tolerance: float  # tolerances.scaled_tolerance(scale), widened by the layer's own float32 noise where measured
    passed: bool
    note: str = ""


@dataclass
class LayerRow:
    keras_layer: str
    keras_class: str
    onnx_node: str | None
    fx_node: str | None
    manual_module: str | None
    compared: bool
    shared_with: list[str]
    note: str
    diffs: list[LayerDiff] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)  # layers the converter fused into this one: checked here

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.diffs)


@dataclass
class LayerReport:
    rows: list[LayerRow]
    images: int
    backends: list[str]
    manual_note: str = ""
    placed_by: str = "graph walk"  # how layers were found in the graph: "float64 value" or "graph walk"

    @property
    def first_divergence(self) -> dict | None:
        for row in self.rows:
            for diff in row.diffs:
                if not diff.passed:
                    return {"keras_layer": row.keras_layer, "fused": row.fused, "backend": diff.backend, "onnx_node": row.onnx_node,
                            "fx_node": row.fx_node, "max_abs_diff": diff.max_abs_diff, "tolerance": diff.tolerance}
        return None

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def as_dict(self) -> dict:
        return {"passed": self.passed, "images": self.images, "backends": self.backends, "manual_note": self.manual_note,
                "placed_by": self.placed_by,
                "atol": LAYER_ATOL, "rtol": LAYER_RTOL, "first_divergence": self.first_divergence,
                "layers": [asdict(row) | {"passed": row.passed} for row in self.rows]}


def _onnxruntime_tensors(proto, names: list[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.session(proto, names)
    input_name = session.get_inputs()[0].name
    parts = [session.run(names, {input_name: batch}) for batch in checkset.batches(inputs, checkset.TEST_BATCH_SIZE)]
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


def _fx_tensors(gm, modules: set[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the FX nodes calling `modules` (onnx2torch's names of ONNX nodes: `onnx_graph.torch_module_name`)."""
    import torch
    from torch import fx

    captured: dict[str, list[np.ndarray]] = {name: [] for name in modules}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            if node.op == "call_module" and node.target in captured and isinstance(result, torch.Tensor):
                captured[node.target].append(result.numpy().copy())
            return result

    with torch.inference_mode():
        for batch in checkset.batches(inputs, checkset.TEST_BATCH_SIZE):
            Recorder(gm).run(torch.from_numpy(np.ascontiguousarray(batch)))
    return {name: np.concatenate(parts) for name, parts in captured.items() if parts}


def _manual_tensors(model, modules: dict[str, str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the hand-written model's submodules (NCHW for rank 4), keyed by module path."""
    import torch

    captured: dict[str, list[np.ndarray]] = {path: [] for path in set(modules.values())}
    handles = [model.get_submodule(path).register_forward_hook(
        lambda _m, _i, out, path=path: captured[path].append(out.numpy().copy())) for path in captured]
    try:
        with torch.inference_mode():
            for batch in checkset.batches(inputs, checkset.TEST_BATCH_SIZE):
                model(torch.from_numpy(np.ascontiguousarray(batch)))
    finally:
        for handle in handles:
            handle.remove()
    return {path: np.concatenate(parts) for path, parts in captured.items()}


def _native_tensors(sources: Sources, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """{Keras layer: the native model's output there, channels-last}, by the names its source states (`native.load`)."""
    from pipeline.native import load

    model, module = sources.native
    parts = [load.layer_outputs(model, module, batch) for batch in checkset.batches(inputs, checkset.TEST_BATCH_SIZE)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


WRONG_SHAPE = "a tensor of another shape than the Keras layer's"
# An op in the model config (`x + 3.0`) that is not one of Keras's `model.layers`: there is no Keras output
# to compare it with; the layer that consumes it checks it.
NO_KERAS_OUTPUT = "Keras gives no output of its own for it (an op in the config, not one of the model's layers): not compared"


def _diff(backend: str, reference: np.ndarray, value: np.ndarray | None, layout: str, noise: float | None = None,
          by_value: bool = False) -> LayerDiff:
    """`value` against `reference`; `by_value`: `layout` was established by value (`value_map`), so it is
    applied exactly, with none of the guesses a graph-walk placement needs (`_guess_keras_layout`)."""
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    tolerance = with_noise(scaled_tolerance(scale), noise)
    if value is None:
        return LayerDiff(backend, float("inf"), scale, tolerance, False, "tensor not produced")
    value = value_map.in_keras_layout(value, layout, reference.shape) if by_value else _guess_keras_layout(value, layout, reference.shape)
    if value is None or value.shape != reference.shape:
        return LayerDiff(backend, float("inf"), scale, tolerance, False, WRONG_SHAPE)
    delta = float(np.abs(value.astype(np.float64) - reference).max()) if reference.size else 0.0
    return LayerDiff(backend, delta, scale, tolerance, delta <= tolerance)


def _guess_keras_layout(value: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """A graph-walk placement's tensor in Keras's layout: its traced layout, else the guesses that fit `shape`."""
    value = layer_map.to_keras_layout(value, layout)
    if value.shape != shape and value.ndim >= 3 and np.moveaxis(value, 1, -1).shape == shape:
        value = np.moveaxis(value, 1, -1)  # channels first after all (a multi-op layer's layout is inferred, not traced)
    if value.shape != shape and _squeezed(value.shape) == _squeezed(shape):
        value = value.reshape(shape)  # e.g. a Conv1D, which the converter runs as a Conv over (N, C, 1, W)
    return value


def placed_by_value(keras: KerasModel, sources: Sources, layers_f64: dict[str, np.ndarray],
                    inputs: np.ndarray) -> list[layer_map.LayerPoint]:
    """Every layer's comparison point in `sources.onnx_proto`, found by value in the float64 rebuild's
    conversion (`value_map`) and carried over to the float32 graph node for node (`_counterparts`). A layer
    whose output no tensor holds is not compared, with the reason: fused by the converter into the layer
    after it, an op Keras gives no output for, or not found."""
    import onnx

    proto_f64 = onnx.load(str(sources.artifacts.onnx_f64))
    placements = value_map.place(keras.layers, layers_f64, sources.graph_module_f64, proto_f64, inputs)
    counterpart = _counterparts(proto_f64, sources.onnx_proto)
    consumers: dict[str, list[str]] = {}
    for layer in keras.layers:
        for name in layer.inbound:
            consumers.setdefault(name, []).append(layer.name)
    points = []
    for layer in keras.layers:
        placement = placements.get(layer.name)
        if layer.class_name == "InputLayer" or not layer.inbound:
            points.append(layer_map.LayerPoint(layer, sources.onnx_proto.graph.input[0].name))
        elif placement is not None and placement.onnx_node in counterpart:
            node = counterpart[placement.onnx_node]
            points.append(layer_map.LayerPoint(layer, node.output[0], placement.layout, node.name,
                                               note="placed by its float64 value", by_value=True))
        elif layer.name not in layers_f64:
            points.append(layer_map.LayerPoint(layer, None, note=NO_KERAS_OUTPUT))
        elif placement is not None:
            points.append(layer_map.LayerPoint(layer, None, note=f"placed at {placement.onnx_node} by its float64 value, "
                                                                 f"a node {sources.artifacts.onnx} lacks: not compared"))
        else:
            into = _fused_into(layer.name, consumers, placements)
            points.append(layer_map.LayerPoint(layer, None, own_op=False, fused_into=into, note=(
                f"fused by the converter into {into}: no tensor of its own, checked at {into}" if into else
                "no tensor of the converted graph holds its float64 output (rewritten across layers): not compared")))
    layer_map.mark_shared(points)
    return points


def fused_phrase(fused: list[str]) -> str:
    """How the reports name the layers fused into a compared one: " (conv fused into it)", or "" for none."""
    return f" ({', '.join(fused)} fused into it)" if fused else ""


def _counterparts(proto_f64, proto) -> dict:
    """{float64 graph node name: the same node of `proto`}. tf2onnx writes the two graphs alike, but not
    node for node: it may order sibling branches differently (NASNetMobile: `reduction_add3` before
    `reduction_add_2` in one graph, after it in the other), its optimizers may leave one more op in one
    of them (EfficientNetB0: a Reshape in one squeeze-excite block of the float64 graph only), and the
    names of the nodes it makes carry counters (`Conv__110`) that then point at different nodes. So a
    node whose name comes from the model (no counter) pairs with the node of that name; the others by
    aligning the two op-type sequences (the longest matching blocks), among nodes not paired by name. A
    node left over has no counterpart, and its layer is not compared — never compared with another node."""
    import difflib

    nodes64, nodes = [n for n in proto_f64.graph.node if n.output], [n for n in proto.graph.node if n.output]
    named = {n.name: n for n in nodes if n.name and not _COUNTER_NAME.fullmatch(n.name)}
    pairs = {n.name: named[n.name] for n in nodes64 if n.name in named}
    taken = {id(node) for node in pairs.values()}
    matcher = difflib.SequenceMatcher(None, [n.op_type for n in nodes64], [n.op_type for n in nodes], autojunk=False)
    for block in matcher.get_matching_blocks():
        for a, b in zip(nodes64[block.a: block.a + block.size], nodes[block.b: block.b + block.size], strict=True):
            if a.name not in pairs and id(b) not in taken:
                pairs[a.name] = b
                taken.add(id(b))
    return pairs


# A name tf2onnx made for a node of its own, numbered in creation order: `Conv__110`, `const_fold_opt__12`.
_COUNTER_NAME = re.compile(r".*__\d+")


def _fused_into(name: str, consumers: dict[str, list[str]], placements: dict) -> str | None:
    """The first placed layer down the single-consumer chain from unplaced layer `name` (padding → Conv →
    BatchNorm: the Conv's pads and the BatchNorm's scale are fused into one op), or None."""
    while len(consumers.get(name, ())) == 1:
        name = consumers[name][0]
        if name in placements:
            return name
    return None


def run(keras: KerasModel, sources: Sources, keras_layers: dict[str, np.ndarray], inputs: np.ndarray,
        with_manual: bool = True, layer_noise: dict[str, float] | None = None,
        layers_f64: dict[str, np.ndarray] | None = None) -> LayerReport:
    """Compare every placed layer of `keras` across backends.

    Args:
        keras: the Keras model (its layer graph and weights, read with h5py).
        sources: the conversion under test: its ONNX graph and GraphModule (and the hand-written
            model, which the tests may replace with a deliberately broken one).
        keras_layers: {layer name: Keras output} on `inputs` (from the TensorFlow process).
        inputs: the inputs those outputs were computed on.
        with_manual: include the hand-written model where it applies.
        layer_noise: {layer: Keras float32's own error against float64 there}, which widens that
            layer's bound (`tolerances.with_noise`); None where it was not measured.
        layers_f64: {layer name: Keras float64 output} on `inputs`: with the float64 conversion in
            `sources`, layers are placed by value (`placed_by_value`); without, by the graph walk of
            `layer_map`, whose guesses a shape mismatch withdraws.
    """
    by_value = layers_f64 is not None and sources.artifacts.onnx_f64 is not None
    points = (placed_by_value(keras, sources, layers_f64, inputs) if by_value
              else layer_map.map_onnx(keras.layers, sources.onnx_proto, keras.weights))
    compared = [p for p in points if p.compared]
    try:
        ort_tensors = _onnxruntime_tensors(sources.onnx_proto, sorted({p.tensor for p in compared}), inputs)
    except Exception as exc:  # noqa: BLE001 — a broken ONNX graph is a finding, not a crash
        raise BadInput(f"ONNX Runtime cannot run {sources.artifacts.onnx} ({' '.join(str(exc).split())[:300]})") from exc
    gm = sources.graph_module
    module_of = {node.name: torch_module_name(node) for node in sources.onnx_proto.graph.node}
    fx_names = {n.target: n.name for n in gm.graph.nodes if n.op == "call_module"}
    fx_names = {onnx_node: fx_names.get(module) for onnx_node, module in module_of.items()}
    fx_tensors = _fx_tensors(gm, {module_of[p.onnx_node] for p in compared if p.onnx_node in module_of}, inputs)
    modules, manual, manual_note = _manual_modules(keras, sources, inputs) if with_manual else ({}, {}, "")
    native = _native_tensors(sources, inputs) if sources.artifacts.native is not None else {}
    fused: dict[str, list[str]] = {}
    for point in points:
        if point.fused_into:
            fused.setdefault(point.fused_into, []).append(point.layer.name)
    rows = []
    for point in points:
        if point.layer.class_name == "InputLayer":
            continue
        module = modules.get(point.layer.name)
        row = LayerRow(point.layer.name, point.layer.class_name, point.onnx_node, fx_names.get(point.onnx_node),
                       module, point.compared, point.shared_with, point.note, fused=fused.get(point.layer.name, []))
        reference = keras_layers.get(point.layer.name)
        noise = (layer_noise or {}).get(point.layer.name)
        if point.compared and reference is not None:
            diffs = [_diff("onnxruntime", reference, ort_tensors.get(point.tensor), point.layout, noise, point.by_value),
                     _diff("fx", reference, fx_tensors.get(module_of.get(point.onnx_node, "")), point.layout, noise, point.by_value)]
            if point.inferred and any(d.note == WRONG_SHAPE for d in diffs):
                row.compared, row.note = False, f"{point.note}, but no tensor of its shape found: not compared"
            else:
                row.diffs.extend(diffs)
        if manual and module is not None and reference is not None:
            row.diffs.append(_diff("manual", reference, manual.get(module), layer_map.CHANNELS_FIRST, noise))
        if native and reference is not None:
            # by Keras name, in Keras's layout: no placement, so every layer with an output is compared
            value = native.get(point.layer.name)
            exact = value is None or value.shape == reference.shape  # by name means the same shape, not a reshape that fits
            row.diffs.append(_diff("native", reference, value if exact else np.empty((0,)), value_map.KERAS, noise, by_value=True))
            row.compared = True
        rows.append(row)
    return LayerReport(rows, len(inputs), ["onnxruntime", "fx"] + (["native"] if native else []) + (["manual"] if manual else []), manual_note,
                       placed_by="float64 value" if by_value else "graph walk")


def _manual_modules(keras: KerasModel, sources: Sources, inputs: np.ndarray) -> tuple[dict[str, str], dict[str, np.ndarray], str]:
    """({Keras layer: hand-written submodule}, {submodule: its outputs}, "") — or empty, and why not, where
    the hand-written model does not apply."""
    from pipeline.verifier import resnet8

    try:
        modules = resnet8.layer_modules(keras)
        return modules, _manual_tensors(sources.manual, modules, inputs), ""
    except NotApplicable as exc:
        return {}, {}, str(exc)
