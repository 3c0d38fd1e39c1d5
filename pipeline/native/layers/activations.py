"""Activations: Keras's activation names as PyTorch source (a layer's own, or the `Activation`
layer's), and the activation layers."""

from __future__ import annotations

import numpy as np

from pipeline.keras_file.graph import KerasLayer
from pipeline.native.layers.registry import Context, Emitted, WeightRule, emits, number, torch_axis, unsupported


# Keras activation names → PyTorch, on the source of the tensor `{x}` (channels axis 1 for softmax).
ACTIVATIONS = {
    "linear": "{x}",
    "relu": "F.relu({x})",
    "relu6": "F.relu6({x})",
    "sigmoid": "torch.sigmoid({x})",
    "tanh": "torch.tanh({x})",
    "softmax": "torch.softmax({x}, dim={axis})",
    "swish": "F.silu({x})",
    "silu": "F.silu({x})",
    "gelu": "gelu({x})",  # the exact erf form, with Keras's constant (`keras_ops.gelu`)
    "elu": "F.elu({x})",
    "selu": "F.selu({x})",
    "softplus": "F.softplus({x})",
    "softsign": "F.softsign({x})",
    "exponential": "torch.exp({x})",
    "hard_sigmoid": "hard_sigmoid({x}, keras2={keras2})",
    "hard_swish": "{x} * hard_sigmoid({x})",
    "hard_silu": "{x} * hard_sigmoid({x})",
}


def activation_source(name: str, var: str, rank: int, context: Context, layer: KerasLayer) -> str:
    """The source applying Keras activation `name` to variable `var`."""
    if name not in ACTIVATIONS:
        raise unsupported(layer, f"activation '{name}'")
    return ACTIVATIONS[name].format(x=var, axis=torch_axis(-1, rank), keras2=context.keras2)


@emits("Activation", mask="passes")
def _activation(layer, weights, inputs, context):
    (x,) = inputs
    return Emitted(None, x.var, x.rank, activation=layer.activation)


@emits("ReLU")
def _relu(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    max_value, slope, threshold = config.get("max_value"), float(config.get("negative_slope", 0.0)), float(config.get("threshold", 0.0))
    if slope == 0.0 and threshold == 0.0:
        expr = f"F.relu({x.var})" if max_value is None else f"torch.clamp({x.var}, 0.0, {number(max_value)})"
        expr = f"F.relu6({x.var})" if max_value is not None and float(max_value) == 6.0 else expr
    else:
        expr = f"keras_relu({x.var}, {None if max_value is None else number(max_value)}, {slope!r}, {threshold!r})"
    return Emitted(None, expr, x.rank)


@emits("LeakyReLU")
def _leaky_relu(layer, weights, inputs, context):
    (x,) = inputs
    slope = layer.config.get("negative_slope", layer.config.get("alpha", 0.3))  # Keras 3 name, Keras 2 name; both default 0.3
    # TensorFlow holds the slope as a float32 attribute, in float64 too: the same number here
    return Emitted(None, f"F.leaky_relu({x.var}, {float(np.float32(slope))!r})", x.rank)


@emits("Softmax")
def _softmax(layer, weights, inputs, context):
    (x,) = inputs
    axis = layer.config.get("axis", -1)
    return Emitted(None, f"torch.softmax({x.var}, dim={torch_axis(axis, x.rank)})", x.rank)


@emits("PReLU", ignores=("shared_axes",))  # restated by the shape of alpha (size 1 along them)
def _prelu(layer, weights, inputs, context):
    (x,) = inputs
    alpha = weights["alpha"]
    if alpha.ndim != x.rank - 1:
        raise unsupported(layer, f"alpha of shape {alpha.shape} on an input of rank {x.rank}")
    # Keras's alpha has the input's shape without the batch, channels last: channels first here
    permute = (alpha.ndim - 1, *range(alpha.ndim - 1)) if alpha.ndim > 1 else None
    shape = tuple(alpha.shape[i] for i in permute) if permute else alpha.shape
    return Emitted(f"KerasPReLU({tuple(int(d) for d in shape)})", f"self.{context.attr}({x.var})", x.rank, {"alpha": WeightRule("alpha", permute)})


@emits("ELU")
def _elu(layer, weights, inputs, context):
    (x,) = inputs
    return Emitted(None, f"F.elu({x.var}, {number(layer.config.get('alpha', 1.0))})", x.rank)


@emits("ThresholdedReLU")
def _thresholded_relu(layer, weights, inputs, context):
    (x,) = inputs
    theta = number(layer.config.get("theta", 1.0))
    return Emitted(None, f"torch.where({x.var} > {theta}, {x.var}, torch.zeros_like({x.var}))", x.rank)
