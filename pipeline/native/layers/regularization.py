"""`Dropout`, as `nn.Dropout` (or Keras's noise shape), and `SpatialDropout1D/2D/3D` as `nn.Dropout1d/2d/3d`
(whole channels dropped): identity in inference, as in Keras."""

from __future__ import annotations

from pipeline.native.layers.registry import Emitted, emits, unsupported


@emits("Dropout", mask="passes")
def _dropout(layer, weights, inputs, context):
    (x,) = inputs
    rate, noise_shape = float(layer.config["rate"]), layer.config.get("noise_shape")
    if noise_shape is None:
        return Emitted(f"nn.Dropout({rate!r})", f"self.{context.attr}({x.var})", x.rank)
    if len(noise_shape) != x.rank or not all(d is None or isinstance(d, int) for d in noise_shape):
        raise unsupported(layer, f"noise_shape {noise_shape}")
    # Keras's noise shape (N, …, C) in the channels-first order; None: the input's own size there
    shape = [noise_shape[0]] + ([noise_shape[-1]] + list(noise_shape[1:-1]) if x.rank > 2 else list(noise_shape[1:]))
    return Emitted(f"KerasDropout({rate!r}, {shape})", f"self.{context.attr}({x.var})", x.rank)


@emits("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def _spatial_dropout(layer, weights, inputs, context):
    (x,) = inputs
    dims = int(layer.class_name[-2])
    return Emitted(f"nn.Dropout{dims}d({float(layer.config['rate'])!r})", f"self.{context.attr}({x.var})", x.rank)
