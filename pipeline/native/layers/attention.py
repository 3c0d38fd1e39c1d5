"""Attention: Keras `MultiHeadAttention` as `KerasMultiHeadAttention` (the generated model's helpers), its
per-head projections as one `nn.Linear` each; `Attention` and `AdditiveAttention` as `KerasAttention`.

Keras's projection kernels are per head: query (features, heads, key_dim), output (heads, value_dim,
features). Each becomes a Linear weight with the heads side by side — (heads·key_dim, features), the query
kernel permuted (1, 2, 0) and reshaped; (features, heads·value_dim), the output kernel permuted (2, 0, 1).
Its weights are `query/kernel`, `query/bias`, ..., `attention_output/bias` (`keras_file.weights.PROJECTIONS`).

Refused, naming the option: an attention mask or a causal mask in the call, attention over other axes than
the steps of a sequence (Keras's `attention_axes` on images), a call returning the attention scores.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.native.layers.registry import Emitted, WeightRule, emits, number, unsupported

# What does not change the function: restated by the weights' shapes, or the shapes Keras built it for; the
# softmax's handling of masks (no mask here)
_IGNORES = ("num_heads", "key_dim", "value_dim", "output_shape", "query_shape", "key_shape", "value_shape", "softmax_robust_masking")


def _refuse_masks(layer) -> None:
    for option in ("mask", "attention_mask", "query_mask", "value_mask", "key_mask"):
        if layer.call_options.get(option) is not None:
            raise unsupported(layer, f"a call with {option}")
    for option in ("use_causal_mask", "return_attention_scores"):
        if layer.call_options.get(option):
            raise unsupported(layer, f"{option}=True")


@emits("MultiHeadAttention", ignores=_IGNORES)
def _multi_head_attention(layer, weights, inputs, context):
    config = layer.config
    if not 2 <= len(inputs) <= 3 or any(x.rank != 3 for x in inputs):
        raise unsupported(layer, f"a call on {len(inputs)} inputs of ranks {[x.rank for x in inputs]} (query and value sequences)")
    _refuse_masks(layer)
    axes = config.get("attention_axes")
    if axes not in (None, [1], (1,), 1, [-2]):
        raise unsupported(layer, f"attention_axes {axes}")
    if any(x.mask for x in inputs):
        raise unsupported(layer, "a Keras mask on its inputs")
    query, key, value = weights["query/kernel"], weights["key/kernel"], weights["value/kernel"]
    output = weights["attention_output/kernel"]
    (features, heads, key_dim), value_dim, out_features = query.shape, value.shape[2], output.shape[2]
    rules = {"query/kernel": WeightRule("query.weight", (1, 2, 0), (heads * key_dim, features)),
             "key/kernel": WeightRule("key.weight", (1, 2, 0), (heads * key_dim, key.shape[0])),
             "value/kernel": WeightRule("value.weight", (1, 2, 0), (heads * value_dim, value.shape[0])),
             "attention_output/kernel": WeightRule("attention_output.weight", (2, 0, 1), (out_features, heads * value_dim))}
    bias = bool(config.get("use_bias", True))
    if bias:
        rules |= {f"{name}/bias": WeightRule(f"{name}.bias", reshape=(-1,)) for name in ("query", "key", "value")}
        rules["attention_output/bias"] = WeightRule("attention_output.bias")
    dropout = float(config.get("dropout") or 0.0)
    # Keras 3 multiplies by 1/√key_dim rounded to float32, even in a float64 model (tf-keras by the exact number):
    # the same number here keeps the float64 native model Keras's function (3e-9 apart otherwise, which the proof sees)
    scale = "" if context.keras2 else f", scale={number(np.float32(1.0 / math.sqrt(key_dim)))}"
    module = (f"KerasMultiHeadAttention({features}, {key.shape[0]}, {value.shape[0]}, heads={heads}, key_dim={key_dim}, "
              f"value_dim={value_dim}, output_features={out_features}{'' if bias else ', bias=False'}"
              f"{f', dropout={number(dropout)}' if dropout else ''}{scale})")
    args = ", ".join(x.var for x in inputs)  # query, value[, key]: Keras's order
    return Emitted(module, f"self.{context.attr}({args})", 3, rules)


@emits("Attention", "AdditiveAttention")
def _attention(layer, weights, inputs, context):
    config = layer.config
    _refuse_masks(layer)
    if config.get("causal"):  # Keras 2.4–2.12's config option, before `use_causal_mask` in the call
        raise unsupported(layer, "causal=True")
    if config.get("score_mode", "dot") != "dot":
        raise unsupported(layer, f"score_mode {config.get('score_mode')!r}")
    if not 2 <= len(inputs) <= 3 or any(x.rank != 3 or x.mask for x in inputs):
        raise unsupported(layer, f"a call on {len(inputs)} inputs (query and value sequences, unmasked)")
    additive = layer.class_name == "AdditiveAttention"
    scale = weights.get("scale") if config.get("use_scale", additive) else None
    options = ["additive=True"] if additive else []
    if scale is not None:
        options.append(f"scale_shape={tuple(int(d) for d in scale.shape)}")
    dropout = float(config.get("dropout") or 0.0)
    if dropout:
        options.append(f"dropout={number(dropout)}")
    rules = {"scale": WeightRule("scale")} if scale is not None else {}
    return Emitted(f"KerasAttention({', '.join(options)})", f"self.{context.attr}({', '.join(x.var for x in inputs)})", 3, rules)
