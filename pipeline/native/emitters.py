"""Every native layer emitter, registered: the generator's and the supported-layers table's one entry point
to `native.layers` (the registry and one module per family; why the package itself imports nothing: its
docstring)."""

from pipeline.native.layers import (activations, convolution, core, embedding, merging, normalization,  # noqa: F401 — each registers its emitters
                                    pooling, preprocessing, recurrent, regularization, reshaping, tf_ops)
from pipeline.native.layers.activations import ACTIVATIONS, activation_source
from pipeline.native.layers.registry import Context, Emitted, Tensor, WeightRule, emit, registered, unsupported
from pipeline.native.layers.tf_ops import emit_op

__all__ = ["ACTIVATIONS", "Context", "Emitted", "Tensor", "WeightRule", "activation_source", "emit", "emit_op", "registered", "unsupported"]
