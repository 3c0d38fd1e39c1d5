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
  rows and columns — the same numbers;
- `BatchNormalization` with scale and bias expanded from constants to a shape computed at run time
  (tf-keras's `LayerNormalization`): its arithmetic, Sub/Div/Sqrt/Mul/Add — the same formula;
- a `Resize` by scales that float64 arithmetic floors one row short of the size ONNX Runtime (float32) and
  Keras give: the same `Resize` by sizes, so that every reader of the graph gets the same size.

In the float64 rebuild's graph, `float64_resize_clips` makes float64 the float32 clip that tf2onnx writes after
TensorFlow's bilinear resize (whose float64 reference `tf_side.float64_resize` computes); `float32_part` names
any other layer of the float64 rebuild that TensorFlow computed in float32.
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


def rewrite_resize_scales(proto) -> int:
    """Give every constant-scale `Resize` whose output size float64 arithmetic floors one short the sizes instead,
    in place; return how many.

    tf2onnx writes Keras `Resizing(7, 9)` on 20×28 as the scales float32(7/20) and float32(9/28). ONNX Runtime
    takes `floor(size · scale)` in float32 — 7 —, ONNX shape inference and torch's `interpolate` in float64 —
    6.99… → 6: the checker refuses the graph and onnx2torch drops a row. Given the sizes (batch and channels read
    with `Shape`, the rest ONNX Runtime's), every reader gets the same size, and ONNX Runtime the same scale
    (float32 of output/input size: the value tf2onnx wrote). The scale itself cannot be nudged instead: a
    nearest resize's sampling positions fall on whole numbers, where a float32 step moves a row. Input sizes
    come from shape inference, redone after each change: an earlier resize's size is what the next one reads."""
    from onnx import helper, numpy_helper, shape_inference

    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), 13)
    changed, shapes = 0, None
    for number, node in enumerate([node for node in graph.node if node.op_type == "Resize"]):
        init = initializers.get(node.input[2]) if len(node.input) > 2 else None
        if init is None:
            continue  # scales computed at run time, or sizes given: `onnx_ops.resize` sizes them as ONNX Runtime does
        scales = numpy_helper.to_array(init).astype(np.float32)
        if scales.size < 3 or list(scales[:2]) != [1, 1]:
            continue  # a resize of the batch or channels: given as sizes, it would lose that
        if shapes is None:  # inferred again only after a change: an earlier resize's size is what the next one reads
            inferred = shape_inference.infer_shapes(proto)
            shapes = {info.name: [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
                      for info in [*inferred.graph.value_info, *inferred.graph.input]}
        size = shapes.get(node.input[0])
        if not size or len(size) != len(scales) or any(dim is None for dim in size[2:]):
            continue
        spatial = [int(np.floor(np.float32(dim) * scale)) for dim, scale in zip(size[2:], scales[2:], strict=True)]  # in float32
        if spatial == [int(np.floor(float(dim) * float(scale))) for dim, scale in zip(size[2:], scales[2:], strict=True)]:
            continue
        index, prefix = list(graph.node).index(node), f"{node.name or f'Resize_{number}'}/sizes"
        new, op = _node_maker(prefix)
        fixed = numpy_helper.from_array(np.array(spatial, np.int64), f"{prefix}/spatial")
        start, stop = (numpy_helper.from_array(np.array([bound], np.int64), f"{prefix}/{which}") for bound, which in ((0, "start"), (2, "stop")))
        graph.initializer.extend([fixed, start, stop])
        batch_channels = op("Slice", [op("Shape", [node.input[0]]), start.name, stop.name])
        new.append(helper.make_node("Concat", [batch_channels, fixed.name], [f"{prefix}/all"], name=f"{prefix}/Concat", axis=0))
        no_scales = ""
        if opset < 13:  # Resize-11 takes its scales as an input always: an empty tensor where sizes are given
            no_scales = f"{prefix}/no_scales"
            graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), no_scales))
        node.input[:] = [node.input[0], node.input[1], no_scales, new[-1].output[0]]
        shapes = None
        for offset, made in enumerate(new):
            graph.node.insert(index + offset, made)
        changed += 1
        if not any(init.name in other.input for other in graph.node):  # the scales no node reads now (ONNX Runtime warns of it)
            graph.initializer.remove(init)
    return changed


