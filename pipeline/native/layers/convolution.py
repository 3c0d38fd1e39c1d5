"""Convolutions: `Conv1D`/`Conv2D`/`Conv3D`, transposed, depthwise and separable, as `nn.ConvNd` wrapped for
Keras's 'same' padding (`SameConv` in the generated model's helpers)."""

from __future__ import annotations

from pipeline.keras_file.graph import KerasLayer
from pipeline.native.layers.registry import Emitted, WeightRule, emits, kernel_of, pair, unsupported


def _torch_conv(dims: int, c_in: int, c_out: int, kernel, stride=None, dilation=None, groups: int = 1, bias: bool = True) -> str:
    """Source of an nn.ConvNd, with the options left at torch's defaults left out (as a person writes it)."""
    options = [f"stride={stride}" if stride and set(stride) != {1} else "", f"dilation={dilation}" if dilation and set(dilation) != {1} else "",
               f"groups={groups}" if groups != 1 else "", "bias=False" if not bias else ""]
    return f"nn.Conv{dims}d({', '.join([str(c_in), str(c_out), str(kernel)] + [o for o in options if o])})"


def _same(layer: KerasLayer) -> bool:
    """Whether a convolution pads 'same' (else 'valid'); BadInput for another padding or channels_first."""
    if layer.config.get("data_format", "channels_last") != "channels_last":
        raise unsupported(layer, "data_format channels_first")
    if layer.config.get("padding") not in ("same", "valid"):
        raise unsupported(layer, f"padding '{layer.config.get('padding')}'")
    return layer.config["padding"] == "same"


@emits("Conv1D", "Conv2D", "Conv3D", ignores=("filters",))
def _conv(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    dims = int(layer.class_name[-2])
    same = _same(layer)
    name, kernel = kernel_of(weights, "kernel")
    groups = int(config.get("groups", 1))
    kernel_size, strides = pair(config["kernel_size"], dims), pair(config.get("strides", 1), dims)
    dilation = pair(config.get("dilation_rate", 1), dims)
    c_in, c_out = kernel.shape[-2] * groups, kernel.shape[-1]
    bias = bool(config.get("use_bias", True))
    conv = _torch_conv(dims, c_in, c_out, kernel_size, strides, dilation, groups, bias)
    permute = (dims + 1, dims, *range(dims))  # (k…, in/groups, out) → (out, in/groups, k…)
    rules = {name: WeightRule("conv.weight", permute)}
    if bias:
        rules["bias"] = WeightRule("conv.bias")
    return Emitted(f"SameConv({conv}, same={same})", f"self.{context.attr}({x.var})", x.rank, rules,
                   layer.activation)


@emits("Conv2DTranspose", ignores=("filters",))
def _conv_transpose(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    same = _same(layer)
    kernel_size, strides = pair(config["kernel_size"], 2), pair(config.get("strides", 1), 2)
    if config.get("output_padding") is not None or pair(config.get("dilation_rate", 1), 2) != (1, 1):
        raise unsupported(layer, "output_padding or dilation")
    if config.get("groups", 1) != 1:  # tf-keras writes groups (always 1 where Keras built it)
        raise unsupported(layer, f"groups {config['groups']}")
    if same and any(k < s for k, s in zip(kernel_size, strides, strict=True)):
        raise unsupported(layer, "padding 'same' with a kernel smaller than its stride")
    kernel = weights["kernel"]  # (kh, kw, out, in)
    bias = bool(config.get("use_bias", True))
    conv = f"nn.ConvTranspose2d({kernel.shape[3]}, {kernel.shape[2]}, {kernel_size}, stride={strides}, bias={bias})"
    rules = {"kernel": WeightRule("conv.weight", (3, 2, 0, 1))}  # → (in, out, kh, kw)
    if bias:
        rules["bias"] = WeightRule("conv.bias")
    return Emitted(f"SameConvTranspose({conv}, same={same})", f"self.{context.attr}({x.var})", x.rank, rules,
                   layer.activation)


# Keras 2 writes its Conv base class's `groups` (always 1) into depthwise and separable configs too
@emits("DepthwiseConv2D", ignores=("depth_multiplier", "kernel_size", "groups"))
def _depthwise(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    same = _same(layer)
    name, kernel = kernel_of(weights, "depthwise_kernel", "kernel")
    kh, kw, channels, multiplier = kernel.shape
    strides, dilation = pair(config.get("strides", 1), 2), pair(config.get("dilation_rate", 1), 2)
    bias = bool(config.get("use_bias", True))
    conv = _torch_conv(2, channels, channels * multiplier, (kh, kw), strides, dilation, channels, bias)
    # (kh, kw, C, M) → (C·M, 1, kh, kw): output channel c·M + m, as in Keras
    rules = {name: WeightRule("conv.weight", (2, 3, 0, 1), (channels * multiplier, 1, kh, kw))}
    if bias:
        rules["bias"] = WeightRule("conv.bias")
    return Emitted(f"SameConv({conv}, same={same})", f"self.{context.attr}({x.var})", x.rank, rules,
                   layer.activation)


@emits("SeparableConv2D", ignores=("filters", "depth_multiplier", "kernel_size", "groups"))
def _separable(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    same = _same(layer)
    kh, kw, channels, multiplier = weights["depthwise_kernel"].shape
    c_out = weights["pointwise_kernel"].shape[-1]
    strides, dilation = pair(config.get("strides", 1), 2), pair(config.get("dilation_rate", 1), 2)
    bias = bool(config.get("use_bias", True))
    depthwise = (f"SameConv({_torch_conv(2, channels, channels * multiplier, (kh, kw), strides, dilation, channels, False)}, "
                 f"same={same})")
    pointwise = _torch_conv(2, channels * multiplier, c_out, 1, bias=bias)
    rules = {"depthwise_kernel": WeightRule("depthwise.conv.weight", (2, 3, 0, 1), (channels * multiplier, 1, kh, kw)),
             "pointwise_kernel": WeightRule("pointwise.weight", (3, 2, 0, 1))}
    if bias:
        rules["bias"] = WeightRule("pointwise.bias")
    return Emitted(f"SeparableConv({depthwise}, {pointwise})", f"self.{context.attr}({x.var})", x.rank, rules, layer.activation)
