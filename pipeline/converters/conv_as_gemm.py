"""Convolutions rewritten as im2col + matrix multiply in the channels-last layout, so that inductor's CPU
GEMM templates (`max_autotune`) can compile them: inductor has templates for matrix multiplies on the CPU,
none for convolutions, which it hands to oneDNN one call at a time.

One of the settings `make aot-options` measures; the shipped package does not use it (README, "Speed").
"""

from __future__ import annotations


def conv_as_gemm(x, weight, bias, stride: tuple[int, int], padding: tuple[int, int]):
    """`conv2d(x, weight, bias, stride, padding)` (NCHW in and out, groups 1, dilation 1) as the patches of the
    channels-last input, (N·Ho·Wo, kh·kw·Cin), times the weight as a (kh·kw·Cin, Cout) matrix."""
    import torch

    n, _, height, width = x.shape
    out_channels, in_channels, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    nhwc = x.permute(0, 2, 3, 1)
    if ph or pw:
        nhwc = torch.nn.functional.pad(nhwc, (0, 0, pw, pw, ph, ph))
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    taps = [nhwc[:, i: i + sh * (out_h - 1) + 1: sh, j: j + sw * (out_w - 1) + 1: sw, :] for i in range(kh) for j in range(kw)]
    patches = (taps[0] if len(taps) == 1 else torch.cat(taps, dim=3)).reshape(-1, kh * kw * in_channels)
    matrix = weight.permute(2, 3, 1, 0).reshape(kh * kw * in_channels, out_channels)
    out = patches @ matrix if bias is None else torch.addmm(bias, patches, matrix)
    return out.reshape(n, out_h, out_w, out_channels).permute(0, 3, 1, 2)


_CONV2D_DEFAULTS = (None, None, None, (1, 1), (0, 0), (1, 1), 1)  # aten.conv2d's arguments where a call leaves them out


def rewrite(gm) -> int:
    """Replace, in place, every `aten.conv2d` of the exported module `gm` that `conv_as_gemm` covers (batched
    4-D input, groups 1, dilation 1; string padding is another overload, left as it is); returns how many
    were replaced."""
    import torch

    conv2d = torch.ops.aten.conv2d.default
    replaced = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not conv2d:
            continue
        x, weight, bias, stride, padding, dilation, groups = (*node.args, *_CONV2D_DEFAULTS[len(node.args):])
        value = x.meta.get("val")
        if node.kwargs or groups != 1 or tuple(dilation) != (1, 1) or value is None or value.dim() != 4:
            continue
        with gm.graph.inserting_before(node):
            gemm = gm.graph.call_function(conv_as_gemm, (x, weight, bias, tuple(stride), tuple(padding)))
        node.replace_all_uses_with(gemm)
        gm.graph.erase_node(node)
        replaced += 1
    gm.recompile()
    return replaced
