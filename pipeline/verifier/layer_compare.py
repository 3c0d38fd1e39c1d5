"""Layer by layer: where does a conversion part from Keras, in which backend, by how much?

Every Keras layer's output (from the TensorFlow process) is compared with the same tensor in ONNX
Runtime, in onnx2torch's FX graph and, where it applies, in the hand-written model, on a few hundred
test images and random inputs. The first layer (in topological order) out of tolerance in any backend
is the *first divergence*, named by the layer names of the user's .h5.

Never a false alarm from a wrong placement: where the float64 rebuild's conversion is there, the layer
map is run on it too and each placement checked by value — the float64 graph's tensor must equal Keras
float64's layer output to `proof_tolerance`. A float32 row out of tolerance whose placement the float64
values do not confirm is "not compared", with that reason, instead of failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline.common.errors import BadInput, NotApplicable
from pipeline.common.tolerances import LAYER_ATOL, LAYER_RTOL, proof_tolerance, scaled_tolerance, with_noise
from pipeline.data import checkset
from pipeline.keras_file.model import KerasModel
from pipeline.runtimes import ort
from pipeline.verifier import layer_map
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

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.diffs)


@dataclass
class LayerReport:
    rows: list[LayerRow]
    images: int
    backends: list[str]
    manual_note: str = ""

    @property
    def first_divergence(self) -> dict | None:
        for row in self.rows:
            for diff in row.diffs:
                if not diff.passed:
                    return {"keras_layer": row.keras_layer, "backend": diff.backend, "onnx_node": row.onnx_node,
                            "fx_node": row.fx_node, "max_abs_diff": diff.max_abs_diff, "tolerance": diff.tolerance}
        return None

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def as_dict(self) -> dict:
        return {"passed": self.passed, "images": self.images, "backends": self.backends, "manual_note": self.manual_note,
                "atol": LAYER_ATOL, "rtol": LAYER_RTOL, "first_divergence": self.first_divergence,
                "layers": [asdict(row) | {"passed": row.passed} for row in self.rows]}


def _onnxruntime_tensors(proto, names: list[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.session(proto, names)
    input_name = session.get_inputs()[0].name
    parts = [session.run(names, {input_name: batch}) for batch in checkset.batches(inputs, checkset.TEST_BATCH_SIZE)]
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


def _fx_tensors(gm, node_names: set[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the FX nodes calling the modules named after ONNX nodes in `node_names`."""
    import torch
    from torch import fx

    captured: dict[str, list[np.ndarray]] = {name: [] for name in node_names}

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


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _diff(backend: str, reference: np.ndarray, value: np.ndarray | None, layout: str, noise: float | None = None) -> LayerDiff:
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    tolerance = with_noise(scaled_tolerance(scale), noise)
    if value is None:
        return LayerDiff(backend, float("inf"), scale, tolerance, False, "tensor not produced")
    value = layer_map.to_keras_layout(value, layout)
    if value.shape != reference.shape and value.ndim >= 3 and np.moveaxis(value, 1, -1).shape == reference.shape:
        value = np.moveaxis(value, 1, -1)  # channels first after all (a multi-op layer's layout is inferred, not traced)
    if value.shape != reference.shape and _squeezed(value.shape) == _squeezed(reference.shape):
        value = value.reshape(reference.shape)  # e.g. a Conv1D, which the converter runs as a Conv over (N, C, 1, W)
    if value.shape != reference.shape:
        return LayerDiff(backend, float("inf"), scale, tolerance, False, f"shape {value.shape} vs Keras {reference.shape}")
    delta = float(np.abs(value.astype(np.float64) - reference).max()) if reference.size else 0.0
    return LayerDiff(backend, delta, scale, tolerance, delta <= tolerance)


