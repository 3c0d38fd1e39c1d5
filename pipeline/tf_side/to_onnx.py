"""Keras → ONNX with tf2onnx, in the TensorFlow process."""

from __future__ import annotations

import gc
from pathlib import Path

from pipeline.common.atomic import atomic_path
from pipeline.converters import onnx_fixes
from pipeline.tf_side import grouped_conv
from pipeline.tf_side.loading import input_layout, keras_api

# The ONNX input's name; a model of several inputs keeps its own names (`feeds.Layout`), in its order.
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
    layout = input_layout(model)
    names = layout.names if layout.several else (INPUT_NAME,)
    spec = tuple(tf.TensorSpec((None, *shape), tf.as_dtype(dtype), name=name) for name, shape in zip(names, layout.shapes, strict=True))
    with grouped_conv.without_xla(keras, tracing=True):
        weight_bytes = model.count_params() * tf.as_dtype(dtype).size
        optimizers = _collecting_optimizers() if weight_bytes > COLLECT_ABOVE_BYTES else None  # None: tf2onnx's own
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, optimizers=optimizers)
    gc.collect()  # the frozen graphs tf2onnx leaves behind, before the next conversion or the outputs
    if dtype == "float64":
        onnx_fixes.float64_resize_clips(proto)  # the reference computes that resize in float64 (`float64_resize`)
        float32_layer = onnx_fixes.float32_part(proto, [layer.name for layer in model.layers])
        if float32_layer is not None:
            raise ValueError(f"layer {float32_layer} computes in float32 in TensorFlow even in the float64 rebuild: "
                             "there is no float64 reference for it")
    rewrites = onnx_fixes.rewrite(proto)
    onnx_fixes.check_ops(proto, opset, [layer.name for layer in model.layers])
    onnx_fixes.canonical_names(proto)  # after the check: its message quotes the names tf2onnx gave
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(onnx_path) as tmp:
        onnx.save(proto, str(tmp))
    return {name: count for name, count in rewrites.items() if count}


# A full collection costs ~0.2 s with TensorFlow loaded, and tf2onnx starts ~25 optimizers a conversion
# (measured: 5 s on an 8-conv model, converted in 0.6 s without them). Worth it only where the graph copies
# it frees are large: VGG16's weights at 96 px are 400 MB in float64 (200 MB in float32); ResNet8's 0.3 MB.
COLLECT_ABOVE_BYTES = 64 * 2**20


def _collecting_optimizers() -> dict:
    """tf2onnx's own optimizers, in its order, each started after a full garbage collection.

    Catching an optimizer's errors (its default), tf2onnx deep-copies the whole graph, constants included,
    before every optimizer; each copy it drops is a reference cycle that only a full collection frees, and
    the copies pile up. Measured on VGG16's float64 rebuild (400 MB of weights): 15.5 GB peak in the
    optimizers, 5.8 GB with a collection before each — the same optimizers, the same graph.
    """
    from tf2onnx import optimizer

    class Collected:
        def __init__(self, factory):
            self.factory = factory

        def __call__(self):
            gc.collect()
            return self.factory()

    return {name: Collected(factory) for name, factory in optimizer._get_optimizers().items()}  # noqa: SLF001 — no public list
