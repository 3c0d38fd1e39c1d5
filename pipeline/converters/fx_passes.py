"""Small, tested rewrites of onnx2torch's `torch.fx.GraphModule`.

`static_reshapes`: onnx2torch's `OnnxReshape` takes its target shape as a tensor and branches on its
data (`torch.any(shape == 0)`), which `torch.export` and `torch.compile` cannot trace ("Could not
guard on data-dependent expression", onnx2torch issue #225); its Squeeze and Unsqueeze (opset ≥ 13)
take their axes as a tensor and fail the same way. The shapes are constants of the model, so each
Reshape, Squeeze and Unsqueeze is replaced by `torch.reshape(x, shape)` with the shape observed by running the graph,
keeping the batch dimension dynamic as -1. The now-unused shape tensors and modules are removed.

`static_slices`: onnx2torch's Slice, Tile, Split (and Squeeze/Unsqueeze, in a Loop's body, which
`static_reshapes` cannot run) read their starts/ends/repeats/sizes/axes tensors with `.numpy()`,
which `torch.export` cannot do with the traced constants. Where those are constants of the graph,
they are read once here and the module becomes plain indexing (`x[...]`) or `torch.tile`.

`static_pads`: onnx2torch's dynamic Pad (opset ≥ 11) reads its pads tensor with `.tolist()`, which
`torch.export` traces as data-dependent sizes: every later shape becomes an expression of unbacked
symbols, and `torch.export.load` parses each one with sympy (MobileNetV3Small's four pads: 37,381
parses, a 32 s load). Where the pads are constants of the graph, the module becomes `F.pad` with them.

`static_expands`: onnx2torch's Expand and ConstantOfShape build `torch.Size(shape)` from a tensor —
tf2onnx's zero initial state of a recurrent loop, made to the batch read with `Shape` at run time.
Each becomes `torch.broadcast_to` / `torch.full` with the shape observed by running the graph, its
batch dimension taken from the input's own (the batch, or the batch times a constant).

`static_resizes`: onnx2torch's Resize reads its scales or sizes with `.tolist()`; it becomes
`F.interpolate` to the output size observed by running the graph (by size, as TensorFlow steps).

`with_logits`: a copy of the graph that also returns the input of its final Softmax, the pre-softmax
logits, which the converted model otherwise never exposes.
"""

from __future__ import annotations

import copy

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from pipeline.common.errors import BadInput
from pipeline.converters.examples import example_tensors
from pipeline.data.feeds import Sample

# Two different batch sizes tell the batch dimension apart from the model's constant dimensions.
_PROBE_BATCHES = (2, 3)


def _is_onnx_reshape(module: torch.nn.Module) -> bool:
    """onnx2torch modules that only reshape, taking their target (shape or axes) as a runtime tensor."""
    from onnx2torch.node_converters.reshape import OnnxReshape
    from onnx2torch.node_converters.squeeze import OnnxSqueezeDynamicAxes
    from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeDynamicAxes

    return isinstance(module, (OnnxReshape, OnnxSqueezeDynamicAxes, OnnxUnsqueezeDynamicAxes))


def _output_shapes(gm: fx.GraphModule, sample, batch: int) -> dict[str, torch.Size]:
    with torch.no_grad():  # a BatchNorm fed computed statistics (tf-keras LayerNormalization) refuses them with grad on
        ShapeProp(gm).propagate(*example_tensors(sample, batch))
    # a node of several outputs (a recurrent op's) has a tuple of metas: its getitem nodes have the shapes
    return {node.name: node.meta["tensor_meta"].shape for node in gm.graph.nodes if hasattr(node.meta.get("tensor_meta"), "shape")}


def static_reshapes(gm: fx.GraphModule, sample: Sample) -> int:
    """Replace every onnx2torch Reshape, Squeeze and Unsqueeze in `gm` (in place) by `torch.reshape` with a static shape.

    Args:
        gm: the converted GraphModule; changed in place and recompiled.
        sample: one input sample's shape, without the batch dimension (a `feeds.Layout` for several inputs).

    Returns:
        The number of Reshape nodes replaced.

    Raises:
        BadInput: a Reshape whose output depends on the batch size other than through one dimension, in proportion.
    """
    reshapes = [n for n in gm.graph.nodes if n.op == "call_module" and _is_onnx_reshape(gm.get_submodule(n.target))]
    if not reshapes:
        return 0
    small, large = (_output_shapes(gm, sample, b) for b in _PROBE_BATCHES)
    for node in reshapes:
        shape_small, shape_large = list(small[node.name]), list(large[node.name])
        varying = [i for i, (a, b) in enumerate(zip(shape_small, shape_large, strict=True)) if a != b]
        if not varying:
            target = tuple(shape_small)
        elif len(varying) == 1 and _proportional_to_batch(shape_small[varying[0]], shape_large[varying[0]]):
            # The batch alone, or the batch times fixed sizes (a Dense on a rank-4 tensor: (N·H·W, C)): -1 there.
            target = tuple(-1 if i == varying[0] else d for i, d in enumerate(shape_small))
        else:
            raise BadInput(f"Reshape {node.target!r} mixes the batch dimension into others {shape_small}; cannot make it static")
        _swap(gm, node, torch.reshape, (node.args[0], target))
    _tidy(gm)
    return len(reshapes)


