"""Preprocessing inside the model: `Rescaling` and `Normalization` (their constants in the source), `Resizing`."""

from __future__ import annotations

import numpy as np

from pipeline.native.layers.registry import Emitted, config_axis, emits, interpolation, number, unsupported


@emits("Rescaling")
def _rescaling(layer, weights, inputs, context):
    (x,) = inputs
    scale, offset = layer.config.get("scale", 1.0), layer.config.get("offset", 0.0)
    if not isinstance(scale, int | float) or not isinstance(offset, int | float):
        raise unsupported(layer, "a scale or offset per channel")
    # Keras multiplies by its scale and offset rounded to float32, in a float64 model too: the same numbers
    # here make the float64 model Keras's function (1/255 rounded is 6e-8 away, which the proof would see)
    return Emitted(None, f"{x.var} * {number(np.float32(scale))} + {number(np.float32(offset))}", x.rank)


@emits("Normalization")
def _normalization(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    if config.get("invert"):
        raise unsupported(layer, "invert=True")
    axis = config_axis(config)
    if axis is not None and (not isinstance(axis, int) or axis % x.rank != x.rank - 1):
        raise unsupported(layer, f"axis {axis} (statistics per channel or one for all only)")
    mean, variance = config.get("mean"), config.get("variance")
    if mean is None:
        mean, variance = weights["mean"], weights["variance"]
    mean, variance = np.asarray(mean, dtype=np.float64).reshape(-1), np.asarray(variance, dtype=np.float64).reshape(-1)
    shape = (1, -1) + (1,) * (x.rank - 2)
    # Keras: (x − mean) / max(√variance, 1e-7); the statistics are constants of the model, kept as buffers
    module = f"KerasNormalization({mean.tolist()!r}, {variance.tolist()!r}, {shape})"
    return Emitted(module, f"self.{context.attr}({x.var})", x.rank, in_source=tuple(weights))


@emits("Resizing", ignores=("fill_mode", "fill_value"))  # both for pad_to_aspect_ratio only
def _resizing(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    for option in ("crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias"):
        if config.get(option):
            raise unsupported(layer, f"{option}=True")
    if x.rank != 4:
        raise unsupported(layer, f"an input of rank {x.rank} (a batch of images only)")
    size = (int(config["height"]), int(config["width"]))
    return Emitted(None, f"F.interpolate({x.var}, size={size}, {interpolation(layer, 'bilinear')})", x.rank)
