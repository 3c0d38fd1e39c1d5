"""Load a Keras model in the TensorFlow process: Keras 3 first, tf-keras for what only Keras 2 reads."""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from pathlib import Path

from pipeline.common import json_tree
from pipeline.common.errors import BadInput
from pipeline.common.keras_job import CUSTOM_OBJECTS_ENV
from pipeline.data import feeds

# Layer classes Keras Applications define in their own modules, which a legacy .h5 names without the
# module (ConvNeXt's LayerScale): Keras's own code, given to the loader by name.
_KERAS_OWN_LAYERS = {"LayerScale": "keras.src.applications.convnext"}
# A legacy .h5 that Keras 3 writes keeps `x + 3.0` and `x * (1 / 6)` (MobileNetV3's hard sigmoid) and
# `a + b` (ConvNeXt's residuals) as op nodes named after the merge layers, with two positional arguments —
# which Keras 3's own legacy loader then builds as an `Add` / `Multiply` layer and refuses ("Only input
# tensors may be passed as positional arguments", "too many positional arguments"). `a + b` is the merge
# layer given [a, b]; a number operand makes a Rescaling, bit for bit (x·1 + c, x·c + 0):
# {class: (scale, offset) of c}.
_SCALAR_OPS = {"Add": lambda c: (1.0, c), "Subtract": lambda c: (1.0, -c), "Multiply": lambda c: (c, 0.0)}


def load_keras_model(path: Path, allow_unsafe_code: bool = False):
    """Keras 3's loader, in safe mode unless the user opted in (given Keras's own application layers,
    `_KERAS_OWN_LAYERS`); for a legacy .h5 that Keras 3 cannot deserialize, Keras 3 again on the config
    with its number-operand ops rebuilt as layers (`_SCALAR_OPS`), else tf-keras — the Keras 2 API, for
    Keras 2 configs such as a DepthwiseConv2D with a `groups` key. The caller has run `keras_file.safety.check` first: tf-keras runs a Lambda's code
    on load, so nothing reaches it that the safety check has not seen."""
    if not zipfile.is_zipfile(path) and Path(path).suffix not in (".h5", ".hdf5"):
        # an HDF5 file under another name (`model.keras`): both Kerases choose the format by the name
        with tempfile.TemporaryDirectory(prefix="legacy-h5-") as folder:
            named = Path(folder) / f"{Path(path).stem}.h5"
            named.symlink_to(Path(path).resolve())
            return _load(named, allow_unsafe_code)
    return _load(Path(path), allow_unsafe_code)


def _load(path: Path, allow_unsafe_code: bool):
    """`load_keras_model` of a file whose name says its format, its batch dimension opened (`_with_open_batch`)."""
    return _with_open_batch(_load_as_saved(path, allow_unsafe_code))


def fixes_batch(model) -> bool:
    """Whether the saved model fixes its batch size (`Input(batch_size=8)`, a stateful RNN's `batch_input_shape`)
    or carries state from one call to the next (`stateful=True`)."""
    return any(tensor.shape[0] is not None for tensor in model.inputs) or any(
        getattr(layer, "stateful", False) for layer in _every_layer(model))


