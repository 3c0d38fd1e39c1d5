"""Convolutions rewritten as calls of our own kernel (`runtimes.direct_conv`, `k2t::conv2d_direct`): computed
directly in the channels-last layout, a residual Add and a ReLU that follow fused in. The batch-1 model of `model_aoti.pt2` is
compiled from a program rewritten so where the kernel runs (AVX-512); elsewhere `conv_as_gemm`'s.
"""

from __future__ import annotations

PACKED_PREFIX, BIAS_PREFIX = "direct_packed_", "direct_bias_"  # the buffers `rewrite` adds, one pair per convolution
# The kernel keeps no weights in cache across rows: with more input channels than this it streams them and
# loses to im2col + GEMM, measured at batch 1 on 2 threads (docs/speed.md, "The batch-1 model on other models"): 145–183 GMAC/s
# against 70–100 up to 128 channels (ResNet50's 56×56 and 28×28 layers, ResNet8's), 23–42 against 85–100
# from 256 (its 14×14 and 7×7 ones). Those convolutions are left to `conv_as_gemm`.
MAX_IN_CHANNELS = 128


def _fold_zero_pad(x, padding: tuple):
    """(input, padding) for a convolution of `x` with `padding` (rows, columns): where `x` is a zero `aten.pad`
    of the last two dimensions used by this convolution alone — TensorFlow's 'same' at stride 2 pads the
    bottom and the right only — its input, and the padding (top, bottom, left, right) of both together."""
    import torch

    top = bottom = padding[0]
    left = right = padding[1]
    pads = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)
    if (x.op != "call_function" or x.target not in pads or len(x.users) != 1 or x.kwargs or len(x.args) < 2
            or len(x.args[1]) != 4 or min(x.args[1]) < 0):
        return x, padding
    if x.target is torch.ops.aten.pad.default:  # (input, pad, mode, value)
        zero = (x.args[2] if len(x.args) > 2 else "constant") == "constant" and not (x.args[3] if len(x.args) > 3 else 0.0)
    else:  # aten.constant_pad_nd, what the pad decomposes into: (input, pad, value)
        zero = not (x.args[2] if len(x.args) > 2 else 0.0)
    if zero:
        pad_left, pad_right, pad_top, pad_bottom = x.args[1]
        return x.args[0], (top + pad_top, bottom + pad_bottom, left + pad_left, right + pad_right)
    return x, padding


def rewrite(gm) -> int:
    """Replace, in place, every `aten.conv2d` of the exported module `gm` that the kernel covers (batched 4-D
    float input, groups 1, dilation 1, the same stride on both axes, at most MAX_IN_CHANNELS input channels,
    weight and bias constants of `gm`) by
    `k2t.conv2d_direct`, with what follows folded in where it is the convolution's only user: a residual Add
    (of a tensor of the output's shape and type), then a ReLU; and a zero pad before it that only it reads;
    each packed weight and bias added to `gm` as buffers. Returns how many convolutions were replaced.
    `runtimes.direct_conv.load()` must have registered the operator."""
    import torch

    from pipeline.converters.fx_passes import constant_of, plain_conv2d
    from pipeline.runtimes import direct_conv

    relu, add = torch.ops.aten.relu.default, torch.ops.aten.add.Tensor
    replaced = 0
    for node in list(gm.graph.nodes):
        if (conv := plain_conv2d(gm, node)) is None:
            continue
        x, _, bias, stride, padding, tensor = conv
        bias_tensor = None if bias is None else constant_of(gm, bias)
        if (tensor.shape[1] > MAX_IN_CHANNELS or len(set(stride)) != 1 or x.meta["val"].dtype != torch.float32
                or (bias is not None and bias_tensor is None)):
            continue
        x, padding = _fold_zero_pad(x, padding)
        packed, full_bias = direct_conv.pack(tensor.detach(), None if bias_tensor is None else bias_tensor.detach())
        gm.register_buffer(f"{PACKED_PREFIX}{replaced}", packed)
        gm.register_buffer(f"{BIAS_PREFIX}{replaced}", full_bias)
        # What follows, folded in where it is the convolution's only user: a residual Add, then a ReLU.
        chain, residual = [node], None  # the convolution and what is folded into it, in graph order
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_function" and users[0].target is add and not users[0].kwargs:
            others = [a for a in users[0].args if a is not node]
            value_out, other = users[0].meta.get("val"), others[0] if len(others) == 1 else None
            conv_out = node.meta.get("val")
            other_value = other.meta.get("val") if isinstance(other, torch.fx.Node) else None
            # the same shape and type as the convolution's output: no broadcast, no promotion, the kernel adds it as is
            if (value_out is not None and conv_out is not None and other_value is not None
                    and tuple(other_value.shape) == tuple(conv_out.shape) == tuple(value_out.shape)
                    and other_value.dtype == conv_out.dtype == torch.float32):
                chain.append(users[0])
                residual = other
        users = list(chain[-1].users)
        fuse = len(users) == 1 and users[0].op == "call_function" and users[0].target is relu
        if fuse:
            chain.append(users[0])
        with gm.graph.inserting_before(chain[-1]):  # after the residual, which may come after the convolution
            args = (x, gm.graph.get_attr(f"{PACKED_PREFIX}{replaced}"), gm.graph.get_attr(f"{BIAS_PREFIX}{replaced}"),
                    int(tensor.shape[0]), list(stride), list(padding), fuse, residual)
            call = gm.graph.call_function(torch.ops.k2t.conv2d_direct.default, args)
        call.meta = dict(chain[-1].meta)  # its value, which the next convolution's match reads
        chain[-1].replace_all_uses_with(call)
        for done in reversed(chain):
            gm.graph.erase_node(done)
        replaced += 1
    gm.graph.eliminate_dead_code()  # the weights' own get_attr nodes, now unused
    gm.recompile()
    return replaced
