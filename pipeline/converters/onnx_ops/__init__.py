"""ONNX ops that onnx2torch has no converter for, registered into onnx2torch's own registry
(`onnx2torch.node_converters.registry.add_converter`), one file per op family.

`register()` imports every module of this package once: each registers its converters as it is
imported, as onnx2torch's `node_converters` do. No list of families to keep in step — a new file is
found. `REGISTERED` names what was registered, for the supported-layers table.
"""

from __future__ import annotations

import importlib
import pkgutil

# (op type, opset version) of every converter this package added, filled as its modules are imported
REGISTERED: list[tuple[str, int]] = []


def add_converter(operation_type: str, version: int):
    """onnx2torch's `add_converter`, remembering what it registered in `REGISTERED`."""
    from onnx2torch.node_converters.registry import add_converter as onnx2torch_add

    REGISTERED.append((operation_type, version))
    return onnx2torch_add(operation_type=operation_type, version=version)


def register() -> list[tuple[str, int]]:
    """Import every op family of this package (their converters register on import); the registered (op, version)."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return REGISTERED