def _scalar_expanded(graph, name: str) -> float | None:
    """The value of `name` where it is `Expand` of a one-element constant (a shape read at run time); else None."""
    from onnx import numpy_helper

    producer = next((node for node in graph.node if name in node.output), None)
    if producer is None or producer.op_type != "Expand":
        return None
    source = producer.input[0]
    init = next((init for init in graph.initializer if init.name == source), None)
    constant = next((node for node in graph.node if source in node.output and node.op_type == "Constant"), None)
    value = numpy_helper.to_array(init) if init is not None else (
        numpy_helper.to_array(constant.attribute[0].t) if constant is not None and constant.attribute[0].name == "value" else None)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _node_maker(prefix: str):
    """A list of new nodes, and `op(kind, inputs, output=None)` appending one named after `prefix` and returning its output."""
    from onnx import helper

    nodes: list = []

    def op(kind: str, inputs: list[str], output: str | None = None) -> str:
        out = output or f"{prefix}/{kind}_{len(nodes)}"
        nodes.append(helper.make_node(kind, inputs, [out], name=f"{prefix}/{kind}_{len(nodes)}"))
        return out

    return nodes, op


def rewrite_normalization_by_batchnorm(proto) -> int:
    """Replace every `BatchNormalization` whose scale and bias are a constant expanded to a shape computed
    at run time — tf-keras's `LayerNormalization`, a fused batch norm over (batch × steps) channels — by
    its arithmetic, `(x − mean) / √(var + ε) · scale + bias`, with the scalars as they are; in place.
    Returns how many. (onnx2torch runs the Expand by a shape it reads from a tensor, which `torch.export`
    cannot trace.)"""
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    targets = [i for i, node in enumerate(graph.node) if node.op_type == "BatchNormalization" and len(node.output) == 1
               and not any(a.name == "training_mode" and a.i for a in node.attribute)
               and _scalar_expanded(graph, node.input[1]) is not None and _scalar_expanded(graph, node.input[2]) is not None]
    if not targets:
        return 0
    ranks = {info.name: len(info.type.tensor_type.shape.dim) for info in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    dtype = np.float64 if graph.input and graph.input[0].type.tensor_type.elem_type == 11 else np.float32  # 11: DOUBLE
    rewritten = 0
    expanded: set[str] = set()  # the scale and bias Expands of the rewritten nodes
    for index in reversed(targets):
        node = graph.node[index]
        rank = ranks.get(node.input[0])
        if rank is None or rank < 2:
            continue
        x, scale, bias, mean, var = node.input
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        name = node.name or f"batchnorm_{index}"
        constants = {"axes": np.arange(1, rank - 1, dtype=np.int64), "epsilon": np.array(epsilon, dtype),
                     "scale": np.array(_scalar_expanded(graph, scale), dtype), "bias": np.array(_scalar_expanded(graph, bias), dtype)}
        graph.initializer.extend(numpy_helper.from_array(value, f"{name}/{key}") for key, value in constants.items())
        new, op = _node_maker(name)
        # mean and var are per channel (axis 1): (C,) → (C, 1, …, 1), to broadcast over (N, C, …)
        channel_mean = op("Unsqueeze", [mean, f"{name}/axes"]) if rank > 2 else mean
        channel_var = op("Unsqueeze", [var, f"{name}/axes"]) if rank > 2 else var
        normalized = op("Div", [op("Sub", [x, channel_mean]), op("Sqrt", [op("Add", [channel_var, f"{name}/epsilon"])])])
        op("Add", [op("Mul", [normalized, f"{name}/scale"]), f"{name}/bias"], node.output[0])
        expanded |= {scale, bias}
        del graph.node[index]
        for offset, added in enumerate(new):
            graph.node.insert(index + offset, added)
        rewritten += 1
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    used |= {name for node in graph.node for attribute in node.attribute if attribute.HasField("g")
             for inner in attribute.g.node for name in inner.input}  # a loop body's reads of this graph
    for index in reversed(range(len(graph.node))):  # those Expands, where nothing reads them now
        out = graph.node[index].output[0]
        if graph.node[index].op_type == "Expand" and out in expanded and out not in used:
            del graph.node[index]
    return rewritten


# Arithmetic that makes values: a float32 constant among its operands in the float64 rebuild's graph marks a
# part that TensorFlow computed in float32. (Comparisons are left out: a float32 bound on token ids or a loop
# counter decides, it does not compute a value of the model.)
_SAME_TYPE_OPS = {"Add", "Sub", "Mul", "Div", "Min", "Max", "Clip", "Sum", "Mean"}  # not Pow: its exponent has a type of its own


def float64_resize_clips(proto) -> int:
    """In the float64 rebuild's graph (its input float64), make float64 the float32 constants of the `Min`/`Max`
    right after a bilinear half-pixel `Resize`, in place; return how many. TensorFlow's `ResizeBilinear`
    returns float32 whatever its input, and Keras clips that to float32's range before casting it back:
    ONNX's `Resize` keeps its input's type, so the graph holds a float64 resize clipped by float32 bounds
    (±3.4e38, exact in float64). The reference computes that resize in float64 (`tf_side.float64_resize`)."""
    from onnx import TensorProto, numpy_helper

    graph = proto.graph
    if not graph.input or graph.input[0].type.tensor_type.elem_type != TensorProto.DOUBLE:
        return 0
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer if init.data_type == TensorProto.FLOAT}
    constants |= {node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in graph.node
                  if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
                  and node.attribute[0].t.data_type == TensorProto.FLOAT}
    bilinear = {node.output[0] for node in graph.node if node.op_type == "Resize"
                and _attribute(node, "mode", b"nearest") == b"linear"
                and _attribute(node, "coordinate_transformation_mode", b"half_pixel") == b"half_pixel"}
    clipped, changed = set(bilinear), 0
    for node in graph.node:  # the clip is Min then Max (or Max then Min), in graph order
        if node.op_type not in ("Min", "Max") or len(node.input) != 2 or node.input[0] not in clipped:
            continue
        bound = constants.get(node.input[1])
        if bound is None or bound.size != 1 or abs(float(bound.reshape(-1)[0])) != float(np.finfo(np.float32).max):
            continue
        name = f"{node.input[1]}_float64"
        if name not in {init.name for init in graph.initializer}:
            graph.initializer.append(numpy_helper.from_array(bound.astype(np.float64), name))
        node.input[1] = name
        clipped.add(node.output[0])
        changed += 1
    read = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name in constants and init.name not in read]:
        graph.initializer.remove(init)  # the float32 bounds replaced above
    return changed


