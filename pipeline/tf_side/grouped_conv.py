"""Grouped convolutions without XLA, in the TensorFlow process.

Keras 3 and tf-keras both run a grouped convolution (`Conv2D(groups=...)`; ConvNeXt's 7×7 depthwise is
one, with groups = channels) inside an XLA-compiled `tf.function`, because TensorFlow's own CPU kernel
for grouped Conv2D is broken. That costs the pipeline twice:
- tf2onnx leaves the XLA function as an opaque `StatefulPartitionedCall`: the model does not convert;
- XLA's CPU convolution in float64 is slow beyond use — 2.4 s per layer for 8 images of 96×96 px, so
  ConvNeXtTiny's float64 reference would take an hour.
Within `without_xla`, a depthwise-grouped convolution (one input channel per group) is TensorFlow's
depthwise convolution — the same sums, one op (tf2onnx: an ONNX Conv with `group`), fast in float32
and float64 (5e-16 from XLA's float64 result on ConvNeXtTiny); other grouped convolutions are traced
as one grouped Conv2D op for conversion (which never runs the graph) and left to XLA when they run.
"""

from __future__ import annotations

import contextlib


def _plain(inputs, kernel, strides, padding: str, dilations, channels_last: bool, tf_format: str, tracing: bool):
    """The grouped 2-D convolution of `inputs` by `kernel` without XLA, or None where it must keep XLA."""
    import tensorflow as tf

    channels = inputs.shape[-1] if channels_last else inputs.shape[1]
    pair = lambda value: (value,) * 2 if isinstance(value, int) else tuple(value)  # noqa: E731
    if kernel.shape[-2] == 1:  # one input channel per group: depthwise, (kh, kw, 1, C·M) is (kh, kw, C, M)
        kh, kw, _, out = kernel.shape
        step = [1, *pair(strides), 1] if channels_last else [1, 1, *pair(strides)]
        return tf.nn.depthwise_conv2d(inputs, tf.reshape(kernel, (kh, kw, channels, out // channels)), step, padding,
                                      data_format=tf_format, dilations=pair(dilations))
    if tracing:
        return tf.nn.convolution(inputs, kernel, list(pair(strides)), padding, data_format=tf_format, dilations=list(pair(dilations)))
    return None


@contextlib.contextmanager
def without_xla(keras, tracing: bool = False):
    """Within: `keras`'s grouped 2-D convolutions run as described above (`tracing`: the graph is only
    traced, for tf2onnx)."""
    if keras.__name__.startswith("tf_keras"):
        from tf_keras.src.layers.convolutional import base_conv

        original = base_conv.Conv._jit_compiled_convolution_op

        def jit_op(self, inputs, kernel):
            result = None
            if self.rank == 2 and isinstance(self.padding, str) and self.padding != "causal":
                result = _plain(inputs, kernel, self.strides, self.padding.upper(), self.dilation_rate,
                                not self._channels_first, self._tf_data_format, tracing)
            return original(self, inputs, kernel) if result is None else result

        base_conv.Conv._jit_compiled_convolution_op = jit_op
        try:
            yield
        finally:
            base_conv.Conv._jit_compiled_convolution_op = original
        return
    from keras.src.backend.tensorflow import nn as tf_nn

    original_conv = tf_nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        channels_last = tf_nn.backend.standardize_data_format(data_format) == "channels_last"
        channels = inputs.shape[-1] if channels_last else inputs.shape[1]
        result = None
        if channels != kernel.shape[-2] and len(inputs.shape) == 4:  # grouped, 2-D
            result = _plain(inputs, kernel, strides, padding.upper(), dilation_rate, channels_last,
                            tf_nn._convert_data_format(data_format, 4), tracing)
        return original_conv(inputs, kernel, strides, padding, data_format, dilation_rate) if result is None else result

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original_conv