def static_expands(gm: fx.GraphModule, sample: Sample) -> int:
    """Replace every onnx2torch Expand and ConstantOfShape in `gm` (in place) by `broadcast_to_batch` /
    `full_to_batch` with the shape observed at two batch sizes; return how many.

    Raises:
        BadInput: a shape that depends on the batch size other than through one dimension, in proportion.
    """
    from onnx2torch.node_converters.constant_of_shape import OnnxConstantOfShape
    from onnx2torch.node_converters.expand import OnnxExpand

    kinds = (OnnxExpand, OnnxConstantOfShape)
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), kinds)]
    if not nodes:
        return 0
    batch_source = next(n for n in gm.graph.nodes if n.op == "placeholder")
    small, large = (_output_shapes(gm, sample, b) for b in _PROBE_BATCHES)
    for node in nodes:
        shape_small, shape_large = list(small[node.name]), list(large[node.name])
        varying = [i for i, (a, b) in enumerate(zip(shape_small, shape_large, strict=True)) if a != b]
        if len(varying) > 1 or (varying and not _proportional_to_batch(shape_small[varying[0]], shape_large[varying[0]])):
            raise BadInput(f"{node.target!r} mixes the batch dimension into others {shape_small}; cannot make it static")
        batch = (varying[0], shape_small[varying[0]] // _PROBE_BATCHES[0]) if varying else (None, 0)
        module = gm.get_submodule(node.target)
        if isinstance(module, OnnxExpand):
            _swap(gm, node, broadcast_to_batch, (node.args[0], batch_source, tuple(shape_small), *batch))
        else:
            fill = module.value.item()
            _swap(gm, node, full_to_batch, (batch_source, tuple(shape_small), *batch, fill, module.value.dtype))
    _tidy(gm)
    return len(nodes)


def static_resizes(gm: fx.GraphModule, sample: Sample) -> int:
    """Replace every Resize of spatial dimensions in `gm` (`onnx_ops.resize`, in place) by `F.interpolate` to the output
    size observed at two batch sizes (the same at both: the model's spatial sizes are fixed); return how many.

    Raises:
        BadInput: a Resize whose spatial output size depends on the batch.
    """
    import torch.nn.functional as F

    from pipeline.converters.onnx_ops.resize import Resize

    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), Resize)]
    if not nodes:
        return 0
    small, large = (_output_shapes(gm, sample, b) for b in _PROBE_BATCHES)
    # decided before any swap: a swapped resize's replacement has a name the shapes were not observed under
    spatial = [n for n in nodes if isinstance(n.args[0], fx.Node) and list(small.get(n.args[0].name, ())[:2]) == list(small[n.name][:2])]
    for node in spatial:  # the others resize the batch or channels: onnx2torch refuses them, at run time
        module = gm.get_submodule(node.target)
        if list(small[node.name][2:]) != list(large[node.name][2:]):
            raise BadInput(f"Resize {node.target!r} has a spatial size that depends on the batch; cannot make it static")
        mode = module.torch_mode(len(small[node.name]) - 2)
        # By size, not by the node's scales: torch then steps by input/output size in the tensor's own precision,
        # as TensorFlow does; a float32 scale (10/12) is off by 1e-8, which the float64 proof would see.
        options = {"mode": mode, "align_corners": module.align_corners, "size": [int(v) for v in small[node.name][2:]]}
        _swap(gm, node, F.interpolate, (node.args[0],), options)
    _tidy(gm)
    return len(spatial)


def _with_batch(reference: torch.Tensor, shape: tuple[int, ...], batch_dim: int | None, per_batch: int) -> tuple:
    """`shape` with its dimension `batch_dim` (if any) set to `reference`'s batch times `per_batch`."""
    if batch_dim is None:
        return shape
    return (*shape[:batch_dim], reference.shape[0] * per_batch, *shape[batch_dim + 1:])


