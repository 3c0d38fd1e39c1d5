"""Keras → ONNX with tf2onnx, in the TensorFlow process."""

from __future__ import annotations

from pathlib import Path

from pipeline.common.atomic import atomic_path
from pipeline.converters import onnx_fixes
from pipeline.tf_side import grouped_conv
from pipeline.tf_side.loading import input_shape_of, keras_api

INPUT_NAME = "input"


def convert(model, onnx_path: Path, opset: int, dtype: str = "float32") -> dict[str, int]:
    """tf2onnx conversion with a dynamic batch dimension and a `dtype` input (float64 for the float64
    rebuild), non-ONNX ops rewritten or named (`onnx_fixes`), full checker, written atomically.
    Returns the rewrites applied, by kind."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    keras = keras_api(model)
    if isinstance(model, keras.Sequential):
        # tf2onnx looks outputs up by `output_names`, which a Keras 3 Sequential lacks; the same graph as a
        # functional model has them.
        model = keras.Model(model.inputs, model.outputs)
    spec = (tf.TensorSpec((None, *input_shape_of(model)), tf.as_dtype(dtype), name=INPUT_NAME),)
    with grouped_conv.without_xla(keras, tracing=True):
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    rewrites = onnx_fixes.rewrite(proto)
    onnx_fixes.check_ops(proto, opset, [layer.name for layer in model.layers])
    onnx_fixes.canonical_names(proto)  # after the check: its message quotes the names tf2onnx gave
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(onnx_path) as tmp:
        onnx.save(proto, str(tmp))
    return {name: count for name, count in rewrites.items() if count}
