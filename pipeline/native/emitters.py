"""Every native layer emitter, registered: the generator's and the supported-layers table's one entry point
to `native.layers` (the registry and one module per family; why the package itself imports nothing: its
docstring). Every family module of the package is imported here — a new file is found, with no list to keep."""

import importlib
import pkgutil

from pipeline.native import layers
from pipeline.native.layers.activations import ACTIVATIONS, activation_source
from pipeline.native.layers.registry import Context, Emitted, Tensor, WeightRule, emit, registered, unsupported
from pipeline.native.layers.tf_ops import emit_op

for _family in pkgutil.iter_modules(layers.__path__):
    importlib.import_module(f"{layers.__name__}.{_family.name}")  # each registers its emitters as it is imported

__all__ = ["ACTIVATIONS", "Context", "Emitted", "Tensor", "WeightRule", "activation_source", "emit", "emit_op", "registered", "unsupported"]
