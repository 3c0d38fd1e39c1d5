"""Pooling: max and average, local (valid or 'same') and global."""

from __future__ import annotations

from pipeline.native.layers.registry import Emitted, emits, pair, unsupported


def _pool_options(layer, dims):
    config = layer.config
    if config.get("data_format", "channels_last") != "channels_last":
        raise unsupported(layer, "data_format channels_first")
    kernel = pair(config.get("pool_size", 2), dims)
    strides = config.get("strides") or kernel
    return kernel, pair(strides, dims), config.get("padding", "valid")


@emits("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D")
def _pool(layer, weights, inputs, context):
    (x,) = inputs
    dims = int(layer.class_name[-2])
    kernel, strides, padding = _pool_options(layer, dims)
    kind = "max" if layer.class_name.startswith("Max") else "avg"
    if padding == "same":
        return Emitted(None, f"{kind}_pool_same({x.var}, {kernel}, {strides})", x.rank)
    return Emitted(None, f"F.{kind}_pool{dims}d({x.var}, {kernel}, {strides})", x.rank)


@emits("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
       "GlobalMaxPooling3D")
def _global_pool(layer, weights, inputs, context):
    (x,) = inputs
    keep = bool(layer.config.get("keepdims", False))
    axes = tuple(range(2, x.rank))
    reduce = "mean" if "Average" in layer.class_name else "amax"
    return Emitted(None, f"{x.var}.{reduce}(dim={axes}, keepdim={keep})", x.rank if keep else 2)
