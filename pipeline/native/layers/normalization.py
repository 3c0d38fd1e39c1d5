"""Normalization layers with learned or moving statistics: `BatchNormalization`,
`LayerNormalization`, `GroupNormalization`, ConvNeXt's `LayerScale`."""

from __future__ import annotations

from pipeline.native.layers.registry import Emitted, WeightRule, config_axis, emits, number, torch_axis, unsupported


# tf-keras writes `renorm_momentum` with renorm off, and TensorFlow 1.x-era files `fused` (which kernel ran)
@emits("BatchNormalization", ignores=("renorm_momentum", "fused"))
def _batch_norm(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    if config.get("renorm"):
        raise unsupported(layer, "renorm=True")
    axis = config_axis(config)
    if not isinstance(axis, int) or torch_axis(axis, x.rank) != 1:
        raise unsupported(layer, f"axis {axis}")
    channels = weights["moving_mean"].shape[0]
    scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
    rules = {"moving_mean": WeightRule("running_mean"), "moving_variance": WeightRule("running_var")}
    if scale:
        rules["gamma"] = WeightRule("weight")
    if center:
        rules["beta"] = WeightRule("bias")
    module = (f"BatchNorm({channels}, eps={number(config.get('epsilon', 1e-3))}, momentum={number(config.get('momentum', 0.99))}"
              f"{'' if scale else ', scale=False'}{'' if center else ', center=False'}{', frozen=True' if context.frozen else ''})")
    return Emitted(module, f"self.{context.attr}({x.var})", x.rank, rules)


@emits("LayerNormalization")
def _layer_norm(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    axis = config_axis(config)
    axes = [a % x.rank for a in (axis if isinstance(axis, list | tuple) else [axis])]
    # the last axes, in Keras's channels-last order and in that order (gamma's shape follows the order given):
    # what nn.LayerNorm normalizes over
    if not axes or axes != list(range(x.rank - len(axes), x.rank)) or axes[0] == 0:
        raise unsupported(layer, f"axis {axis} (the last axes only)")
    if not config.get("scale", True):  # nn.LayerNorm's normalized shape is read from gamma; a bias needs a weight beside it
        raise unsupported(layer, "scale=False")
    if config.get("rms_scaling"):
        raise unsupported(layer, "rms_scaling=True")
    center = bool(config.get("center", True))
    shape = tuple(int(d) for d in weights["gamma"].shape)
    rules = {"gamma": WeightRule("weight"), **({"beta": WeightRule("bias")} if center else {})}
    module = (f"nn.LayerNorm({shape if len(shape) > 1 else shape[0]}, eps={number(config.get('epsilon', 1e-3))}"
              f"{'' if center else ', bias=False'})")
    expr = f"self.{context.attr}({x.var})" if x.rank == 2 else f"channels_first(self.{context.attr}(channels_last({x.var})))"
    return Emitted(module, expr, x.rank, rules)


@emits("LayerScale", ignores=("init_values", "projection_dim"))  # how gamma started; its width: both in the weight
def _layer_scale(layer, weights, inputs, context):
    (x,) = inputs
    (name, gamma), = weights.items()
    shape = (1, -1) + (1,) * (x.rank - 2)
    return Emitted(f"LayerScale({gamma.shape[0]}, {shape})", f"self.{context.attr}({x.var})", x.rank, {name: WeightRule("gamma")})


@emits("GroupNormalization")
def _group_norm(layer, weights, inputs, context):
    """torch's nn.GroupNorm on the channels-first tensor: the same statistics over each group's channels and
    positions, the same (x − mean) / √(var + ε) · gamma + beta."""
    config, (x,) = layer.config, inputs
    axis = config_axis(config)
    if not isinstance(axis, int) or torch_axis(axis, x.rank) != 1:
        raise unsupported(layer, f"axis {axis}")
    if not (config.get("scale", True) and config.get("center", True)):
        raise unsupported(layer, "scale or center off")
    module = f"nn.GroupNorm({int(config.get('groups', 32))}, {weights['gamma'].shape[0]}, eps={number(config.get('epsilon', 1e-3))})"
    return Emitted(module, f"self.{context.attr}({x.var})", x.rank, {"gamma": WeightRule("weight"), "beta": WeightRule("bias")})
