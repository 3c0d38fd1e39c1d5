"""Load a generated native model (`model.py` + `model.safetensors`) and read its layers' outputs.

The source is ours — written by `generate` from the config's names and numbers, never from code in the
user's file — so importing it runs no user code; the weights are safetensors (no pickle).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from pipeline.common.errors import BadInput


def source_module(source: Path) -> ModuleType:
    """The generated `model.py` at `source`, imported under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"native_model_{abs(hash(str(source)))}", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(source: Path, weights: Path) -> tuple[torch.nn.Module, ModuleType]:
    """The native model in eval mode with its weights, and its source module (which holds `LAYER_OUTPUTS`
    and `LOGITS`). Raises BadInput where the files are missing or the weights do not fit the model."""
    from safetensors.torch import load_file

    if not Path(source).is_file() or not Path(weights).is_file():
        raise BadInput(f"{Path(source).parent} holds no native model; run `make native` first")
    module = source_module(source)
    model = module.Model()
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as exc:
        raise BadInput(f"{weights} does not fit {source}: {str(exc).splitlines()[0]}") from exc
    return model.eval(), module


def run_with_locals(model: torch.nn.Module, *inputs: torch.Tensor) -> tuple[object, dict[str, torch.Tensor]]:
    """`model(*inputs)` and the local variables of its `forward` when it returns — each Keras layer's
    output, by the names `LAYER_OUTPUTS` gives — read from the frame, so the source needs no hooks. A Keras
    model nested as a layer is a class of its own in the source (`self.base = Base()`): its forward's locals
    are under its attribute (`base.conv2d`), of its first call where it is called more than once (a siamese encoder)."""
    generated = _generated_modules(model)
    codes = {type(module).forward.__code__ for module in model.modules() if id(module) in generated}
    captured: dict[str, torch.Tensor] = {}

    def profile(frame, event, arg):
        if event != "return" or frame.f_code not in codes:  # the code first: reading f_locals costs, on every call
            return
        path = generated.get(id(frame.f_locals.get("self")))
        if path is not None:
            prefix = f"{path}." if path else ""
            for name, value in frame.f_locals.items():
                if isinstance(value, torch.Tensor):
                    captured.setdefault(prefix + name, value)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        result = model(*inputs)
    finally:
        sys.setprofile(previous)
    return result, captured


def _generated_modules(model: torch.nn.Module) -> dict[int, str]:
    """{id: attribute path} of `model` ("") and of the modules of classes its source generated for nested Keras
    models — not of the layer classes it copies from `keras_ops` (SameConv, KerasRNN: their locals are no layer's)."""
    from pipeline.native import keras_ops

    copied = {name for name, value in vars(keras_ops).items() if isinstance(value, type)}
    source = type(model).__module__
    return {id(module): path for path, module in model.named_modules()
            if path == "" or (type(module).__module__ == source and type(module).__name__ not in copied)}


def layer_outputs(model: torch.nn.Module, module: ModuleType, *batch: np.ndarray, float64: bool = False) -> dict[str, np.ndarray]:
    """{Keras layer name: its output on `batch` (one array per input), in Keras's layout (channels-last)}."""
    xs = [torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64 if float64 else np.float32)) for b in batch]
    with torch.inference_mode():
        _, local = run_with_locals(model, *xs)
    return {name: module.channels_last(local[var]).numpy() for name, var in module.LAYER_OUTPUTS.items() if var in local}