def _every_layer(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _every_layer(layer)


def _with_open_batch(model):
    """`model` as is, or — where it fixes its batch size or is stateful (`fixes_batch`) — rebuilt from its own
    config with the batch dimension open and every recurrent layer stateless, its weights copied (the same
    variables, in the same order). A stateful model's one call from zero state is the stateless model's: that
    is what is converted and checked (the torch side carries no state between calls; the user's loop does)."""
    if not fixes_batch(model):
        return model
    keras = keras_api(model)

    config = model.get_config()
    for node in json_tree.dicts(config):
        for key in ("batch_input_shape", "batch_shape"):
            if isinstance(node.get(key), list) and node[key]:
                node[key] = [None, *node[key][1:]]
        if node.get("batch_size") is not None and "batch_input_shape" not in node and "batch_shape" not in node:
            node["batch_size"] = None
        if node.get("stateful") is True:
            node["stateful"] = False
    custom = {**_keras_own_layers(), **user_custom_objects()}
    rebuilt = (keras.Sequential if isinstance(model, keras.Sequential) else keras.Model).from_config(config, custom_objects=custom)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _load_as_saved(path: Path, allow_unsafe_code: bool):
    """The model as the file saved it: Keras 3, else the config rewritten, else tf-keras (`load_keras_model`)."""
    import keras

    custom = {**_keras_own_layers(), **user_custom_objects()}
    try:
        return keras.models.load_model(str(path), compile=False, safe_mode=not allow_unsafe_code, custom_objects=custom)
    except Exception as keras3_error:  # noqa: BLE001 — any deserialization failure; tried again below
        if zipfile.is_zipfile(path):
            raise _refusal(path, keras3_error) from keras3_error  # Keras 3's own format: tf-keras would not do better
        try:
            rewritten = _with_ops_as_layers(path, keras)
        except Exception as error:  # noqa: BLE001 — the rewritten config fails too: that is the reason
            raise _refusal(path, error) from error
        if rewritten is not None:
            return rewritten
        rebuilt = _cudnn_rebuilt(path)
        if rebuilt is not None:
            return rebuilt
        try:
            import tf_keras
        except ImportError:
            raise ValueError(f"Keras 3 cannot load this legacy .h5 ({keras3_error}); install tf-keras "
                             "(pip install tf-keras, the Keras 2 API) to load Keras 2 files") from keras3_error
        try:
            return tf_keras.models.load_model(str(path), compile=False, custom_objects=user_custom_objects())
        except Exception as keras2_error:  # noqa: BLE001
            # a Keras 2 file's own reason is tf-keras's; a Keras 3 file's, Keras 3's
            raise _refusal(path, keras2_error if _written_by_keras2(path) else keras3_error) from keras2_error


# What Keras says of a class it does not have: a custom layer, whose code is not in the file.
_UNKNOWN_CLASS = re.compile(r"(?:Unknown layer|Could not locate class|Unknown (?:object|class)[^:]*):? *'?([A-Za-z_][\w.>]*)'?")


_DESERIALIZING = re.compile(r"Error when deserializing class '([\w.>]+)' using config=\{'name': '([^']+)'.*?\}\. Exception encountered: (.*)")


def _refusal(path: Path, error: Exception) -> BadInput:
    """Keras's refusal of the file as one short line: a custom layer named by the layer that uses it (its
    class is code the file does not carry); otherwise Keras's first sentence, naming the layer where
    Keras does."""
    text = " ".join(str(error).split())
    unknown = _UNKNOWN_CLASS.search(text)
    if unknown:
        cls = unknown.group(1).split(">")[-1]
        layer = _layer_of_class(path, cls)
        where = f"layer {layer} ({cls})" if layer else f"class {cls}"
        return BadInput(f'{where}: not a Keras layer class — a custom layer; give its code with {CUSTOM_OBJECTS_ENV}=layers.py '
                        '(README "Custom layers")')
    layer = _DESERIALIZING.search(text)  # "Error when deserializing class 'X' using config={'name': 'y', ...}. Exception encountered: why"
    if layer:
        why = re.split(r"(?<=[.!?])\s", layer.group(3), maxsplit=1)[0]
        custom = " (a custom object? see README \"Custom layers\")" if re.search(r"Unknown|Could not (?:interpret|locate)", why) else ""
        return BadInput(f"layer {layer.group(2)} ({layer.group(1)}): Keras cannot build it: {why[:120]}{custom}")
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return BadInput(f"Keras cannot build the model from {Path(path).name}: {type(error).__name__}: {first[:160]}")


def _layer_of_class(path: Path, cls: str) -> str | None:
    """The name of the first layer of class `cls` in the file's config (nested models included)."""
    from pipeline.keras_file import safety

    found = safety.layers_of_class(safety.read_config(path), lambda name: name.split(">")[-1] == cls)
    return found[0] if found else None


def _written_by_keras2(path: Path) -> bool:
    """Whether a legacy .h5 says Keras 2 (or tf-keras) wrote it (its `keras_version` attribute)."""
    import h5py

    with h5py.File(path, "r") as handle:
        version = handle.attrs.get("keras_version", b"")
    return str(version.decode() if isinstance(version, bytes) else version).startswith(("1.", "2."))


def user_custom_objects() -> dict:
    """{name: class or function} defined in the Python file `CUSTOM_OBJECTS_ENV` names — the code of the
    user's own custom layers, which a model file names but cannot carry. The file runs: it is the user's
    own code, named by them, never anything from the model file. {} where the variable is unset.

    Raises:
        BadInput: the file does not exist or fails to run (its error, in one line).
    """
    import importlib.util
    import os

    source = os.environ.get(CUSTOM_OBJECTS_ENV)
    if not source:
        return {}
    if not Path(source).is_file():
        raise BadInput(f"{CUSTOM_OBJECTS_ENV}={source}: no such Python file")
    spec = importlib.util.spec_from_file_location("pipeline_user_custom_objects", source)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 — the user's code: its error, said in one line
        raise BadInput(f"{CUSTOM_OBJECTS_ENV}={Path(source).name} failed to run: {type(exc).__name__}: {exc}") from exc
    return {name: value for name, value in vars(module).items()
            if callable(value) and not name.startswith("_") and getattr(value, "__module__", "") == module.__name__}


def keras_api(model):
    """The Keras package a loaded model belongs to: `keras` (Keras 3) or `tf_keras` (the fallback)."""
    if type(model).__module__.startswith("tf_keras"):
        import tf_keras

        return tf_keras
    import keras

    return keras


def input_names(model) -> list[str]:
    """The model's input names, in its order (tf-keras says them; Keras 3 names each input tensor after its layer)."""
    return list(getattr(model, "input_names", None) or [tensor.name.split(":")[0] for tensor in model.inputs])


def input_layout(model) -> feeds.Layout:
    """Every input's name and one-sample shape, open dimensions at `checkset.OPEN_DIMENSION_LENGTH`."""
    from pipeline.data import checkset

    return feeds.Layout.of(input_names(model), [checkset.fill_open(tensor.shape[1:]) for tensor in model.inputs])


def _with_ops_as_layers(path: Path, keras):
    """The legacy .h5 at `path` loaded with each op node of two positional operands rebuilt as the layer
    it equals (`_SCALAR_OPS`), and the file's weights; None where the file has no such node (the
    failure was something else). Safe mode stays on: the config is data, rebuilt by Keras's deserializer."""
    config = _h5_config(path)
    if config is None:
        return None
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        return None  # a Keras 2.0–2.1 Sequential (its config a plain list of layers) has no op nodes: tf-keras reads it
    changed = 0
    for layer in inner["layers"]:
        if not isinstance(layer, dict):
            continue
        nodes = layer.get("inbound_nodes") or []
        args = nodes[0].get("args") if len(nodes) == 1 and isinstance(nodes[0], dict) else None
        if layer.get("class_name") not in _SCALAR_OPS or not args or len(args) != 2:
            continue
        tensors = [a for a in args if isinstance(a, dict) and a.get("class_name") == "__keras_tensor__"]
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(tensors) == 2:  # `a + b` of two tensors (ConvNeXt's residuals): the merge layer takes them as one list
            nodes[0]["args"] = [tensors]
            changed += 1
            continue
        if len(tensors) != 1 or len(numbers) != 1 or (layer["class_name"] == "Subtract" and args[0] is not tensors[0]):
            continue
        scale, offset = _SCALAR_OPS[layer["class_name"]](float(numbers[0]))
        layer.update(class_name="Rescaling", module="keras.layers", registered_name=None,
                     config={"name": layer["config"]["name"], "scale": scale, "offset": offset})
        nodes[0]["args"] = tensors
        changed += 1
    if not changed:
        return None
    from keras.src.legacy.saving import legacy_h5_format

    return _load_rewritten(path, config, lambda copy: legacy_h5_format.load_model_from_hdf5(
        copy, compile=False, safe_mode=True, custom_objects=_keras_own_layers()))


def _h5_config(path: Path) -> dict | None:
    """The model config a legacy .h5 holds, as JSON; None where it holds none."""
    import h5py

    with h5py.File(path, "r") as handle:
        raw = handle.attrs.get("model_config")
    return None if raw is None else json.loads(raw if isinstance(raw, str) else raw.decode())


def _load_rewritten(path: Path, config: dict, load):
    """`load` (a legacy-HDF5 loader) run on an in-memory copy of the .h5 at `path` holding `config` in place
    of its own: the user's file is never written."""
    import h5py

    with h5py.File(io.BytesIO(Path(path).read_bytes()), "r+") as copy:
        copy.attrs["model_config"] = json.dumps(config)
        return load(copy)


# Keras 2's cuDNN-only recurrent layers (TensorFlow runs them on a GPU alone; tf2onnx has no op for them) and
# the standard layer each is exactly: the same gates and activations, the weights mapped by Keras's own loader
# (tf-keras's `_convert_rnn_weights`: per-gate kernel layout, LSTM's two biases summed, GRU's kept as reset_after's two).
_CUDNN_LAYERS = {
    "CuDNNLSTM": ("LSTM", {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True}),
    "CuDNNGRU": ("GRU", {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "reset_after": True}),
}


def _cudnn_rebuilt(path: Path):
    """The legacy .h5 at `path` loaded by tf-keras with each CuDNNLSTM/CuDNNGRU rebuilt as the LSTM/GRU it equals
    (`_CUDNN_LAYERS`); None where the file has none (or tf-keras is not installed)."""
    try:
        from tf_keras.src.saving.legacy import hdf5_format
    except ImportError:
        return None
    config = _h5_config(path)
    changed = 0
    for node in json_tree.dicts(config):
        if node.get("class_name") in _CUDNN_LAYERS and isinstance(node.get("config"), dict):
            node["class_name"], settings = _CUDNN_LAYERS[node["class_name"]]
            node["config"].update(settings)
            changed += 1
    if not changed:
        return None
    return _load_rewritten(path, config, lambda copy: hdf5_format.load_model_from_hdf5(copy, custom_objects=user_custom_objects(), compile=False))


def _keras_own_layers() -> dict:
    """{class name: class} of `_KERAS_OWN_LAYERS` that this Keras has."""
    import importlib

    found = {}
    for name, module in _KERAS_OWN_LAYERS.items():
        try:
            found[name] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return found
