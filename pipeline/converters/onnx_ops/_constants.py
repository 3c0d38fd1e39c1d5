"""What the op families share: a value of the graph known when converting. (A leading `_`: not an op
family, so `register()` does not import it as one.)"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.utils.common import get_const_value


def known(name: str, graph: OnnxGraph) -> torch.Tensor | None:
    """The tensor `name` holds where it is an initializer or a `Constant` (onnx2torch's `get_const_value`), else None."""
    try:
        value = get_const_value(name, graph)
    except KeyError:
        return None
    return value if isinstance(value, torch.Tensor) else None
