"""Optimizing rewrites of the converted GraphModule, each small and checked by the caller.

onnx2torch mirrors the ONNX graph op for op: BatchNorm stays as a Mul and an Add after every conv,
each elementwise op is a wrapper module, a padded stride-2 conv is a Sequential. These passes turn
that into what PyTorch runs fastest, keeping the interface (NHWC float32 0..255 in, probabilities out):

- `native_ops`: onnx2torch's wrapper modules → plain torch functions (Mul/Add/Transpose/MatMul, Pad);
- `fold_batchnorm`: conv → Mul(scale) → Add(shift) becomes one conv with scaled weights and bias;
- `fold_linear`: MatMul(constant) → Add(constant), or MatMul alone, becomes `nn.Linear`.

`optimize` runs them all after `fx_passes.static_reshapes` and reports what each changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from pipeline.converters.fx_passes import constant_of as _constant
from pipeline.converters.fx_passes import static_reshapes
from pipeline.data.feeds import Sample


@dataclass
class OptimizeReport:
    reshapes_made_static: int
    native_ops: int
    batchnorms_folded: int
    linears_folded: int


def native_ops(gm: fx.GraphModule) -> int:
    """Replace onnx2torch's wrapper modules with the torch functions they call. Returns the count."""
    from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
    from onnx2torch.node_converters.matmul import OnnxMatMul
    from onnx2torch.node_converters.pad import OnnxPadStatic
    from onnx2torch.node_converters.transpose import OnnxTranspose

    changed = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        with gm.graph.inserting_before(node):
            if isinstance(module, OnnxBinaryMathOperation) and not module.broadcast:
                new = gm.graph.call_function(module.math_op_function, node.args)
            elif isinstance(module, OnnxTranspose) and module.perm is not None:
                new = gm.graph.call_function(torch.permute, (node.args[0], tuple(module.perm)))
            elif isinstance(module, OnnxMatMul):
                new = gm.graph.call_function(torch.matmul, node.args)
            elif (isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], OnnxPadStatic)
                  and isinstance(module[1], nn.Conv2d) and module[0].mode == "constant"):
                pad = gm.graph.call_function(F.pad, (node.args[0], tuple(module[0].pads), "constant", module[0].constant_value))
                conv_name = f"{node.target}_conv"
                gm.add_submodule(conv_name, module[1])
                new = gm.graph.call_module(conv_name, (pad,))
            else:
                continue
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        changed += 1
    _tidy(gm)
    return changed


def _single_user(node: fx.Node, target) -> fx.Node | None:
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_function" and users[0].target in target:
        return users[0]
    return None


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """conv → mul(per-channel constant) → add(per-channel constant) into the conv's weights. Returns the count."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.Conv2d):
            continue
        conv = gm.get_submodule(node.target)
        mul = _single_user(node, (torch.mul, torch.Tensor.mul))
        add = _single_user(mul, (torch.add, torch.Tensor.add)) if mul is not None else None
        if add is None:
            continue
        scale = _constant(gm, mul.args[1] if mul.args[0] is node else mul.args[0])
        shift = _constant(gm, add.args[1] if add.args[0] is mul else add.args[0])
        channels = conv.out_channels
        if scale is None or shift is None or scale.numel() != channels or shift.numel() != channels:
            continue
        if not scale.dtype == shift.dtype == conv.weight.dtype:
            continue  # a float32 scale on a float16 conv (mixed precision) promotes its output: folded, it would not
        if scale.dim() and scale.shape[-1] != 1 and scale.dim() > 1:
            continue  # not laid out per channel on dim 1
        scale, shift = scale.detach().reshape(-1), shift.detach().reshape(-1)
        with torch.no_grad():
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros(channels, dtype=conv.weight.dtype)
            conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias * scale + shift)
        add.replace_all_uses_with(node)
        gm.graph.erase_node(add)
        gm.graph.erase_node(mul)
        folded += 1
    _tidy(gm)
    return folded


def fold_linear(gm: fx.GraphModule) -> int:
    """matmul(x, constant W) [→ add(constant b)] into one `nn.Linear`. Returns the count."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not torch.matmul:
            continue
        weight = _constant(gm, node.args[1])
        if weight is None or weight.dim() != 2:
            continue
        add = _single_user(node, (torch.add, torch.Tensor.add))
        bias = _constant(gm, add.args[1] if add.args[0] is node else add.args[0]) if add is not None else None
        if bias is not None and (bias.numel() != weight.shape[1] or bias.dtype != weight.dtype):
            bias = None  # a bias of another dtype promotes the sum: it stays an add
        # in the weight's own dtype: a mixed-precision model's float16 matmul stays float16
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight.detach().T)
            if bias is not None:
                linear.bias.copy_(bias.detach().reshape(-1))
        name = f"linear_{folded}"
        gm.add_submodule(name, linear)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (node.args[0],))
        last = add if bias is not None else node
        last.replace_all_uses_with(new)
        if bias is not None:
            gm.graph.erase_node(add)
        gm.graph.erase_node(node)
        folded += 1
    _tidy(gm)
    return folded


def _tidy(gm: fx.GraphModule) -> None:
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()


def optimize(gm: fx.GraphModule, sample: Sample) -> tuple[fx.GraphModule, OptimizeReport]:
    """A rewritten copy of `gm` (the converted GraphModule is left as it was)."""
    gm = copy.deepcopy(gm)
    report = OptimizeReport(static_reshapes(gm, sample), 0, 0, 0)
    report.native_ops = native_ops(gm)
    report.batchnorms_folded = fold_batchnorm(gm)
    report.linears_folded = fold_linear(gm)
    return gm, report
