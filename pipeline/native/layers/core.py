"""`Dense`: an `nn.Linear` on Keras's last axis (the channel axis of a channels-first tensor)."""

from __future__ import annotations

from pipeline.native.layers.registry import Emitted, WeightRule, emits


@emits("Dense", ignores=("units",), mask="passes")
def _dense(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    kernel = weights["kernel"]
    bias = bool(config.get("use_bias", True))
    rules = {"kernel": WeightRule("weight", (1, 0))}
    if bias:
        rules["bias"] = WeightRule("bias")
    # Dense acts on Keras's last axis: the channel axis 1 of a channels-first tensor
    expr = f"self.{context.attr}({x.var})" if x.rank == 2 else f"channels_first(self.{context.attr}(channels_last({x.var})))"
    return Emitted(f"nn.Linear({kernel.shape[0]}, {kernel.shape[1]}{'' if bias else ', bias=False'})", expr, x.rank, rules, layer.activation)
