"""Convolutions rewritten as im2col + matrix multiply in the channels-last layout, so that inductor's CPU
GEMM templates (`max_autotune`) compile them into the package's own C++: inductor has templates for
matrix multiplies on the CPU, none for convolutions, which it hands to oneDNN one call at a time — and
oneDNN builds each convolution's primitive descriptor again on every call, most of a batch-1 inference
(docs/speed.md).

The batch-1 model of `model_aoti.pt2` is compiled from a program rewritten so (`aot_compile`). The
template takes a weight matrix only when it is a constant of the module (it packs it at compile time),
so `rewrite` stores each convolution's matrix as a buffer instead of reshaping the weight in the graph.
"""

from __future__ import annotations


def gemm_matrix(weight):
    """A convolution weight (Cout, Cin, kh, kw) as the (kh·kw·Cin, Cout) matrix `conv_as_gemm` multiplies by:
    rows in the order of the channels-last patches (kernel row, kernel column, input channel)."""
    out_channels, in_channels, kh, kw = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(kh * kw * in_channels, out_channels).contiguous()


def conv_as_gemm(x, matrix, bias, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]):
    """`conv2d(x, weight, bias, stride, padding)` (NCHW in and out, groups 1, dilation 1) with
    `matrix = gemm_matrix(weight)` and `kernel` its (kh, kw): the patches of the channels-last input,
    (N·Ho·Wo, kh·kw·Cin), times `matrix`."""
    import torch

    n, in_channels, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    nhwc = x.permute(0, 2, 3, 1)
    if ph or pw:
        nhwc = torch.nn.functional.pad(nhwc, (0, 0, pw, pw, ph, ph))
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    # unfold: views (N, Ho, Wo, Cin, kh, kw) of the padded input, one copy to the patch matrix — a plain
    # loop inductor vectorises over the channels (a cat of kh·kw shifted slices compiled to a select per element).
    patches = nhwc.unfold(1, kh, sh).unfold(2, kw, sw).permute(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * in_channels)
    out = patches @ matrix if bias is None else torch.addmm(bias, patches, matrix)
    return out.reshape(n, out_h, out_w, matrix.shape[1]).permute(0, 3, 1, 2)


MATRIX_PREFIX = "gemm_matrix_"  # the buffers `rewrite` adds, one per convolution replaced


def rewrite(gm) -> int:
    """Replace, in place, every `aten.conv2d` of the exported module `gm` that `conv_as_gemm` covers (batched
    4-D input, groups 1, dilation 1, a weight that is a constant of `gm`; string padding is another overload,
    left as it is), each weight's matrix added to `gm` as a buffer; returns how many were replaced."""
    from pipeline.converters.fx_passes import plain_conv2d

    replaced = 0
    for node in list(gm.graph.nodes):
        if (conv := plain_conv2d(gm, node)) is None:
            continue
        x, _, bias, stride, padding, tensor = conv
        name = f"{MATRIX_PREFIX}{replaced}"
        gm.register_buffer(name, gemm_matrix(tensor.detach()))
        with gm.graph.inserting_before(node):
            matrix = gm.graph.get_attr(name)
            gemm = gm.graph.call_function(conv_as_gemm, (x, matrix, bias, tuple(tensor.shape[2:]), tuple(stride), tuple(padding)))
        node.replace_all_uses_with(gemm)
        gm.graph.erase_node(node)
        replaced += 1
    gm.graph.eliminate_dead_code()  # the weights' own get_attr nodes, now unused
    gm.recompile()
    return replaced
