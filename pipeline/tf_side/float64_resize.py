"""TensorFlow's bilinear resize, computed in float64 for the float64 rebuild.

`tf.image.resize(method="bilinear")` (Keras `Resizing`, `UpSampling2D(interpolation="bilinear")`) runs
TensorFlow's `ResizeBilinear`, which returns float32 whatever its input: the float64 rebuild of a model
holding one would carry float32 rounding (~1e-7) into its reference, and the model would have no float64
proof nor a measure of its own float32 noise. Inside `exact()`, a float64 bilinear resize is computed
with TensorFlow's own formula — half-pixel centres, lower index `max(floor(x), 0)`, upper
`min(ceil(x), size - 1)`, weight `x - floor(x)` — in float64, from gathers. Every other call (float32,
another method, antialiasing, kept aspect ratio) goes to TensorFlow's resize unchanged.

Only the reference outputs are computed inside `exact()`; tf2onnx traces the rebuild outside it, so the
float64 ONNX graph keeps its `Resize` node, and the proof is a proof of that node's conversion.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def exact() -> Iterator[None]:
    """Within the block, `tf.image.resize` computes a float64 bilinear resize in float64."""
    import tensorflow as tf

    original = tf.image.resize

    def resize(images, size, method="bilinear", preserve_aspect_ratio=False, antialias=False, name=None):
        if (tf.as_dtype(images.dtype) == tf.float64 and str(getattr(method, "value", method)) == "bilinear"
                and not preserve_aspect_ratio and not antialias):
            return bilinear(images, size)
        return original(images, size, method=method, preserve_aspect_ratio=preserve_aspect_ratio, antialias=antialias, name=name)

    # Keras 3 calls it through `tf.image`, tf-keras through `tensorflow.compat.v2`'s `image`: modules apart, one function
    import tensorflow.compat.v2 as tf_v2

    modules = list({id(module): module for module in (tf.image, tf.compat.v2.image, tf_v2.image)}.values())
    for module in modules:
        module.resize = resize
    try:
        yield
    finally:
        for module in modules:
            module.resize = original


def take_float64(layers) -> int:
    """Make every tf-keras `Resizing` among `layers` (the float64 rebuild's, nested models' included) resize its float64
    input as it is, in place; return how many. tf-keras's `Resizing` casts a bilinear resize's input to float32 first
    (Keras 3's does not): its float64 twin would then hold float32 rounding in the graph itself, which no reference can
    take out. Its `call` is replaced by the same resize without that cast (crop_to_aspect_ratio left as it is: its own
    float32 steps)."""
    import tensorflow as tf

    changed = 0
    for layer in layers:
        method = getattr(layer, "_interpolation_method", None)
        if type(layer).__name__ != "Resizing" or not type(layer).__module__.startswith("tf_keras") or method is None:
            continue
        if layer.interpolation == "nearest" or layer.crop_to_aspect_ratio or layer.compute_dtype != "float64":
            continue

        def call(inputs, layer=layer, method=method):
            resized = tf.image.resize(tf.cast(inputs, layer.compute_dtype), size=[layer.height, layer.width], method=method)
            return tf.cast(resized, layer.compute_dtype)

        layer.call = call
        changed += 1
    return changed


def bilinear(images, size):
    """`images` (N, H, W, C) or (H, W, C), float64, resized to `size` (height, width; numbers or a tensor, as
    tf-keras's `UpSampling2D` computes it from the input's shape) bilinearly with half-pixel centres, as
    TensorFlow's `ResizeBilinear` does — in float64."""
    import tensorflow as tf

    batched = images if images.shape.rank == 4 else images[None]
    size = tf.cast(tf.convert_to_tensor(size), tf.int64)
    for axis in (1, 2):
        batched = _along(batched, axis, size[axis - 1])
    return batched if images.shape.rank == 4 else batched[0]


def _along(x, axis: int, out_size):
    """`x` resized along `axis` to `out_size` (linear interpolation, half-pixel centres; TensorFlow's lower index
    `max(floor(p), 0)`, upper `min(ceil(p), size - 1)`, weight `p - floor(p)`, all in float64)."""
    import tensorflow as tf

    in_size = tf.shape(x, out_type=tf.int64)[axis]
    position = (tf.cast(tf.range(out_size), tf.float64) + 0.5) * (tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)) - 0.5
    floor = tf.floor(position)
    lower = tf.maximum(tf.cast(floor, tf.int64), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(position), tf.int64), in_size - 1)
    weight = tf.reshape(position - floor, [-1 if dim == axis else 1 for dim in range(x.shape.rank)])
    low, high = tf.gather(x, lower, axis=axis), tf.gather(x, upper, axis=axis)
    return low + (high - low) * weight
