"""ONNX → onnx2torch `torch.fx.GraphModule` (with our converters for the ops it lacks, `onnx_ops`) → `torch.export` program.

onnx2torch's Reshape, Squeeze, Unsqueeze, Slice, Split, Tile, Pad, Expand, ConstantOfShape and
Resize read their parameters from tensors, which `torch.export` cannot trace (onnx2torch issue #225);
`fx_passes` makes them static first. Ops onnx2torch has no converter for (LSTM, GRU, RNN, Loop) are
converted by ours (`onnx_ops`), a loop's bounds read from shapes made constants first (`loop_bounds`). An op
that cannot be converted is named, with the Keras layer it came from.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.common.errors import BadInput
from pipeline.converters import onnx_graph, onnx_ops

# Largest batch the exported program accepts; torch.export needs a bound for its symbolic batch.
MAX_BATCH = 1 << 16


def unconvertible_node(onnx_path: Path, layer_names: list[str] = ()) -> str:
    """Which node onnx2torch cannot convert, with the Keras layer it came from ("layer Y (op X, node Z)"):
    a diagnosis made only after `onnx2torch.convert` failed, whose error names no node. Each node is
    given to its converter as `convert` does, after the same shape inference."""
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.utils.safe_shape_inference import safe_shape_inference

    onnx_ops.register()
    proto = safe_shape_inference(str(onnx_path))
    opsets = {opset.domain: opset.version for opset in proto.opset_import}
    graph = OnnxGraph(proto.graph)
    owners = onnx_graph.layer_owners([node.name for node in proto.graph.node], list(layer_names))
    for name, node in graph.nodes.items():
        try:
            get_converter(domain=node.domain, operation_type=node.operation_type, version=opsets[node.domain])(node, graph)
        except Exception:  # noqa: BLE001 — this is the search for the failing node
            layer = owners.get(name)
            return f"layer {layer} (op {node.operation_type}, node {name})" if layer else f"op {node.operation_type} (node {name})"
    return "a node of the graph"


def convert_raw(onnx_path: Path, layer_names: list[str] = ()):
    """onnx2torch's GraphModule exactly as converted, in eval mode.

    Raises:
        BadInput: onnx2torch cannot convert a node; the message names the op and the Keras layer.
    """
    import onnx
    import onnx2torch

    from pipeline.converters import loop_bounds

    onnx_ops.register()  # ours beside onnx2torch's own: LSTM, GRU, RNN, Loop, ReverseSequence
    model = str(onnx_path)
    proto = onnx.load(model)
    if any(node.op_type == "Loop" for node in proto.graph.node) and loop_bounds.fold(proto, onnx_path):
        model = proto  # its loops' bounds read from shapes made constants
    try:
        return onnx2torch.convert(model).eval()
    except (NotImplementedError, KeyError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200].rstrip(".")
        raise BadInput(f"onnx2torch cannot convert {unconvertible_node(onnx_path, layer_names)}: {reason}; "
                       "change the layer or report it upstream") from exc


def convert(onnx_path: Path, layer_names: list[str] = ()):
    """onnx2torch's GraphModule with static reshapes, slices, pads, expands and resizes (exportable), and the number
    of reshapes made static.

    Raises:
        BadInput: see `convert_raw`.
    """
    from pipeline.converters.fx_passes import static_expands, static_pads, static_reshapes, static_resizes, static_slices

    gm = convert_raw(onnx_path, layer_names)
    gm.graph.eliminate_dead_code()  # what our converters left unused (a recurrent op's computed zero state)
    gm.recompile()
    sample = onnx_graph.input_sample(onnx_path)
    reshapes = static_reshapes(gm, sample)
    static_slices(gm)
    static_pads(gm)
    static_expands(gm, sample)
    static_resizes(gm, sample)
    return gm, reshapes


def export(gm, sample, device: str = "cpu"):
    """`torch.export` of `gm` (its weights on `device`) with a dynamic batch dimension (1 … MAX_BATCH), the same
    for every input; `sample`: one input's shape, or a `data.feeds.Layout` of several."""
    import torch

    from pipeline.converters.examples import example_tensors

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    examples = example_tensors(sample, 2, device)
    with torch.no_grad():
        return torch.export.export(gm, examples, dynamic_shapes=tuple({0: batch} for _ in examples))


def fx_source(gm, onnx_path: Path, after: str = "after static reshapes") -> str:
    """The GraphModule's generated `forward`, with a header saying what it is: written beside the `.pt2`, to read."""
    header = (
        f'"""The forward() of the GraphModule onnx2torch made from {Path(onnx_path).name}, {after}.\n\n'
        "For reading only: the submodules it calls (convolutions, onnx2torch operations) live in model.pt2.\n"
        '"""\n\nimport torch\n\n\n'
    )
    return header + f"def forward{gm.code.split('def forward', 1)[1]}"
