"""Ops of the config that are not layers — Keras 3 `keras.ops` nodes, Keras 2 `TFOpLambda` —
written as Python operators (`emit_op`: `generate` calls it for a layer with `operands`), and the common
TensorFlow functions of a Keras 2 file (`tf.nn.relu6`, `tf.concat`, `tf.reduce_mean`, `tf.reshape`, ...), each
named in `_ELEMENTWISE`, `_REDUCTIONS` and `_tf_function`. Those that depend on the axes' order compute in
Keras's layout (`channels_last`) and come back."""

from __future__ import annotations

import numpy as np

from pipeline.keras_file.graph import KerasLayer
from pipeline.native.layers.registry import Context, Emitted, Tensor, number, torch_axis, unsupported


# Ops of the config (Keras 3 `keras.ops` nodes by class, Keras 2 TFOpLambda by function) written as operators.
# NotEqual: the mask Keras 3 writes for an Embedding with `mask_zero` (`ids != 0`), passed on as `mask=`.
_OPERATORS = {"Add": "+", "Subtract": "-", "Multiply": "*", "Divide": "/", "TrueDivide": "/", "NotEqual": "!=", "Equal": "==",
              "add": "+", "subtract": "-", "multiply": "*", "mul": "*", "truediv": "/", "divide": "/", "sub": "-"}


# TensorFlow functions of one tensor, element by element (the layout does not matter), as a Keras 2 TFOpLambda names them.
_ELEMENTWISE = {"relu": "F.relu({x})", "relu6": "F.relu6({x})", "sigmoid": "torch.sigmoid({x})", "tanh": "torch.tanh({x})",
                "exp": "torch.exp({x})", "log": "torch.log({x})", "sqrt": "torch.sqrt({x})", "rsqrt": "torch.rsqrt({x})",
                "abs": "torch.abs({x})", "square": "torch.square({x})", "negative": "-{x}", "softplus": "F.softplus({x})",
                "silu": "F.silu({x})", "swish": "F.silu({x})", "elu": "F.elu({x})", "selu": "F.selu({x})"}
# tf.reduce_* → the torch reduction, over Keras's axes in Keras's layout
_REDUCTIONS = {"reduce_mean": "mean", "reduce_sum": "sum", "reduce_max": "amax", "reduce_min": "amin", "reduce_prod": "prod"}


def _axes(value, rank: int, layer: KerasLayer) -> tuple[int, ...]:
    axes = tuple(int(a) % rank for a in (value if isinstance(value, list | tuple) else [value]))
    if 0 in axes:
        raise unsupported(layer, "an op over the batch axis")
    return axes


def _tf_function(layer: KerasLayer, kind: str, inputs: dict[str, Tensor]) -> Emitted | None:
    """A Keras 2 TFOpLambda calling a TensorFlow function other than an operator, as an expression; None where it
    is none of those named here."""
    options, sources = layer.call_options, [inputs[name] for name in layer.inbound if name in inputs]
    if len(sources) != len(layer.inbound) or not sources or any(value == "<tensor>" for value in options.values()):
        return None
    x = sources[0]
    if kind in _ELEMENTWISE and len(sources) == 1 and set(options) <= {"name"}:
        return Emitted(None, _ELEMENTWISE[kind].format(x=x.var), x.rank)
    if kind in _REDUCTIONS and len(sources) == 1 and options.get("axis") is not None:
        axes, keep = _axes(options["axis"], x.rank, layer), bool(options.get("keepdims", False))
        expr = f"channels_first(channels_last({x.var}).{_REDUCTIONS[kind]}(dim={axes}, keepdim={keep}))"
        return Emitted(None, expr, x.rank if keep else x.rank - len(axes))
    if kind == "concat" and options.get("axis") is not None and len({s.rank for s in sources}) == 1:
        (axis,) = _axes(options["axis"], x.rank, layer)
        return Emitted(None, f"torch.cat([{', '.join(s.var for s in sources)}], dim={torch_axis(axis, x.rank)})", x.rank)
    shape = options.get("shape")
    if kind == "reshape" and len(sources) == 1 and isinstance(shape, list) and shape and shape[0] in (-1, None):
        rest = [int(d) for d in shape[1:]]
        return Emitted(None, f"channels_first(channels_last({x.var}).reshape(-1, {', '.join(map(str, rest))}))", len(shape))
    if kind in ("expand_dims", "squeeze") and len(sources) == 1 and isinstance(options.get("axis"), int):
        rank = x.rank + 1 if kind == "expand_dims" else x.rank - 1
        (axis,) = _axes(options["axis"], rank if kind == "expand_dims" else x.rank, layer)
        call = "unsqueeze" if kind == "expand_dims" else "squeeze"
        return Emitted(None, f"channels_first(channels_last({x.var}).{call}({axis}))", rank)
    return None


def emit_op(layer: KerasLayer, inputs: dict[str, Tensor], context: Context) -> Emitted:
    """An op node of the config (`KerasLayer.operands`: tensors by layer name, numbers) as an expression."""
    kind = layer.class_name if layer.class_name != "TFOpLambda" else str(layer.config.get("function", "")).rsplit(".", 1)[-1]
    if layer.class_name == "TFOpLambda" and kind not in _OPERATORS:
        emitted = _tf_function(layer, kind, inputs)
        if emitted is not None:
            return emitted
    operator = _OPERATORS.get(kind)
    if operator is None or len(layer.operands) != 2 or "?" in layer.operands:
        raise unsupported(layer, f"the op {kind} with operands {list(layer.operands)}")
    # In a legacy .h5, Keras 3 cannot rebuild `x * (1 / 6)` as written; the TensorFlow side loads it as the
    # Rescaling it equals (`tf_side.loading._SCALAR_OPS`), whose number TensorFlow rounds to float32, in a
    # float64 model too. The same number here keeps the float64 native model Keras's function there (the
    # exact 1/6 is 3e-8 of a value away, which the float64 proof sees: MobileNetV3Small.h5, 8.3e-8).
    rounded = context.legacy_h5 and layer.class_name in ("Add", "Subtract", "Multiply")
    terms = [inputs[op].var if isinstance(op, str) else number(np.float32(op) if rounded else op) for op in layer.operands]
    rank = max(inputs[op].rank for op in layer.operands if isinstance(op, str))
    return Emitted(None, f"{terms[0]} {operator} {terms[1]}", rank)