def broadcast_to_batch(value: torch.Tensor, reference: torch.Tensor, shape: tuple[int, ...], batch_dim: int | None,
                       per_batch: int) -> torch.Tensor:
    """`value` broadcast to `shape`, whose dimension `batch_dim` (if any) is `reference`'s batch times `per_batch`."""
    return torch.broadcast_to(value, _with_batch(reference, shape, batch_dim, per_batch))


def full_to_batch(reference: torch.Tensor, shape: tuple[int, ...], batch_dim: int | None, per_batch: int, fill,
                  dtype: torch.dtype) -> torch.Tensor:
    """A tensor of `fill` of `shape` (`batch_dim` as in `broadcast_to_batch`), on `reference`'s device."""
    return torch.full(_with_batch(reference, shape, batch_dim, per_batch), fill, dtype=dtype, device=reference.device)


def _swap(gm: fx.GraphModule, node: fx.Node, target, args: tuple, kwargs: dict | None = None) -> fx.Node:
    """Replace `node` (an onnx2torch module call) by a call of the function `target`, in place; return the call."""
    with gm.graph.inserting_after(node):
        replacement = gm.graph.call_function(target, args, kwargs)
    node.replace_all_uses_with(replacement)
    gm.graph.erase_node(node)
    return replacement


def _tidy(gm: fx.GraphModule) -> None:
    """After `_swap`s: drop the constants and modules nothing uses any more, and recompile. (An unused
    constant would stay an input of the exported program: an empty one — a Resize's `roi` — makes
    `torch.export.save` fail with "numel: integer multiplication overflow".)"""
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    used = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    container = getattr(gm, "initializers", None)
    for name, _ in list(container.named_buffers(recurse=False)) if container is not None else []:
        if f"initializers.{name}" not in used:
            delattr(container, name)
    gm.recompile()


def _proportional_to_batch(small: int, large: int) -> bool:
    """A dimension of size `small` at the first probe batch and `large` at the second is the batch times a constant."""
    batch_small, batch_large = _PROBE_BATCHES
    return small % batch_small == 0 and large % batch_large == 0 and small // batch_small == large // batch_large


_CONV2D_DEFAULTS = (None, None, None, (1, 1), (0, 0), (1, 1), 1)  # aten.conv2d's arguments where a call leaves them out


def plain_conv2d(gm: fx.GraphModule, node: fx.Node) -> tuple | None:
    """(x, weight node, bias node, stride, padding, the weight's tensor) of `node` where it is an `aten.conv2d`
    that a rewrite into our own convolutions covers — batched 4-D input, groups 1, dilation 1, numeric
    padding, a weight that is a constant of `gm` — else None."""
    if node.op != "call_function" or node.target is not torch.ops.aten.conv2d.default or node.kwargs:
        return None
    x, weight, bias, stride, padding, dilation, groups = (*node.args, *_CONV2D_DEFAULTS[len(node.args):])
    value, tensor = x.meta.get("val"), constant_of(gm, weight)
    if groups != 1 or tuple(dilation) != (1, 1) or value is None or value.dim() != 4 or tensor is None or isinstance(padding, str):
        return None
    return x, weight, bias, tuple(stride), tuple(padding), tensor


def constant_of(gm: fx.GraphModule, arg) -> torch.Tensor | None:
    """The tensor behind a `get_attr` node (an ONNX initializer), or None if `arg` is not one."""
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return None
    value = gm
    for part in arg.target.split("."):
        value = getattr(value, part)
    return value if isinstance(value, torch.Tensor) else None


def _onnx_slice_index(starts, ends, axes, steps) -> tuple:
    """ONNX Slice's (starts, ends, axes, steps) as a Python index; None if it needs a negative step."""
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    if any(step < 1 for step in steps) or any(axis < 0 for axis in axes):
        return None
    by_axis = {axis: slice(int(start), int(end), step) for start, end, axis, step in zip(starts, ends, axes, steps, strict=True)}
    return tuple(by_axis.get(axis, slice(None)) for axis in range(max(axes) + 1))


