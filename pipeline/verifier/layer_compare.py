"""Layer by layer: where does a conversion part from Keras, in which backend, by how much?

Every Keras layer's output (from the TensorFlow process) is compared with the same tensor in ONNX
Runtime, in onnx2torch's FX graph and, where it applies, in the hand-written model, on a few hundred
test images and random inputs. The first layer (in topological order) out of tolerance in any backend
is the *first divergence*, named by the layer names of the user's .h5.

Which tensor is which layer's is not decided here: `placement` confirms each claim by value, and a
layer it cannot place is "not compared", with its reason — never ✗. Layers the converter folded
together (a Conv and the BatchNorm after it) are compared as one group, at the group's last layer. The
layer map locates; it does not decide the verdict (`stages.verify`: outputs and the float64 proof do).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline.common.errors import BadInput, NotApplicable
from pipeline.common.tolerances import LAYER_ATOL, LAYER_RTOL, scaled_tolerance, with_noise
from pipeline.data import checkset, feeds
from pipeline.data.feeds import Layout
from pipeline.keras_file import graph
from pipeline.keras_file.model import KerasModel
from pipeline.converters.onnx_graph import torch_module_name
from pipeline.runtimes import ort
from pipeline.verifier import placement
from pipeline.verifier.backends import Sources


PLACED_F64 = "float64 value (the graph run in float64 vs Keras float64)"
PLACED_F32 = "value against Keras float32 (no float64 rebuild)"


def label(layer: str, fused: list[str]) -> str:
    """How the reports name a compared tensor: `conv2d + batch_normalization (folded)` for a folded group."""
    return " + ".join([*fused, layer]) + " (folded)" if fused else layer


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

    @property
    def label(self) -> str:
        """`conv2d + batch_normalization (folded)` for a group the converter folded together, else the layer."""
        return label(self.keras_layer, self.fused)


@dataclass
class LayerReport:
    rows: list[LayerRow]
    images: int
    backends: list[str]
    manual_note: str = ""
    placed_by: str = PLACED_F64  # how claims were confirmed: PLACED_F64, or PLACED_F32 without a float64 rebuild

    @property
    def first_divergence(self) -> dict | None:
        for row in self.rows:
            for diff in row.diffs:
                if not diff.passed:
                    return {"keras_layer": row.keras_layer, "fused": row.fused, "label": row.label, "backend": diff.backend,
                            "onnx_node": row.onnx_node,
                            "fx_node": row.fx_node, "max_abs_diff": diff.max_abs_diff, "tolerance": diff.tolerance}
        return None

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    @property
    def first_unplaced(self) -> str | None:
        """The first layer after the last one compared in ONNX Runtime whose value no tensor holds: where a
        conversion whose outputs fail parts from Keras, when no compared layer shows it (a fault in the
        graph the layers were searched in leaves no value of the model's after it)."""
        compared = [i for i, row in enumerate(self.rows) if any(d.backend == "onnxruntime" for d in row.diffs)]
        start = compared[-1] + 1 if compared else 0
        return next((row.keras_layer for row in self.rows[start:] if row.note == placement.NOT_FOUND), None)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "images": self.images, "backends": self.backends, "manual_note": self.manual_note,
                "placed_by": self.placed_by,
                "atol": LAYER_ATOL, "rtol": LAYER_RTOL, "first_divergence": self.first_divergence,
                "layers": [asdict(row) | {"passed": row.passed, "label": row.label} for row in self.rows]}


def _onnxruntime_tensors(proto, names: list[str], inputs: np.ndarray, layout: Layout | None) -> dict[str, np.ndarray]:
    session = ort.session(proto, names)
    input_names = [i.name for i in session.get_inputs()]
    parts = [session.run(names, {name: np.ascontiguousarray(a) for name, a in zip(input_names, feeds.split(batch, layout), strict=True)})
             for batch in checkset.batches(inputs, checkset.TEST_BATCH_SIZE)]
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


def _fx_tensors(gm, modules: set[str], inputs: np.ndarray, layout: Layout | None) -> dict[str, np.ndarray]:
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
            Recorder(gm).run(*(torch.from_numpy(np.ascontiguousarray(a)) for a in feeds.split(batch, layout)))
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
    parts = [load.layer_outputs(model, module, *feeds.split(batch, sources.input_layout))
             for batch in checkset.batches(inputs, checkset.TEST_BATCH_SIZE)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}


def _diff(backend: str, reference: np.ndarray, value: np.ndarray | None, layout: str, noise: float | None = None) -> LayerDiff:
    """`value`, held in `layout`, against `reference` (Keras's tensor)."""
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    tolerance = with_noise(scaled_tolerance(scale), noise)
    if value is None:
        return LayerDiff(backend, float("inf"), scale, tolerance, False, "tensor not produced")
    value = placement.in_keras_layout(value, layout, reference.shape)
    if value is None:
        return LayerDiff(backend, float("inf"), scale, tolerance, False, WRONG_SHAPE)
    delta = float(np.abs(value.astype(np.float64) - reference).max()) if reference.size else 0.0
    return LayerDiff(backend, delta, scale, tolerance, delta <= tolerance)


WRONG_SHAPE = "a tensor of another size than the Keras layer's"


