"""Place each Keras layer in the converted graph by value, with no mapping heuristics.

The float64 rebuild's conversion (`model_f64.onnx`) computes the same function as Keras float64 to
float64 rounding (the proof). So a Keras layer's float64 output, where the converted graph still
holds it, *is* one of that graph's tensors — equal to `tolerances.proof_tolerance` of its scale, up
to layout (NHWC or NCHW, flattened or with size-1 axes). Running the float64 GraphModule once over a
few check inputs and looking every layer's output up among its tensors finds where each layer is,
whatever the converter renamed, split, fused or moved. tf2onnx writes the float32 and float64 graphs
with the same node names, so the placement carries over to `model.onnx` by name.

A layer whose output no tensor holds was fused into a neighbour by the converter (a Conv with the
BatchNorm after it, padding folded into the next Conv): it is not compared, and the report says
which layer it was fused into. A layer whose output is constant on the inputs is placed only next to
its inputs, never by coincidence elsewhere.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pipeline.common.tolerances import proof_tolerance
from pipeline.converters.onnx_graph import torch_module_name
from pipeline.keras_file.graph import KerasLayer
from pipeline.verifier.layer_map import CHANNELS_FIRST, KERAS

MATCH_SAMPLES = 8  # inputs the float64 graph runs on to place layers: a coincidence on all of them is out of reach


@dataclass(frozen=True)
class Placement:
    """Where one Keras layer's output is in the converted graph."""

    onnx_node: str  # the ONNX node whose output it is (its onnx2torch module: `onnx_graph.torch_module_name`)
    layout: str  # KERAS or CHANNELS_FIRST
    position: int  # the node's index in graph order


def _fingerprint(value: np.ndarray) -> tuple[int, float, float]:
    """Size, max and min: blind to layout, so one look-up serves every layout."""
    return value.size, float(value.max()), float(value.min())


def in_keras_layout(value: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """`value`, found in `layout`, as the Keras tensor of `shape` it holds (None if the sizes differ):
    channels moved last if channels-first, then reshaped (size-1 axes, flattening)."""
    if layout == CHANNELS_FIRST and value.ndim >= 3:
        value = np.moveaxis(value, 1, -1)
    return value.reshape(shape) if value.size == int(np.prod(shape)) else None


def _equal(reference: np.ndarray, value: np.ndarray, tolerance: float) -> str | None:
    """The layout in which `value` equals `reference` to `tolerance`, or None."""
    for layout in (KERAS, CHANNELS_FIRST) if value.ndim >= 3 else (KERAS,):
        candidate = in_keras_layout(value, layout, reference.shape)
        if candidate is not None and np.abs(candidate - reference).max() <= tolerance:
            return layout
    return None


def place(layers: list[KerasLayer], layers_f64: dict[str, np.ndarray], gm_f64, proto_f64, inputs: np.ndarray) -> dict[str, Placement]:
    """{Keras layer: Placement} for every layer whose float64 output a tensor of the float64 graph holds.

    Args:
        layers: the Keras layers, in graph order.
        layers_f64: {layer: Keras float64 output on `inputs`}.
        gm_f64: onnx2torch's GraphModule of `proto_f64`, in float64.
        proto_f64: the float64 rebuild's ONNX graph (for its node names).
        inputs: the inputs `layers_f64` were computed on (the first MATCH_SAMPLES are used).
    """
    import torch
    from torch import fx

    count = min(MATCH_SAMPLES, len(inputs))
    references = {layer.name: layers_f64[layer.name][:count] for layer in layers
                  if layer.name in layers_f64 and layers_f64[layer.name].size and layer.class_name != "InputLayer"}
    by_size: dict[int, list[str]] = {}
    for name, value in references.items():
        by_size.setdefault(value.size, []).append(name)
    nodes = {torch_module_name(node): node for node in proto_f64.graph.node if node.output}
    hits: dict[str, list[tuple[int, str, str]]] = {name: [] for name in references}  # layer -> [(position, node, layout)]
    position = itertools.count()  # each FX node's index in execution (graph) order

    class Finder(fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            index = next(position)
            if node.op == "call_module" and node.target in nodes and isinstance(result, torch.Tensor) and result.numel():
                value = result.numpy()
                size, high, low = _fingerprint(value)
                for name in by_size.get(size, ()):
                    reference = references[name]
                    tolerance = proof_tolerance(float(np.abs(reference).max()))
                    if abs(float(reference.max()) - high) <= tolerance and abs(float(reference.min()) - low) <= tolerance:
                        layout = _equal(reference, value, tolerance)
                        if layout is not None:
                            hits[name].append((index, nodes[node.target].name, layout))
            return result

    with torch.inference_mode():
        Finder(gm_f64).run(torch.from_numpy(np.ascontiguousarray(inputs[:count], dtype=np.float64)))
    return _choose(layers, references, hits)


def _choose(layers: list[KerasLayer], references: dict[str, np.ndarray], hits: dict[str, list[tuple[int, str, str]]]) -> dict[str, Placement]:
    """Of the tensors equal to a layer's output, the first computed after its inputs' places (its own op,
    a Flatten's Reshape), else its input's own (a layer that computes nothing shares it). A constant
    output, which many tensors may equal by coincidence, only at its input's place or the op right after."""
    placed: dict[str, Placement] = {}
    for layer in layers:
        found = hits.get(layer.name)
        if not found:
            continue
        after = max((placed[name].position for name in layer.inbound if name in placed), default=-1)
        later = [hit for hit in found if hit[0] > after] + [hit for hit in found if hit[0] == after]
        if float(np.ptp(references[layer.name])) == 0.0:
            later = [hit for hit in later if hit[0] in (after, after + 1)]
        if later:
            index, node, layout = later[0]
            placed[layer.name] = Placement(node, layout, index)
    return placed
