"""Recurrent layers: `LSTM` on torch's fused `nn.LSTM` (`KerasLSTM` in the generated model's helpers).

Keras's LSTM kernel (features, 4·units) holds the gates i, f, c, o side by side — torch's i, f, g, o, the
same order — so each weight is its transpose; Keras's one bias is torch's `bias_ih_l0`, and `bias_hh_l0`
stays zero. Not yet: masking (`mask_zero` upstream), `go_backwards`, `return_state`, dropout inside the
recurrence, activations other than tanh/sigmoid (Keras 2's hard_sigmoid), GRU, SimpleRNN, Bidirectional.
"""

from __future__ import annotations

import numpy as np

from pipeline.native.layers.registry import Emitted, WeightRule, emits, unsupported

# What the fused kernel computes: Keras's defaults. `unit_forget_bias` and `implementation` only say how the
# bias started and which kernel Keras ran; `unroll`, whether TensorFlow unrolls the loop: the same function.
_FUSED = {"activation": "tanh", "recurrent_activation": "sigmoid"}


@emits("LSTM", ignores=("units", "unit_forget_bias", "implementation", "unroll", "zero_output_for_mask"))
def _lstm(layer, weights, inputs, context):
    if len(inputs) != 1:  # called with initial states or a mask as well
        raise unsupported(layer, f"a call of {len(inputs)} inputs (initial states or a mask)")
    config, (x,) = layer.config, inputs
    if x.rank != 3:
        raise unsupported(layer, f"an input of rank {x.rank}")
    for key, wanted in _FUSED.items():
        if config.get(key, wanted) != wanted:
            raise unsupported(layer, f"{key} '{config.get(key)}'")
    for flag in ("go_backwards", "return_state", "stateful", "time_major"):
        if config.get(flag):
            raise unsupported(layer, f"{flag}=True")
    for rate in ("dropout", "recurrent_dropout"):
        if float(config.get(rate) or 0.0):
            raise unsupported(layer, f"{rate} {config[rate]}")
    kernel, recurrent = weights["kernel"], weights["recurrent_kernel"]
    bias = bool(config.get("use_bias", True))
    sequences = bool(config.get("return_sequences", False))
    rules = {"kernel": WeightRule("lstm.weight_ih_l0", (1, 0)), "recurrent_kernel": WeightRule("lstm.weight_hh_l0", (1, 0))}
    constants = {}
    if bias:
        rules["bias"] = WeightRule("lstm.bias_ih_l0")
        constants["lstm.bias_hh_l0"] = np.zeros(recurrent.shape[1], np.float32)
    module = f"KerasLSTM({kernel.shape[0]}, {recurrent.shape[0]}, return_sequences={sequences}{'' if bias else ', bias=False'})"
    return Emitted(module, f"self.{context.attr}({x.var})", 3 if sequences else 2, rules, constants=constants)
