"""The Keras model's weights, read with h5py — from a legacy `.h5` or from the `model.weights.h5`
inside a `.keras` zip. No Keras: nothing from the file is deserialized as code."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np

from pipeline.keras_file.graph import KerasLayer, nested_layers

# A `.keras` file stores a layer's weights as vars/0, vars/1, ... in creation order, without names.
_VAR_NAMES = {
    "SeparableConv1D": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "Normalization": ("mean", "variance", "count"),
    "LayerScale": ("gamma",),  # Keras's own attribute name: the weight is made without one
    "Embedding": ("embeddings",),
    "PReLU": ("alpha",),
    "Attention": ("scale",),
    "AdditiveAttention": ("scale",),
    "GroupNormalization": ("gamma", "beta"),
    # a recurrent layer's weights are its cell's: `layers/<layer>/cell/vars/<i>` (`read`)
    "LSTM": ("kernel", "recurrent_kernel", "bias"),
    "GRU": ("kernel", "recurrent_kernel", "bias"),
    "SimpleRNN": ("kernel", "recurrent_kernel", "bias"),
}
_DEFAULT_VAR_NAMES = ("kernel", "bias")
# A Bidirectional layer's two directions: its weights are `forward/kernel`, `backward/kernel`, ... (each
# direction's layer is `forward_<name>` in a legacy .h5, `forward_layer` in a .keras file)
DIRECTIONS = ("forward", "backward")
# A MultiHeadAttention's four projections: its weights are `query/kernel`, `query/bias`, ... as tf-keras names
# them; a .keras file files them under `query_dense`, ..., `output_dense`.
PROJECTIONS = {"query": "query", "key": "key", "value": "value", "attention_output": "attention_output",
               "query_dense": "query", "key_dense": "key", "value_dense": "value", "output_dense": "attention_output"}
# The name Keras gives a weight made without one (`add_weight(shape=...)`): `variable`, `variable_7`, ...
AUTO_NAMED = re.compile(r"variable(_\d+)?")


def _var_names(layer: KerasLayer) -> tuple[str, ...]:
    """The names of `layer`'s vars/0, vars/1, ... in a `.keras` file: a BatchNormalization or
    LayerNormalization without `scale` has no gamma (InceptionV3's), without `center` no beta; a
    Bidirectional or TimeDistributed layer's, its wrapped layer's."""
    if layer.class_name in ("Bidirectional", "TimeDistributed"):  # a wrapper's weights are its wrapped layer's
        inner = layer.config.get("layer", {})
        return _var_names(KerasLayer(layer.name, inner.get("class_name", ""), inner.get("config", {}), ()))
    if layer.class_name in ("BatchNormalization", "LayerNormalization"):
        stats = ("moving_mean", "moving_variance") if layer.class_name == "BatchNormalization" else ()
        return tuple(name for name, kept in (("gamma", layer.config.get("scale", True)), ("beta", layer.config.get("center", True))) if kept) + stats
    return _VAR_NAMES.get(layer.class_name, _DEFAULT_VAR_NAMES)


def _keras_weight_paths(graph: list[KerasLayer]) -> dict[str, KerasLayer]:
    """{path in a .keras weights file: layer}. Keras 3 files a layer under its class in snake case,
    numbered in layer order (conv2d, conv2d_1, ...), not under its name (keras/src/saving/saving_lib.py)."""
    used: dict[str, int] = {}
    by_path = {}
    for layer in graph:
        snake = re.sub(r"\W+", "", layer.class_name)
        snake = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", snake)
        snake = re.sub("([a-z])([A-Z])", r"\1_\2", snake).lower()
        used[snake] = used.get(snake, -1) + 1
        by_path[snake if used[snake] == 0 else f"{snake}_{used[snake]}"] = layer
    return by_path


def read(path: Path, graph: list[KerasLayer]) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name ('kernel', 'bias', 'gamma', ...): array}}, read with h5py from a legacy
    .h5 or from the `model.weights.h5` inside a `.keras` zip (whose layers are `graph`). The layers of a
    nested model are filed under their own names."""
    found: dict[str, dict] = {}
    if zipfile.is_zipfile(path):
        by_path = _keras_weight_paths(graph)
        inner = {outer: _keras_weight_paths(nested_layers(layer)) for outer, layer in by_path.items() if nested_layers(layer)}
        with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as handle:
            root = handle["layers"] if "layers" in handle else handle

            def visit_keras(name, obj):
                parts = name.split("/")
                if len(parts) >= 5 and parts[0] in inner and parts[1] == "layers" and parts[2] in inner[parts[0]]:
                    owner, parts = inner[parts[0]], parts[2:]  # layers/<nested model>/layers/<layer>/[cell/]vars/<i>
                else:
                    owner = by_path
                direction = ""
                if len(parts) > 1 and parts[1] in ("forward_layer", "backward_layer"):  # <bidirectional>/forward_layer/...
                    direction, parts = parts[1].split("_")[0] + "/", [parts[0], *parts[2:]]
                elif len(parts) == 4 and parts[1] in PROJECTIONS and parts[0] in owner and owner[parts[0]].class_name == "MultiHeadAttention":
                    direction, parts = PROJECTIONS[parts[1]] + "/", [parts[0], *parts[2:]]  # <attention>/query_dense/vars/<i>
                if len(parts) == 4 and parts[1] == "layer":  # a TimeDistributed layer's wrapped layer: <layer>/layer/vars/<i>
                    parts = [parts[0], *parts[2:]]
                if len(parts) == 4 and parts[1] == "cell":  # a recurrent layer's cell: <layer>/cell/vars/<i>
                    parts = [parts[0], *parts[2:]]
                if isinstance(obj, h5py.Dataset) and len(parts) == 3 and parts[1] == "vars" and parts[0] in owner:
                    layer, index = owner[parts[0]], int(parts[2])
                    names = _var_names(layer)
                    found.setdefault(layer.name, {})[direction + (names[index] if index < len(names) else f"var_{index}")] = obj[()]

            root.visititems(visit_keras)
        return found
    nested = {layer.name: {inner.name for inner in nested_layers(layer)} for layer in graph if nested_layers(layer)}
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle

        every = [layer for outer in graph for layer in [outer, *nested_layers(outer)]]
        bidirectional = {layer.name for layer in every if layer.class_name == "Bidirectional"}
        attention = {layer.name for layer in every if layer.class_name == "MultiHeadAttention"}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                parts = name.split("/")
                layer, leaf = parts[0], weight_leaf(parts[-1])
                if layer in nested and len(parts) >= 3:
                    # <nested model>/<nested model>/<layer>/<weight>, or a recurrent layer's <nested model>/<layer>/<cell>/<weight>
                    layer = next((part for part in parts[1:-1] if part in nested[layer]), layer)
                if layer in bidirectional:  # <layer>/<layer>/forward_<inner>/<cell>/<weight>
                    direction = next((d for d in DIRECTIONS for part in parts[1:-1] if part.startswith(f"{d}_")), None)
                    leaf = f"{direction}/{leaf}" if direction else leaf
                if layer in attention and len(parts) >= 3 and parts[-2] in PROJECTIONS:  # <layer>/<layer>/query/kernel
                    leaf = f"{PROJECTIONS[parts[-2]]}/{leaf}"
                found.setdefault(layer, {})[leaf] = obj[()]

        root.visititems(visit)
        classes = {layer.name: layer.class_name for outer in graph for layer in [outer, *nested_layers(outer)]}
        for layer, weights in found.items():
            if classes.get(layer) in _VAR_NAMES and all(AUTO_NAMED.fullmatch(name) for name in weights):
                # a legacy .h5 keeps the counter names; `weight_names` lists the weights in creation order
                order = [weight_leaf(str(name, "utf-8") if isinstance(name, bytes) else name) for name in _weight_names(root, layer)]
                names = _VAR_NAMES[classes[layer]]
                found[layer] = {names[order.index(name)] if name in order[: len(names)] else name: value for name, value in weights.items()}
    return found


def weight_leaf(h5_name: str) -> str:
    """A weight's own name from its full one: `conv2d/kernel:0` → `kernel`."""
    return h5_name.split("/")[-1].split(":")[0]


def _weight_names(root: h5py.Group, layer: str) -> list:
    """The `weight_names` attribute of `layer`'s group in a legacy .h5 ([] where there is none)."""
    return list(root[layer].attrs.get("weight_names", [])) if layer in root else []
