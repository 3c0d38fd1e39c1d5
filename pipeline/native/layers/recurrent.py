"""Recurrent layers: `LSTM`, `GRU`, `SimpleRNN` and their `Bidirectional` wrapper, held in torch's own layers
(`nn.LSTM`, `nn.GRU`, `nn.RNN`) by `KerasRNN` in the generated model's helpers.

Keras's kernel (features, gates·units) holds the gates side by side; torch's `weight_ih_l0` is its transpose,
the gates in torch's order: an LSTM's i, f, c, o are torch's i, f, g, o (the same order); a GRU's z, r, h are
torch's r, z, n (reordered: `GRU_GATES`, recorded in weights_map.json). Keras's one bias is torch's
`bias_ih_l0` (its `bias_hh_l0` zero and frozen); a GRU with `reset_after=True` has two, (2, 3·units): rows 0
and 1 are torch's two biases. The backward direction of a Bidirectional layer is torch's `..._reverse`.
A Keras mask (an Embedding's `mask_zero`) is taken: the masked steps keep the state, as in Keras.

`return_state` returns the final states after the output (h, and c for an LSTM: `Emitted.states`; of a
Bidirectional layer the forward direction's, then the backward's, as Keras returns them), and a call given initial
states (Keras 3's `initial_state=` keyword, Keras 2's extra inputs; the same order) starts from them: a seq2seq
encoder–decoder.

Refused, naming the option: `stateful`, `time_major`, dropout inside the layer (its random masks cannot be
Keras's), a Bidirectional wrapper whose backward layer differs from its forward one but for its direction.
"""

from __future__ import annotations

import numpy as np

from pipeline.native.layers.registry import Emitted, WeightRule, emits, unsupported

# Keras's GRU gate blocks z, r, h in torch's order r, z, n: torch's block j is Keras's block GRU_GATES[j]
GRU_GATES = (1, 0, 2)
# What does not change the function: how the bias started, which kernel Keras ran, whether TensorFlow unrolled
# the loop; `units` is restated by the weights
_IGNORES = ("units", "unit_forget_bias", "implementation", "unroll")
_ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "relu", "linear")
MERGE_MODES = ("concat", "sum", "mul", "ave")


def _refuse_options(layer, config) -> None:
    for flag in ("stateful", "time_major"):
        if config.get(flag):
            raise unsupported(layer, f"{flag}=True")
    for rate in ("dropout", "recurrent_dropout"):
        if float(config.get(rate) or 0.0):
            raise unsupported(layer, f"{rate} {config[rate]} (set it to 0 to convert; its random masks cannot be Keras's)")
    for key in ("activation", "recurrent_activation"):
        if config.get(key, "tanh") not in _ACTIVATIONS:
            raise unsupported(layer, f"{key} '{config.get(key)}'")


def _rules(cell: str, weights: dict, prefix: str, suffix: str, use_bias: bool) -> tuple[dict, dict]:
    """({Keras weight name (under `prefix`): WeightRule}, {constant state_dict key: zeros}) of one direction."""
    gates = GRU_GATES if cell == "GRU" else None
    rules = {f"{prefix}kernel": WeightRule(f"rnn.weight_ih_l0{suffix}", (1, 0), gates=gates),
             f"{prefix}recurrent_kernel": WeightRule(f"rnn.weight_hh_l0{suffix}", (1, 0), gates=gates)}
    constants = {}
    bias = weights[f"{prefix}bias"] if use_bias else None
    if bias is not None and bias.ndim == 2:  # a GRU's input and recurrent biases
        rules[f"{prefix}bias"] = WeightRule((f"rnn.bias_ih_l0{suffix}", f"rnn.bias_hh_l0{suffix}"), gates=gates)
    elif bias is not None:
        rules[f"{prefix}bias"] = WeightRule(f"rnn.bias_ih_l0{suffix}", gates=gates)
        constants[f"rnn.bias_hh_l0{suffix}"] = np.zeros(bias.shape[0], np.float32)
    return rules, constants