def static_slices(gm: fx.GraphModule) -> int:
    """Replace onnx2torch Slice, Tile, Split, Squeeze and Unsqueeze modules whose parameters are graph
    constants (in place). (Where its graph can be run, `static_reshapes` makes every Squeeze static first.)

    Returns:
        The number of modules replaced.
    """
    import operator

    from onnx2torch.node_converters.slice import OnnxSlice
    from onnx2torch.node_converters.split import OnnxSplit13
    from onnx2torch.node_converters.squeeze import OnnxSqueezeDynamicAxes
    from onnx2torch.node_converters.tile import OnnxTile
    from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeDynamicAxes

    replaced = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        constants = [constant_of(gm, arg) for arg in node.args[1:]]
        kinds = (OnnxSlice, OnnxTile, OnnxSplit13, OnnxSqueezeDynamicAxes, OnnxUnsqueezeDynamicAxes)
        if not isinstance(module, kinds) or node.kwargs or any(c is None for c in constants):
            continue
        values = [c.tolist() for c in constants]
        if isinstance(module, (OnnxSqueezeDynamicAxes, OnnxUnsqueezeDynamicAxes)):
            if len(values) != 1:
                continue
            target = squeeze_axes if isinstance(module, OnnxSqueezeDynamicAxes) else unsqueeze_axes
            _swap(gm, node, target, (node.args[0], tuple(int(a) for a in values[0])))
            replaced += 1
            continue
        if isinstance(module, OnnxSplit13):
            if not values:
                continue
            _swap(gm, node, torch.split, (node.args[0], [int(v) for v in values[0]]), {"dim": module.axis})
            replaced += 1
            continue
        if isinstance(module, OnnxTile):
            target, args = torch.tile, (node.args[0], tuple(int(r) for r in values[0]))
        else:
            index = _onnx_slice_index(*values, *[None] * (4 - len(values)))
            if index is None:
                continue
            target, args = operator.getitem, (node.args[0], index)
        _swap(gm, node, target, args)
        replaced += 1
    if replaced:
        _tidy(gm)
    return replaced


def squeeze_axes(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """ONNX Squeeze with its axes known (negative ones counted from `x`'s rank; none: every size-1 dimension)."""
    if not axes:
        return torch.squeeze(x)
    for axis in sorted((axis % x.dim() for axis in axes), reverse=True):
        x = torch.squeeze(x, axis)
    return x


def unsqueeze_axes(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """ONNX Unsqueeze with its axes known (negative ones counted from the output's rank), the lowest first."""
    rank = x.dim() + len(axes)
    for axis in sorted(axis % rank for axis in axes):
        x = torch.unsqueeze(x, axis)
    return x


def _torch_pads(onnx_pads: list[int]) -> tuple[int, ...]:
    """ONNX pads ([x1_begin, x2_begin, …, x1_end, x2_end, …]) in `F.pad`'s order (last axis first, begin then end)."""
    half = len(onnx_pads) // 2
    begins, ends = onnx_pads[:half], onnx_pads[half:]
    return tuple(int(pad) for axis in reversed(range(half)) for pad in (begins[axis], ends[axis]))


def static_pads(gm: fx.GraphModule) -> int:
    """Replace onnx2torch dynamic Pad modules whose pads (and fill value) are graph constants by `F.pad` (in place).

    Returns:
        The number of modules replaced.
    """
    from onnx2torch.node_converters.pad import OnnxPadDynamic

    replaced = 0
    for node in list(gm.graph.nodes):
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(module, OnnxPadDynamic) or node.kwargs:
            continue
        constants = [constant_of(gm, arg) for arg in node.args[1:]]
        if any(c is None for c in constants):
            continue
        pads = _torch_pads(constants[0].tolist())
        if module.mode != "constant" and any(pads[-4:]):
            continue  # onnx2torch refuses these at run time; left as they are, so it still does
        value = float(constants[1]) if len(constants) > 1 and constants[1].numel() else 0.0
        pads = pads if module.mode == "constant" else pads[:-4]
        _swap(gm, node, torch.nn.functional.pad, (node.args[0], pads),
              {"mode": module.mode, **({"value": value} if module.mode == "constant" else {})})
        replaced += 1
    if replaced:
        _tidy(gm)
    return replaced


def final_softmax(gm: fx.GraphModule) -> fx.Node | None:
    """The node the graph returns, if it is a Softmax module or function; else None."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    result = output.args[0]
    if not isinstance(result, fx.Node):
        return None
    if result.op == "call_module" and isinstance(gm.get_submodule(result.target), torch.nn.Softmax):
        return result
    if result.op == "call_function" and result.target in (torch.softmax, torch.nn.functional.softmax):
        return result
    return None


def with_logits(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of `gm` returning (logits, probabilities), or None if it does not end in a Softmax."""
    gm = copy.deepcopy(gm)
    softmax = final_softmax(gm)
    if softmax is None:
        return None
    output = next(n for n in gm.graph.nodes if n.op == "output")
    output.args = ((softmax.args[0], softmax),)
    gm.recompile()
    return gm
