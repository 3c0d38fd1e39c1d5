"""Ops of the config that are not layers — Keras 3 `keras.ops` nodes, Keras 2 `TFOpLambda` —
written as Python operators (`emit_op`: `generate` calls it for a layer with `operands`)."""

from __future__ import annotations

import numpy as np

from pipeline.keras_file.graph import KerasLayer
from pipeline.native.layers.registry import Context, Emitted, Tensor, number, unsupported


# Ops of the config (Keras 3 `keras.ops` nodes by class, Keras 2 TFOpLambda by function) written as operators.
# NotEqual: the mask Keras 3 writes for an Embedding with `mask_zero` (`ids != 0`), passed on as `mask=`.
_OPERATORS = {"Add": "+", "Subtract": "-", "Multiply": "*", "Divide": "/", "TrueDivide": "/", "NotEqual": "!=", "Equal": "==",
              "add": "+", "subtract": "-", "multiply": "*", "mul": "*", "truediv": "/", "sub": "-"}


def emit_op(layer: KerasLayer, inputs: dict[str, Tensor], context: Context) -> Emitted:
    """An op node of the config (`KerasLayer.operands`: tensors by layer name, numbers) as an expression."""
    kind = layer.class_name if layer.class_name != "TFOpLambda" else str(layer.config.get("function", "")).rsplit(".", 1)[-1]
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
