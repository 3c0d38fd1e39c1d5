"""The Keras model's layer graph as the .h5 stores it (`model_config`), read with h5py — no Keras.

Layers are reported by these names: they are what the user's file calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py



@dataclass(frozen=True)
class KerasLayer:
    name: str
    class_name: str
    config: dict
    inbound: tuple[str, ...]  # names of the layers whose outputs this one takes, in order

    @property
    def activation(self) -> str | None:
        """The activation inside the layer (Conv2D/Dense 'activation', or the Activation layer's own)."""
        value = self.config.get("activation")
        return value if isinstance(value, str) else None


def read_model_config(path: Path) -> dict:
    """The model's config JSON, read without Keras (see `model_check.read_config`)."""
    from pipeline.model_check import read_config

    return read_config(path)


def _inbound_names(nodes) -> list[str]:
    """Layer names referenced by `inbound_nodes`, in Keras 2 ([[name, i, j, kw]]) or Keras 3 (keras_history) form."""
    names: list[str] = []

    def walk(item):
        if isinstance(item, dict):
            history = item.get("config", {}).get("keras_history") if item.get("class_name") == "__keras_tensor__" else None
            if history:
                names.append(history[0])
                return
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                names.append(item[0])  # Keras 2: [layer_name, node_index, tensor_index, kwargs]
                return
            for value in item:
                walk(value)

    walk(nodes)
    return names


def layers(model_config: dict) -> list[KerasLayer]:
    """Every layer in config order (topological for models Keras writes); Sequential layers chain."""
    raw = model_config.get("config", {})
    entries = raw.get("layers", []) if isinstance(raw, dict) else raw
    result: list[KerasLayer] = []
    sequential = model_config.get("class_name") == "Sequential"
    for index, entry in enumerate(entries):
        config = entry.get("config", {})
        if sequential:
            inbound = (result[-1].name,) if result else ()
        else:
            inbound = tuple(_inbound_names(entry.get("inbound_nodes", [])))
        result.append(KerasLayer(config.get("name", f"layer_{index}"), entry["class_name"], config, inbound))
    return result


# A `.keras` file stores a layer's weights as vars/0, vars/1, ... in creation order, without names.
_VAR_NAMES = {
    "SeparableConv1D": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_DEFAULT_VAR_NAMES = ("kernel", "bias")


def input_shape(model_config: dict) -> tuple[int, ...] | None:
    """One sample's input shape as the config states it (InputLayer `batch_shape` in Keras 3,
    `batch_input_shape` in Keras 2), without the batch dimension; None if absent or not fully known."""
    for layer in layers(model_config)[:1]:
        shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
        if isinstance(shape, list) and len(shape) > 1 and all(isinstance(d, int) for d in shape[1:]):
            return tuple(shape[1:])
    return None


def _keras_weight_paths(graph: list[KerasLayer]) -> dict[str, KerasLayer]:
    """{path in a .keras weights file: layer}. Keras 3 files a layer under its class in snake case,
    numbered in layer order (conv2d, conv2d_1, ...), not under its name (keras/src/saving/saving_lib.py)."""
    import re

    used: dict[str, int] = {}
    by_path = {}
    for layer in graph:
        snake = re.sub(r"\W+", "", layer.class_name)
        snake = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", snake)
        snake = re.sub("([a-z])([A-Z])", r"\1_\2", snake).lower()
        used[snake] = used.get(snake, -1) + 1
        by_path[snake if used[snake] == 0 else f"{snake}_{used[snake]}"] = layer
    return by_path


def weights(path: Path) -> dict[str, dict[str, "np.ndarray"]]:  # noqa: F821
    """{layer name: {weight name ('kernel', 'bias', 'gamma', ...): array}}, read with h5py from a legacy
    .h5 or from the `model.weights.h5` inside a `.keras` zip."""
    import io
    import zipfile

    found: dict[str, dict] = {}
    if zipfile.is_zipfile(path):
        by_path = _keras_weight_paths(layers(read_model_config(path)))
        with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as handle:
            root = handle["layers"] if "layers" in handle else handle

            def visit_keras(name, obj):
                parts = name.split("/")
                if isinstance(obj, h5py.Dataset) and len(parts) == 3 and parts[1] == "vars" and parts[0] in by_path:
                    layer, index = by_path[parts[0]], int(parts[2])
                    names = _VAR_NAMES.get(layer.class_name, _DEFAULT_VAR_NAMES)
                    found.setdefault(layer.name, {})[names[index] if index < len(names) else f"var_{index}"] = obj[()]

            root.visititems(visit_keras)
        return found
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                layer, leaf = name.split("/")[0], name.rsplit("/", 1)[-1].split(":")[0]
                found.setdefault(layer, {})[leaf] = obj[()]

        root.visititems(visit)
    return found


def is_classifier(graph: list[KerasLayer]) -> bool:
    """Whether the model's output is class probabilities: its last layer ends in a softmax."""
    last = graph[-1] if graph else None
    return last is not None and (last.activation == "softmax" or last.class_name == "Softmax")