def confirmed_placements(keras: KerasModel, sources: Sources, layers_f64: dict[str, np.ndarray], inputs: np.ndarray) -> dict[str, str]:
    """{Keras layer: ONNX node} for the layers whose place in the converted graph the float64 values
    confirm: the layer map run on the float64 rebuild's graph (which tf2onnx writes with the same node
    names), each placed tensor of the float64 GraphModule equal to Keras float64's layer output."""
    import onnx

    points = [p for p in layer_map.map_onnx(keras.layers, onnx.load(str(sources.artifacts.onnx_f64)), keras.weights)
              if p.compared and p.onnx_node and p.layer.name in layers_f64]
    tensors = _fx_tensors(sources.graph_module_f64, {p.onnx_node for p in points}, inputs.astype(np.float64))
    confirmed = {}
    for point in points:
        value = tensors.get(point.onnx_node)
        diff = _diff("fx64", layers_f64[point.layer.name], value, point.layout)
        if value is not None and diff.max_abs_diff <= proof_tolerance(diff.scale):
            confirmed[point.layer.name] = point.onnx_node
    return confirmed


def run(keras: KerasModel, sources: Sources, keras_layers: dict[str, np.ndarray], inputs: np.ndarray,
        with_manual: bool = True, layer_noise: dict[str, float] | None = None,
        layers_f64: dict[str, np.ndarray] | None = None) -> LayerReport:
    """Compare every mapped layer of `keras` across backends.

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
            `sources`, placements are confirmed by value (`confirmed_placements`); None: not checked.
    """
    confirmed = (confirmed_placements(keras, sources, layers_f64, inputs)
                 if layers_f64 is not None and sources.artifacts.onnx_f64 is not None else None)
    points = layer_map.map_onnx(keras.layers, sources.onnx_proto, keras.weights)
    compared = [p for p in points if p.compared]
    try:
        ort_tensors = _onnxruntime_tensors(sources.onnx_proto, sorted({p.tensor for p in compared}), inputs)
    except Exception as exc:  # noqa: BLE001 — a broken ONNX graph is a finding, not a crash
        raise BadInput(f"ONNX Runtime cannot run {sources.artifacts.onnx} ({' '.join(str(exc).split())[:300]})") from exc
    gm = sources.graph_module
    fx_names = {n.target: n.name for n in gm.graph.nodes if n.op == "call_module"}  # onnx2torch names modules after ONNX nodes
    fx_tensors = _fx_tensors(gm, {p.onnx_node for p in compared if p.onnx_node}, inputs)
    modules, manual, manual_note = _manual_modules(keras, sources, inputs) if with_manual else ({}, {}, "")
    rows = []
    for point in points:
        if point.layer.class_name == "InputLayer":
            continue
        module = modules.get(point.layer.name)
        row = LayerRow(point.layer.name, point.layer.class_name, point.onnx_node, fx_names.get(point.onnx_node),
                       module, point.compared, point.shared_with, point.note)
        reference = keras_layers.get(point.layer.name)
        noise = (layer_noise or {}).get(point.layer.name)
        if point.compared and reference is not None:
            diffs = [_diff("onnxruntime", reference, ort_tensors.get(point.tensor), point.layout, noise),
                     _diff("fx", reference, fx_tensors.get(point.onnx_node), point.layout, noise)]
            if point.inferred and any(d.note.startswith("shape") for d in diffs):
                row.compared, row.note = False, f"{point.note}, but no tensor of its shape found: not compared"
            elif confirmed is not None and not all(d.passed for d in diffs) and confirmed.get(point.layer.name) != point.onnx_node:
                row.compared = False
                row.note = "its placement in the graph is not confirmed by the float64 values (fused, rewritten or not found): not compared"
            else:
                row.diffs.extend(diffs)
        if manual and module is not None and reference is not None:
            row.diffs.append(_diff("manual", reference, manual.get(module), layer_map.CHANNELS_FIRST, noise))
        rows.append(row)
    return LayerReport(rows, len(inputs), ["onnxruntime", "fx"] + (["manual"] if manual else []), manual_note)


def _manual_modules(keras: KerasModel, sources: Sources, inputs: np.ndarray) -> tuple[dict[str, str], dict[str, np.ndarray], str]:
    """({Keras layer: hand-written submodule}, {submodule: its outputs}, "") — or empty, and why not, where
    the hand-written model does not apply."""
    from pipeline.verifier import resnet8

    try:
        modules = resnet8.layer_modules(keras)
        return modules, _manual_tensors(sources.manual, modules, inputs), ""
    except NotApplicable as exc:
        return {}, {}, str(exc)