def _attribute(node, name: str, default):
    """`node`'s attribute `name` (its value of any type), or `default`."""
    from onnx import helper

    found = [helper.get_attribute_value(a) for a in node.attribute if a.name == name]
    return found[0] if found else default


def float32_part(proto, layer_names: list[str]) -> str | None:
    """In the float64 rebuild's graph (its input float64), the Keras layer that TensorFlow computed in
    float32 all the same, or None: a float32 constant among a value-making op's operands (after
    `float64_resize_clips`, which takes the bilinear resize's, whose float64 reference is computed). Such a
    layer has no float64 reference, so the model has no float64 proof (said, not failed)."""
    from onnx import TensorProto

    graph = proto.graph
    if not graph.input or graph.input[0].type.tensor_type.elem_type != TensorProto.DOUBLE:
        return None
    float32 = {init.name for init in graph.initializer if init.data_type == TensorProto.FLOAT}
    float32 |= {node.output[0] for node in graph.node if node.op_type == "Constant" and node.attribute
                and node.attribute[0].name == "value" and node.attribute[0].t.data_type == TensorProto.FLOAT}
    owners = layer_owners([node.name for node in graph.node], layer_names)
    for node in graph.node:
        if node.op_type in _SAME_TYPE_OPS and float32 & set(node.input):
            return owners.get(node.name) or node.name
    return None


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

    _rename_graph(graph, canonical)
    return sum(old != new for old, new in renamed.items())


def _rename_graph(graph, canonical) -> None:
    """Every name in `graph` through `canonical`, in place — and in the graphs its nodes hold (a Loop's
    body reads the outer graph's values by name: one mapping for all keeps those reads pointing at the
    same values)."""
    from onnx import AttributeProto

    for node in graph.node:
        node.input[:] = [canonical(name) for name in node.input]
        node.output[:] = [canonical(name) for name in node.output]
        node.name = canonical(node.name)
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                _rename_graph(attribute.g, canonical)
            elif attribute.type == AttributeProto.GRAPHS:
                for body in attribute.graphs:
                    _rename_graph(body, canonical)
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


def rewrite(proto) -> dict[str, int]:
    """Every rewrite above, in place; how many nodes each changed."""
    return {"erfc": rewrite_erfc(proto), "global_max_pool": rewrite_global_max_pool(proto),
            "conv_transpose_pads": rewrite_asymmetric_conv_transpose(proto),
            "normalization_by_batchnorm": rewrite_normalization_by_batchnorm(proto), "resize_scales": rewrite_resize_scales(proto)}


def check_ops(proto, opset: int, layer_names: list[str]) -> None:
    """Raise BadInput naming the Keras layer and op of the first node that is not an ONNX op."""
    unknown = [node for node in proto.graph.node if not _is_onnx_op(node, opset)]
    if not unknown:
        return
    owners = layer_owners([node.name for node in proto.graph.node], layer_names)
    found = ", ".join(f"{node.op_type} (from layer {owners[node.name] or '?'}, ONNX node {node.name})" for node in unknown[:3])
    raise BadInput(f"tf2onnx could not convert op(s) {found} to ONNX opset {opset}; "
                   "replace that layer with standard layers, or try another --opset")