def _module(layer, cell: str, config, inputs, context, weights: dict, prefix: str, merge_mode: str | None,
            zero_output_for_mask: bool) -> Emitted:
    states = ("h", "c") if cell == "LSTM" else ("h",)  # what Keras returns after the output with return_state
    if merge_mode is not None:  # the forward direction's, then the backward's
        states = tuple(f"{direction}_{state}" for direction in ("forward", "backward") for state in states)
    if len(inputs) not in (1, 1 + len(states)):
        raise unsupported(layer, f"a call of {len(inputs)} inputs")
    x, initial = inputs[0], inputs[1:]
    if x.rank != 3:
        raise unsupported(layer, f"an input of rank {x.rank}")
    _refuse_options(layer, config)
    kernel, recurrent = weights[f"{prefix}kernel"], weights[f"{prefix}recurrent_kernel"]
    reset_after = bool(config.get("reset_after", cell == "GRU")) if cell == "GRU" else True
    if cell == "GRU" and config.get("use_bias", True) and reset_after != (weights[f"{prefix}bias"].ndim == 2):
        raise unsupported(layer, "a GRU bias whose shape does not match its reset_after")
    use_bias = bool(config.get("use_bias", True))
    rules, constants = _rules(cell, weights, prefix, "", use_bias)
    if merge_mode is not None:
        backward = prefix.replace("forward", "backward")
        more, zeros = _rules(cell, weights, backward, "_reverse", use_bias)
        rules, constants = {**rules, **more}, {**constants, **zeros}
    sequences = bool(config.get("return_sequences", False))
    options = [f'"{cell}"', str(kernel.shape[0]), str(recurrent.shape[0]), f"return_sequences={sequences}"]
    if not config.get("use_bias", True):
        options.append("bias=False")
    if config.get("go_backwards"):
        options.append("go_backwards=True")
    if merge_mode is not None:
        options.append(f'merge_mode="{merge_mode}"')
    if cell == "GRU" and not reset_after:
        options.append("reset_after=False")
    for key, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        value = config.get(key, default)
        if value != default and (cell != "SimpleRNN" or key == "activation"):
            options.append(f'{key}="{value}"')
    if "hard_sigmoid" in (config.get("activation"), config.get("recurrent_activation")) and context.keras2:
        options.append("keras2=True")  # Keras 2's hard_sigmoid is another function
    if x.mask and zero_output_for_mask:
        options.append("zero_output_for_mask=True")
    if config.get("return_state"):
        options.append("return_state=True")
    arguments = [x.var] + ([x.mask] if x.mask else [])
    if initial:
        arguments.append(f"initial_state=[{', '.join(state.var for state in initial)}]")
    return Emitted(f"KerasRNN({', '.join(options)})", f"self.{context.attr}({', '.join(arguments)})", 3 if sequences else 2, rules,
                   constants=constants, mask=x.mask if sequences else None, states=states if config.get("return_state") else ())


@emits("LSTM", "GRU", "SimpleRNN", ignores=_IGNORES, mask="takes")
def _recurrent(layer, weights, inputs, context):
    config = layer.config
    return _module(layer, layer.class_name, config, inputs, context, weights, "", None,
                   bool(config.get("zero_output_for_mask", False)))


@emits("Bidirectional", mask="takes")
def _bidirectional(layer, weights, inputs, context):
    config = layer.config
    inner = config["layer"]
    cell, inner_config = inner.get("class_name"), dict(inner.get("config", {}))
    if cell not in ("LSTM", "GRU", "SimpleRNN"):
        raise unsupported(layer, f"a Bidirectional {cell}")
    merge_mode = config.get("merge_mode", "concat")
    if merge_mode not in MERGE_MODES:
        raise unsupported(layer, f"merge_mode {merge_mode!r}")
    backward = config.get("backward_layer")  # Keras 3 writes it; tf-keras only where the user gave one
    if backward is not None:
        # what may differ: its name and direction, and how its weights started
        differs = {key for key, value in backward.get("config", {}).items() if key not in ("name", "go_backwards", "seed")
                   and not key.endswith("_initializer") and inner_config.get(key) != value}
        if backward.get("class_name") != cell or differs:
            raise unsupported(layer, f"a backward layer other than the forward one ({', '.join(sorted(differs)) or backward.get('class_name')})")
    if inner_config.get("go_backwards"):
        raise unsupported(layer, "a Bidirectional layer whose forward layer has go_backwards=True")
    # Keras's Bidirectional zeroes masked steps' outputs where it returns every step (its layers' zero_output_for_mask)
    return _module(layer, cell, inner_config, inputs, context, weights, "forward/", merge_mode,
                   bool(inner_config.get("return_sequences", False)))
