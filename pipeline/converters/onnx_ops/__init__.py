"""ONNX ops that onnx2torch has no converter for, registered into onnx2torch's own registry
(`onnx2torch.node_converters.registry.add_converter`), one file per op family — and the few of its own
converters that compute a wrong result, replaced in that registry (`replace_converter`).

`register()` imports every module of this package once: each registers its converters as it is
imported, as onnx2torch's `node_converters` do. No list of families to keep in step — a new file is
found. `REGISTERED` names what was registered, `REPLACED` what was replaced, for the supported-layers table.
"""

from __future__ import annotations

import importlib
import pkgutil

# (op type, opset version) of every converter this package added, filled as its modules are imported
REGISTERED: list[tuple[str, int]] = []
# (op type, opset version) of onnx2torch's converters this package replaced (`replace_converter`)
REPLACED: list[tuple[str, int]] = []


def add_converter(operation_type: str, version: int):
    """onnx2torch's `add_converter`, remembering what it registered in `REGISTERED`."""
    from onnx2torch.node_converters.registry import add_converter as onnx2torch_add

    REGISTERED.append((operation_type, version))
    return onnx2torch_add(operation_type=operation_type, version=version)


def replace_converter(operation_type: str, version: int):
    """Register a converter in place of onnx2torch's own for (`operation_type`, `version`); the decorated function
    receives onnx2torch's converter as its third argument, to build on."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription  # no public way to replace

    def deco(converter):
        description = OperationDescription(domain="", operation_type=operation_type, version=version)
        original = _CONVERTER_REGISTRY.pop(description)
        REPLACED.append((operation_type, version))
        _CONVERTER_REGISTRY[description] = lambda node, graph: converter(node, graph, original)
        return converter

    return deco


def register() -> list[tuple[str, int]]:
    """Import every op family of this package (their converters register on import); the registered (op, version)."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return REGISTERED
