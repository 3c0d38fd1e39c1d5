"""What tf2onnx leaves behind that is not ONNX: rewrite what has an exact ONNX form, name the rest.

tf2onnx passes a TensorFlow op it cannot convert through under its TF name (with a warning in its
log), and the file then fails `onnx.checker` with a message about a node the user never wrote. Here
such a node is traced back to the Keras layer it came from, so the error says which layer and which op.

Some constructs have an exact form that both ONNX Runtime and onnx2torch run, and are rewritten
(`rewrite`), each a few lines:
- `Erfc` (from exact GELU, Keras's default `gelu`) is not an ONNX op: `1 - Erf(x)`; in float32 the two
  differ by ≤ 1 ulp of the result, within every tolerance here;
- `GlobalMaxPool` has no onnx2torch converter: `ReduceMax` over the spatial axes, keepdims — the same op;
- `ConvTranspose` with unequal padding before and after (Keras `padding="same"`, stride 2), which
  onnx2torch refuses: the unpadded transposed convolution followed by a `Slice` that crops the same
  rows and columns — the same numbers.
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.converters.onnx_graph import layer_owners


def _is_onnx_op(node, opset: int) -> bool:
    import onnx

    try:
        onnx.defs.get_schema(node.op_type, opset, node.domain or "")
        return True
    except onnx.defs.SchemaError:
        return False


def rewrite_erfc(proto) -> int:
    """Replace every `Erfc(x)` node by `Sub(1, Erf(x))` in place; return how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    rewritten = 0
    # The constant takes the graph's float type: float64 in the float64 rebuild's graph.
    dtype = np.float64 if graph.input and graph.input[0].type.tensor_type.elem_type == 11 else np.float32  # 11: DOUBLE
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            continue
        one = f"{node.name}/one"
        graph.initializer.append(numpy_helper.from_array(np.array(1, dtype=dtype), one))
        erf = helper.make_node("Erf", [node.input[0]], [f"{node.name}/erf"], name=f"{node.name}/Erf")
        sub = helper.make_node("Sub", [one, erf.output[0]], [node.output[0]], name=f"{node.name}/Sub")
        del graph.node[index]
        graph.node.insert(index, sub)
        graph.node.insert(index, erf)
        rewritten += 1
    return rewritten


def rewrite_global_max_pool(proto) -> int:
    """Replace every `GlobalMaxPool` by `ReduceMax(axes=2..rank-1, keepdims=1)` in place; return how many."""
    import onnx
    from onnx import helper

    graph = proto.graph
    targets = [i for i, node in enumerate(graph.node) if node.op_type == "GlobalMaxPool"]
    if not targets:
        return 0
    shapes = {info.name: len(info.type.tensor_type.shape.dim)
              for info in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    for index in targets:
        node = graph.node[index]
        rank = shapes.get(node.input[0], 4)
        reduce = helper.make_node("ReduceMax", [node.input[0]], [node.output[0]], name=node.name,
                                  axes=list(range(2, rank)), keepdims=1)
        graph.node[index].CopyFrom(reduce)
    return len(targets)


def rewrite_asymmetric_conv_transpose(proto) -> int:
    """Give every `ConvTranspose` with unequal begin/end pads zero pads and a cropping `Slice`; return how many."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    rewritten = 0
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        pads_attr = next((a for a in node.attribute if a.name == "pads"), None)
        if node.op_type != "ConvTranspose" or pads_attr is None:
            continue
        pads = list(pads_attr.ints)
        spatial = len(pads) // 2
        begin, end = pads[:spatial], pads[spatial:]
        if begin == end:
            continue
        pads_attr.ints[:] = [0] * len(pads)
        full = f"{node.name}/unpadded"
        output = node.output[0]
        node.output[0] = full
        big = np.iinfo(np.int64).max
        starts = numpy_helper.from_array(np.array(begin, np.int64), f"{node.name}/crop_starts")
        ends = numpy_helper.from_array(np.array([-e if e else big for e in end], np.int64), f"{node.name}/crop_ends")
        axes = numpy_helper.from_array(np.arange(2, 2 + spatial, dtype=np.int64), f"{node.name}/crop_axes")
        graph.initializer.extend([starts, ends, axes])
        crop = helper.make_node("Slice", [full, starts.name, ends.name, axes.name], [output], name=f"{node.name}/crop")
        graph.node.insert(index + 1, crop)
        rewritten += 1
    return rewritten


def canonical_names(proto) -> int:
    """Renumber tf2onnx's generated names (`const_fold_opt__139`, `Reshape__370`) in order of first
    appearance, in place; return how many names changed.

    tf2onnx draws those numbers from a process-wide counter whose value differs from run to run, so
    two conversions of one model give the same graph under different names. Renumbered, they give the
    same bytes (tested), which is what lets a user diff two conversions or cache on a checksum.
    """
    graph = proto.graph
    pattern = re.compile(r"__\d+")
    renamed: dict[str, str] = {}

    def canonical(name: str) -> str:
        if not name or not pattern.search(name):
            return name
        if name not in renamed:
            renamed[name] = pattern.sub("__", name) + str(len(renamed))
        return renamed[name]

    for node in graph.node:
        node.input[:] = [canonical(name) for name in node.input]
        node.output[:] = [canonical(name) for name in node.output]
        node.name = canonical(node.name)
    for collection in (graph.input, graph.output, graph.value_info):
        for info in collection:
            info.name = canonical(info.name)
            for dim in info.type.tensor_type.shape.dim:
                if dim.HasField("dim_param"):
                    dim.dim_param = canonical(dim.dim_param)  # `unk__150`: the same counter
    for init in graph.initializer:
        init.name = canonical(init.name)
    ordered = sorted(graph.initializer, key=lambda init: init.name)
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    return sum(old != new for old, new in renamed.items())


def rewrite(proto) -> dict[str, int]:
    """Every rewrite above, in place; how many nodes each changed."""
    return {"erfc": rewrite_erfc(proto), "global_max_pool": rewrite_global_max_pool(proto),
            "conv_transpose_pads": rewrite_asymmetric_conv_transpose(proto)}


def check_ops(proto, opset: int, layer_names: list[str]) -> None:
    """Raise BadInput naming the Keras layer and op of the first node that is not an ONNX op."""
    unknown = [node for node in proto.graph.node if not _is_onnx_op(node, opset)]
    if not unknown:
        return
    owners = layer_owners([node.name for node in proto.graph.node], layer_names)
    found = ", ".join(f"{node.op_type} (from layer {owners[node.name] or '?'}, ONNX node {node.name})" for node in unknown[:3])
    raise BadInput(f"tf2onnx could not convert op(s) {found} to ONNX opset {opset}; "
                   "replace that layer with standard layers, or try another --opset")
