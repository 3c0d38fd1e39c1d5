"""The float64 rebuild's bilinear resize (`tf_side.float64_resize`): TensorFlow's `ResizeBilinear` returns float32
whatever its input, so a model holding Keras `Resizing` or a bilinear `UpSampling2D` had no float64 reference.
Computed here in float64 with TensorFlow's formula: equal to TensorFlow's own resize within float32 rounding, and
taken by Keras 3's and tf-keras's layers inside `exact()` only."""

from __future__ import annotations

import helpers

SCRIPT = """
import numpy as np, tensorflow as tf, keras, tf_keras
from pipeline.tf_side import float64_resize

original = tf.image.resize
x = np.random.default_rng(0).normal(0, 1, (2, 12, 12, 3))
for size in [(10, 14), (24, 24), (5, 7), (12, 12), (1, 30)]:
    ours = float64_resize.bilinear(tf.constant(x), size).numpy()
    theirs = tf.image.resize(tf.constant(x, tf.float32), size).numpy()
    assert ours.dtype == np.float64 and ours.shape == theirs.shape, (size, ours.shape, theirs.shape)
    # TensorFlow's float32 kernel against the float64 formula: float32 rounding of values up to ~4 and of the sampling
    # positions (a scale rounded to float32) — a few 1e-6; another formula (corners aligned, no half-pixel shift) is 0.1 off
    assert np.abs(ours - theirs).max() < 1e-5, (size, np.abs(ours - theirs).max())
    assert np.abs(ours[0] - float64_resize.bilinear(tf.constant(x[0]), size).numpy()).max() == 0  # one image, unbatched

x = x.astype(np.float32).astype(np.float64)  # the check sets are float32 (tf-keras's predict casts to float32 too)
for api in (keras, tf_keras):
    for kind in ("Resizing", "UpSampling2D"):
        def model():  # a new one each time: a model's predict keeps the function it traced first
            layer = (api.layers.Resizing(10, 14, dtype="float64") if kind == "Resizing"
                     else api.layers.UpSampling2D(2, interpolation="bilinear", dtype="float64"))
            return api.Sequential([api.Input((12, 12, 3), dtype="float64"), layer])

        exact = float64_resize.bilinear(tf.constant(x), (10, 14) if kind == "Resizing" else (24, 24)).numpy()
        plain = np.asarray(model().predict(x, verbose=0))
        assert 0 < np.abs(plain - exact).max() < 1e-5, (api.__name__, kind)  # TensorFlow's float32 kernel
        twin = model()
        # tf-keras's Resizing casts its input to float32 before resizing: the float64 rebuild drops that cast
        assert float64_resize.take_float64(twin.layers) == (api is tf_keras and kind == "Resizing")
        with float64_resize.exact():
            inside = np.asarray(twin.predict(x, verbose=0))
        assert inside.dtype == np.float64 and np.abs(inside - exact).max() < 1e-14, (api.__name__, kind, np.abs(inside - exact).max())
    with float64_resize.exact():  # a nearest resize and a float32 input go to TensorFlow's resize, unchanged
        assert tf.image.resize(tf.constant(x), (10, 14), method="nearest").dtype == tf.float64
        assert tf.image.resize(tf.constant(x, tf.float32), (10, 14)).dtype == tf.float32
    assert tf.image.resize is original and tf.compat.v2.image.resize is original  # put back after the block
print("ok")
"""


def test_float64_bilinear_resize_equals_tensorflows_and_is_taken_inside_exact_only():
    helpers.run_tf_script(SCRIPT)
