"""Layers that move values without computing (or little): padding, cropping, upsampling, `Flatten`,
`Reshape`, `Permute` (the last three in Keras's channels-last order, and back)."""

from __future__ import annotations

from pipeline.native.layers.registry import Emitted, emits, interpolation, pair


@emits("ZeroPadding1D", "ZeroPadding2D")
def _zero_padding(layer, weights, inputs, context):
    (x,) = inputs
    padding = layer.config.get("padding", 1)
    dims = x.rank - 2
    if isinstance(padding, int):
        pads = [(padding, padding)] * dims
    else:
        pads = [tuple(p) if isinstance(p, list | tuple) else (p, p) for p in (padding if dims > 1 else [padding])]
        if dims == 1 and len(pads) == 1 and len(pads[0]) == 2 and not isinstance(padding[0], list | tuple):
            pads = [tuple(padding)]
    flat = [int(v) for pair in reversed(pads) for v in pair]  # F.pad: last axis first
    return Emitted(None, f"F.pad({x.var}, {flat})", x.rank)


@emits("Cropping2D")
def _cropping(layer, weights, inputs, context):
    (x,) = inputs
    (top, bottom), (left, right) = [tuple(p) if isinstance(p, list | tuple) else (p, p) for p in
                                    (layer.config["cropping"] if isinstance(layer.config["cropping"], list) else [layer.config["cropping"]] * 2)]
    return Emitted(None, f"{x.var}[:, :, {top}:{x.var}.shape[2] - {bottom}, {left}:{x.var}.shape[3] - {right}]", x.rank)


@emits("UpSampling2D")
def _upsampling(layer, weights, inputs, context):
    (x,) = inputs
    mode = interpolation(layer, "nearest")
    size = pair(layer.config.get("size", 2), 2)
    return Emitted(None, f"F.interpolate({x.var}, scale_factor={tuple(float(s) for s in size)}, {mode})", x.rank)


@emits("Flatten")
def _flatten(layer, weights, inputs, context):
    (x,) = inputs
    return Emitted(None, f"torch.flatten(channels_last({x.var}), 1)", 2)


@emits("Reshape")
def _reshape(layer, weights, inputs, context):
    (x,) = inputs
    target = tuple(int(d) for d in layer.config["target_shape"])
    return Emitted(None, f"channels_first(channels_last({x.var}).reshape({x.var}.shape[0], *{target}))", 1 + len(target))


@emits("Permute")
def _permute(layer, weights, inputs, context):
    (x,) = inputs
    dims = (0,) + tuple(int(d) for d in layer.config["dims"])
    return Emitted(None, f"channels_first(channels_last({x.var}).permute{dims})", x.rank)
