"""Layer by layer: where does a conversion part from Keras, in which backend, by how much?

Every Keras layer's output (from the TensorFlow process) is compared with the same tensor in ONNX
Runtime, in onnx2torch's FX graph and, where it applies, in the hand-written model, on a few hundred
test images and random inputs. The first layer (in topological order) out of tolerance in any backend
is the *first divergence*, named by the layer names of the user's .h5.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline import checkset, keras_graph, layer_map
from pipeline.errors import BadInput, NotApplicable
from pipeline.tolerances import LAYER_ATOL, LAYER_RTOL


@dataclass
class LayerDiff:
    backend: str
    max_abs_diff: float
    scale: float  # max |Keras output| of this layer
    tolerance: float  # LAYER_ATOL + LAYER_RTOL · scale
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


class KerasLayers:
    """Every Keras layer's output on the layer check set, as `keras_worker --layers` wrote them."""

    def __init__(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                self.outputs = {key.split("/", 1)[1]: archive[key] for key in archive.files if key.startswith("layer/")}
                self.inputs = archive["inputs"]
                self.model_sha256 = str(archive["model_sha256"])
                self.data_sha256 = str(archive["data_sha256"])
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"{path} is not a readable Keras layer-output file ({exc}); rerun the onnx stage") from exc


def _onnxruntime_tensors(proto, names: list[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    from pipeline.backends import onnxruntime_session

    session = onnxruntime_session(proto, names)
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


def _diff(backend: str, reference: np.ndarray, value: np.ndarray | None, layout: str) -> LayerDiff:
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    tolerance = LAYER_ATOL + LAYER_RTOL * scale
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


def run(model: Path, onnx_path: Path, keras_layers: dict[str, np.ndarray], inputs: np.ndarray,
        manual_model=None, with_manual: bool = True) -> LayerReport:
    """Compare every mapped layer of `model` across backends.

    Args:
        model: the Keras .h5 (its model_config and weights, read with h5py).
        onnx_path: the ONNX file under test (the FX graph is converted from it here).
        keras_layers: {layer name: Keras output} on `inputs` (from `keras_worker --layers`).
        inputs: the inputs those outputs were computed on.
        manual_model: a hand-written ResNet8 to use instead of the one built from `model` (tests
            pass a deliberately broken one).
        with_manual: include the hand-written model where it applies.
    """
    import onnx2torch

    model_config = keras_graph.read_model_config(model)
    graph_layers = keras_graph.layers(model_config)
    proto = layer_map.load_onnx(onnx_path)
    points = layer_map.map_onnx(graph_layers, proto, keras_graph.weights(model))
    compared = [p for p in points if p.compared]
    try:
        ort = _onnxruntime_tensors(proto, sorted({p.tensor for p in compared}), inputs)
    except Exception as exc:  # noqa: BLE001 — a broken ONNX graph is a finding, not a crash
        raise BadInput(f"ONNX Runtime cannot run {onnx_path} ({' '.join(str(exc).split())[:300]})") from exc
    gm = onnx2torch.convert(str(onnx_path)).eval()
    fx_names = {n.target: n.name for n in gm.graph.nodes if n.op == "call_module"}  # onnx2torch names modules after ONNX nodes
    fx = _fx_tensors(gm, {p.onnx_node for p in compared if p.onnx_node}, inputs)
    modules, manual, manual_note = {}, {}, ""
    if with_manual:
        from pipeline import resnet8

        try:
            modules = resnet8.layer_modules(model_config)
            manual_model = manual_model if manual_model is not None else resnet8.from_h5(model)[0]
            manual = _manual_tensors(manual_model, modules, inputs)
        except NotApplicable as exc:
            manual_note = str(exc)
    backends = ["onnxruntime", "fx"] + (["manual"] if manual else [])
    rows = []
    for point in points:
        if point.layer.class_name == "InputLayer":
            continue
        module = modules.get(point.layer.name)
        row = LayerRow(point.layer.name, point.layer.class_name, point.onnx_node, fx_names.get(point.onnx_node),
                       module, point.compared, point.shared_with, point.note)
        reference = keras_layers.get(point.layer.name)
        if point.compared and reference is not None:
            diffs = [_diff("onnxruntime", reference, ort.get(point.tensor), point.layout),
                     _diff("fx", reference, fx.get(point.onnx_node), point.layout)]
            if point.inferred and any(d.note.startswith("shape") for d in diffs):
                row.compared, row.note = False, f"{point.note}, but no tensor of its shape found: not compared"
            else:
                row.diffs.extend(diffs)
        if manual and module is not None and reference is not None:
            row.diffs.append(_diff("manual", reference, manual.get(module), layer_map.CHANNELS_FIRST))
        rows.append(row)
    return LayerReport(rows, len(inputs), backends, manual_note)