def layer_noise(keras_layers: dict[str, np.ndarray], layers_f64: dict[str, np.ndarray] | None) -> dict[str, float] | None:
    """{layer: Keras float32's largest error against float64 at that layer}, where both were computed."""
    if layers_f64 is None:
        return None
    return {name: float(np.abs(value.astype(np.float64) - layers_f64[name]).max())
            for name, value in keras_layers.items() if name in layers_f64 and value.size and layers_f64[name].shape == value.shape}


def run(keras: KerasModel, sources: Sources, keras_layers: dict[str, np.ndarray], inputs: np.ndarray,
        with_manual: bool = True, layers_f64: dict[str, np.ndarray] | None = None) -> LayerReport:
    """Compare every placed layer of `keras` across backends.

    Args:
        keras: the Keras model (its layer graph and weights, read with h5py).
        sources: the conversion under test: its ONNX graph and GraphModule (and the hand-written
            model, which the tests may replace with a deliberately broken one); its
            `reference_graph` is where layers are placed (`placement`).
        keras_layers: {layer name: Keras float32 output} on `inputs` (from the TensorFlow process).
        inputs: the inputs those outputs were computed on.
        with_manual: include the hand-written model where it applies.
        layers_f64: {layer name: Keras float64 output} on `inputs`, where the model rebuilds in float64:
            claims are then confirmed against it, and each layer's bound widens to its own float32
            noise (`tolerances.with_noise`); None: confirmed against `keras_layers`.
    """
    noise = layer_noise(keras_layers, layers_f64)
    # a nested model's layers where the TensorFlow process captured them (`tf_side.outputs._nested_once`)
    points = placement.place(graph.with_nested(keras.layers, set(keras_layers)), layers_f64 if layers_f64 is not None else keras_layers, noise,
                             sources.reference_graph, sources.onnx_proto, inputs, sources.input_layout)
    compared = [p for p in points if p.compared]
    try:
        ort_tensors = _onnxruntime_tensors(sources.onnx_proto, sorted({p.tensor for p in compared}), inputs, sources.input_layout)
    except Exception as exc:  # noqa: BLE001 — a broken ONNX graph is a finding, not a crash
        raise BadInput(f"ONNX Runtime cannot run {sources.artifacts.onnx} ({' '.join(str(exc).split())[:300]})") from exc
    gm = sources.graph_module
    module_of = {node.name: torch_module_name(node) for node in sources.onnx_proto.graph.node}
    fx_names = {n.target: n.name for n in gm.graph.nodes if n.op == "call_module"}
    fx_names = {onnx_node: fx_names.get(module) for onnx_node, module in module_of.items()}
    fx_tensors = _fx_tensors(gm, {module_of[p.onnx_node] for p in compared if p.onnx_node in module_of}, inputs, sources.input_layout)
    modules, manual, manual_note = _manual_modules(keras, sources, inputs) if with_manual else ({}, {}, "")
    native = _native_tensors(sources, inputs) if sources.artifacts.native is not None else {}
    rows = []
    for point in points:
        if point.layer.class_name == "InputLayer":
            continue
        module = modules.get(point.layer.name)
        row = LayerRow(point.layer.name, point.layer.class_name, point.onnx_node, fx_names.get(point.onnx_node),
                       module, point.compared, point.shared_with, point.note, fused=point.fused)
        reference = keras_layers.get(point.layer.name)
        layer_bound = (noise or {}).get(point.layer.name)
        if point.compared and reference is not None:
            row.diffs += [_diff("onnxruntime", reference, ort_tensors.get(point.tensor), point.layout, layer_bound),
                          _diff("fx", reference, fx_tensors.get(module_of.get(point.onnx_node, "")), point.layout, layer_bound)]
        if manual and module is not None and reference is not None:
            row.diffs.append(_diff("manual", reference, manual.get(module), placement.CHANNELS_FIRST, layer_bound))
        if native and reference is not None and ("/" not in point.layer.name or point.layer.name in native):
            # by Keras name, in Keras's layout: no placement, so every layer with an output is compared (a
            # nested model's, `outer/inner`, where the native model writes it in line: `native.generate`)
            value = native.get(point.layer.name)
            exact = value is None or value.shape == reference.shape  # by name means the same shape, not a reshape that fits
            row.diffs.append(_diff("native", reference, value if exact else np.empty((0,)), placement.KERAS, layer_bound))
            row.compared = True
        rows.append(row)
    return LayerReport(rows, len(inputs), ["onnxruntime", "fx"] + (["native"] if native else []) + (["manual"] if manual else []), manual_note,
                       placed_by=PLACED_F64 if layers_f64 is not None else PLACED_F32)


def _manual_modules(keras: KerasModel, sources: Sources, inputs: np.ndarray) -> tuple[dict[str, str], dict[str, np.ndarray], str]:
    """({Keras layer: hand-written submodule}, {submodule: its outputs}, "") — or empty, and why not, where
    the hand-written model does not apply."""
    from pipeline.verifier import resnet8

    try:
        modules = resnet8.layer_modules(keras)
        return modules, _manual_tensors(sources.manual, modules, inputs), ""
    except NotApplicable as exc:
        return {}, {}, str(exc)
