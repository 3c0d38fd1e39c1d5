"""`TimeDistributed`: its wrapped layer written by that layer's own emitter, on one time step, and applied to
every step at once (`time_distributed` in the generated model's helpers: the steps folded into the batch).
Its weights are the wrapped layer's, under the wrapper's name. `Bidirectional` is a recurrent layer's wrapper
and lives with them (`recurrent`)."""

from __future__ import annotations

from dataclasses import replace

from pipeline.keras_file.graph import KerasLayer
from pipeline.native.layers.activations import activation_source
from pipeline.native.layers.registry import Tensor, emit, emits, unsupported


@emits("TimeDistributed")
def _time_distributed(layer, weights, inputs, context):
    (x,) = inputs
    if x.rank < 3:
        raise unsupported(layer, f"an input of rank {x.rank} (TimeDistributed needs batch, steps and features)")
    wrapped = layer.config["layer"]
    inner = KerasLayer(layer.name, wrapped.get("class_name", ""), wrapped.get("config", {}), layer.inbound)
    emitted = emit(inner, weights, [Tensor("step", x.rank - 1)], context)
    expr = emitted.expr
    if emitted.activation not in (None, "linear"):
        expr = activation_source(emitted.activation, expr, emitted.rank, context, inner)
    return replace(emitted, expr=f"time_distributed({x.var}, lambda step: {expr})", rank=emitted.rank + 1, activation=None)
