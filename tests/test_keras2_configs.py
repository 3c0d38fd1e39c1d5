"""The native model reads the configs every Keras 2 wrote (2.0–2.15, tf-keras) and Keras 3's forms.

tf-keras builds a few models once, and Keras's outputs on seeded inputs are stored beside them; each
vintage is then the same model with its `model_config` rewritten (h5py, no TensorFlow here) as that
Keras version wrote it. The native model generated from every rewrite must equal Keras's outputs.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import helpers
from pipeline.common.errors import BadInput
from pipeline.common.tolerances import output_tolerance
from pipeline.keras_file import graph
from pipeline.keras_file.model import KerasModel
from pipeline.native import generate, load

# Run once in a TensorFlow process with tf-keras (the Keras 2 API): argv = output folder. Each model is
# saved as a legacy .h5 with its seeded inputs and Keras's outputs in <name>.npz.
BUILD_SCRIPT = """
import sys
import numpy as np
import tf_keras as keras
L = keras.layers
out = sys.argv[1]
keras.utils.set_random_seed(20261206)
rng = np.random.default_rng(0)

def save(name, model, shape):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):  # statistics far from 0 and 1: a dropped BN shows
            n = layer.get_weights()[-1].shape[0]
            values = {"gamma": rng.uniform(0.5, 1.5, n), "beta": rng.normal(0, 0.5, n),
                      "moving_mean": rng.normal(0, 0.5, n), "moving_variance": rng.uniform(0.5, 2.0, n)}
            layer.set_weights([values[w.name.split("/")[-1].split(":")[0]] for w in layer.weights])
    model.save(f"{out}/{name}.h5")
    x = rng.uniform(-1, 1, (6, *shape)).astype(np.float32)
    np.savez(f"{out}/{name}.npz", x=x, y=model.predict(x, verbose=0))

# A Sequential as Keras 2 users wrote it: the input shape on the first layer; BatchNormalization with
# axis -1, 3 and [3] (rewritten below), center or scale off; Keras 2's activation names; a grouped conv.
save("sequential", keras.Sequential([
    L.Conv2D(8, 3, padding="same", input_shape=(12, 12, 4), kernel_regularizer=keras.regularizers.l2(1e-4)),
    L.BatchNormalization(axis=-1),
    L.Activation("relu6"),
    L.Conv2D(8, 3, strides=2, padding="same", groups=2),
    L.BatchNormalization(axis=3, center=False),
    L.Activation("hard_sigmoid"),
    L.DepthwiseConv2D(3, padding="same"),
    L.BatchNormalization(scale=False),
    L.Activation("linear"),
    L.Flatten(),
    L.Dense(6, activation="softmax"),
]), (12, 12, 4))
# Dense on a rank-3 tensor (N, steps, features): it acts on the last axis
save("dense_rank3", keras.Sequential([
    L.Dense(8, input_shape=(5, 7), activation="relu"),
    L.Dense(3),
    L.GlobalAveragePooling1D(),
    L.Dense(2, activation="sigmoid"),
]), (5, 7))
inputs = keras.Input((10, 10, 3))
a = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
b = L.Conv2D(4, 1)(inputs)
x = L.BatchNormalization(axis=[3])(L.Add()([a, b]))
x = L.GlobalAveragePooling2D()(L.MaxPooling2D(2)(L.LeakyReLU(0.1)(x)))
save("functional", keras.Model(inputs, L.Dense(3, activation="softmax")(x)), (10, 10, 3))
inputs = keras.Input((8, 8, 3))
stem = keras.Sequential([L.Conv2D(4, 3, padding="same", input_shape=(8, 8, 3)), L.Activation("relu")], name="stem")
save("nested", keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(stem(inputs)))), (8, 8, 3))
"""


def _each_dict(item, change) -> None:
    """`change(d)` on every dict in the JSON `item`, nested ones included."""
    if isinstance(item, dict):
        change(item)
        for value in list(item.values()):
            _each_dict(value, change)
    elif isinstance(item, list):
        for value in item:
            _each_dict(value, change)


def _layer_dtypes(value):
    """Every layer's "float32" dtype (InputLayers' aside: Keras writes those as strings) set to `value`."""

    def rewrite(config: dict) -> dict:
        for entry in _entries(config):
            if entry["class_name"] != "InputLayer" and entry["config"].get("dtype") == "float32":
                entry["config"]["dtype"] = copy.deepcopy(value)
        return config

    return rewrite


def _entries(config: dict) -> list[dict]:
    """The layer entries of a model config and of the models nested in it (not the models' own)."""
    found: list[dict] = []

    def collect(item: dict) -> None:
        inner = item.get("config")
        if "class_name" in item and isinstance(inner, dict) and "name" in inner and "layers" not in inner:
            found.append(item)

    _each_dict(config["config"], collect)
    return found


def _without_input_layer(config: dict) -> dict:
    """Keras 2.0–2.2: a Sequential has no InputLayer entry; its first layer carries `batch_input_shape`."""
    layers = config["config"]["layers"]
    if layers[0]["class_name"] == "InputLayer":
        del layers[0]
    return config


def _keras20_fields(config: dict) -> dict:
    """Keras 2.0–2.1's fields: no `groups` (grouped convolutions came with TensorFlow 2.3: kept where not 1),
    `ragged`, `optional`; initializers as {"class_name": "VarianceScaling", "config": {..., "distribution":
    "uniform"}} and regularizers as L1L2, neither with a module."""

    def rewrite(item: dict) -> None:
        for key in ("groups", "ragged", "optional", "module", "registered_name"):
            if key in item and not isinstance(item[key], dict | list) and not (key == "groups" and item[key] != 1):
                del item[key]
        for key, value in list(item.items()):
            if key.endswith("_initializer") and isinstance(value, dict) and value.get("class_name") == "GlorotUniform":
                item[key] = {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}}
            if key.endswith("_regularizer") and isinstance(value, dict):
                item[key] = {"class_name": "L1L2", "config": {"l1": 0.0, "l2": value["config"].get("l2", 0.0)}}

    _each_dict(config, rewrite)
    return config


def _keras20_sequential(config: dict) -> dict:
    """Keras 2.0–2.1: a Sequential's config is the plain list of its layers, in 2.0's fields."""
    config = _keras20_fields(_without_input_layer(config))
    config["config"] = config["config"]["layers"]
    return config


def _keras20_nested_sequential(config: dict) -> dict:
    """Keras 2.0–2.1: a Sequential nested in a model is the plain list of its layers, too."""
    for entry in config["config"]["layers"]:
        if entry["class_name"] == "Sequential":
            layers = [layer for layer in entry["config"]["layers"] if layer["class_name"] != "InputLayer"]
            entry["config"] = layers
    return _keras20_fields(config)


def _any_length(config: dict) -> dict:
    """A Keras 2.0 Sequential over sequences of any length: `batch_input_shape` [null, null, features]."""
    config = _keras20_sequential(config)
    config["config"][0]["config"]["batch_input_shape"][1] = None
    return config


def _model_class(config: dict) -> dict:
    """Keras 2.0–2.3 called a functional model `Model` (2.4 on: `Functional`)."""
    config["class_name"] = "Model"
    return config


def _keras3_inbound_nodes(config: dict) -> dict:
    """Keras 3's inbound nodes: {"args": [keras tensors], "kwargs": {}} instead of [[[name, 0, 0, {}]]]."""

    def tensor(name: str) -> dict:
        return {"class_name": "__keras_tensor__", "config": {"shape": [None], "dtype": "float32", "keras_history": [name, 0, 0]}}

    for entry in config["config"]["layers"]:
        if entry.get("inbound_nodes"):
            refs = [tensor(node[0]) for node in entry["inbound_nodes"][0]]
            entry["inbound_nodes"] = [{"args": [refs if len(refs) > 1 else refs[0]], "kwargs": {}}]
    return config


def _keras3_batch_shape(config: dict) -> dict:
    """Keras 3's InputLayer states `batch_shape` where Keras 2 wrote `batch_input_shape`."""

    def rename(item: dict) -> None:
        if "batch_input_shape" in item:
            item["batch_shape"] = item.pop("batch_input_shape")

    _each_dict(config, rename)
    return config


def _batchnorm_axis(axis):
    """BatchNormalization's axis as Keras wrote it: -1 (Keras 2.0), 3, or [3] (tf-keras)."""

    def rewrite(config: dict) -> dict:
        for entry in _entries(config):
            if entry["class_name"] == "BatchNormalization":
                entry["config"]["axis"] = axis
        return config

    return rewrite


def _activation_as_function(config: dict) -> dict:
    """tf-keras 2.13+ writes an activation passed as a function as {"class_name": "function", "config": NAME}."""
    for entry in _entries(config):
        if entry["config"].get("activation") == "relu":
            entry["config"]["activation"] = {"module": "builtins", "class_name": "function", "config": "relu", "registered_name": "function"}
    return config


def _future_field(config: dict) -> dict:
    """A field no Keras version here writes, on every convolution: ignored, with a note."""
    for entry in _entries(config):
        if entry["class_name"] == "Conv2D":
            entry["config"]["future_option"] = 3
    return config


# name -> (base model, rewrite of its config). Each is the same model as Keras wrote it in that vintage.
VINTAGES = {
    "tf_keras_sequential": ("sequential", lambda config: config),
    "tf_keras_functional": ("functional", lambda config: config),
    "tf_keras_dense_rank3": ("dense_rank3", lambda config: config),
    "tf_keras_nested_sequential": ("nested", lambda config: config),
    "keras20_sequential_list": ("sequential", _keras20_sequential),
    "keras20_sequential_list_dense_rank3": ("dense_rank3", _keras20_sequential),
    "keras20_sequence_of_any_length": ("dense_rank3", _any_length),
    "keras20_nested_sequential_list": ("nested", _keras20_nested_sequential),
    "keras22_sequential_without_input_layer": ("sequential", _without_input_layer),
    "keras20_model_class": ("functional", lambda config: _keras20_fields(_model_class(config))),
    "policy_dtype": ("sequential", _layer_dtypes({"class_name": "Policy", "config": {"name": "float32"}})),
    "keras3_dtype_policy": ("functional", _layer_dtypes({"module": "keras", "class_name": "DTypePolicy",
                                                        "config": {"name": "float32"}, "registered_name": None})),
    "tf_dtype_name": ("sequential", _layer_dtypes("tf.float32")),
    "keras3_batch_shape": ("functional", _keras3_batch_shape),
    "keras3_inbound_nodes": ("functional", _keras3_inbound_nodes),
    "batchnorm_axis_minus_1": ("sequential", _batchnorm_axis(-1)),
    "batchnorm_axis_3": ("functional", _batchnorm_axis(3)),
    "batchnorm_axis_list": ("sequential", _batchnorm_axis([3])),
    "activation_as_function": ("functional", _activation_as_function),
    "unknown_config_field": ("functional", _future_field),
}


@pytest.fixture(scope="module")
def keras2_models(tmp_path_factory) -> Path:
    """The folder holding the tf-keras models (<name>.h5) and Keras's outputs on seeded inputs (<name>.npz)."""
    folder = tmp_path_factory.mktemp("keras2_models")
    helpers.run_tf_script(BUILD_SCRIPT, str(folder))
    return folder


def _rewritten(source: Path, target: Path, rewrite) -> Path:
    """A copy of the legacy .h5 `source` at `target`, its model_config passed through `rewrite`."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:
        handle.attrs["model_config"] = json.dumps(rewrite(json.loads(handle.attrs["model_config"]))).encode()
    return target


def _native_outputs(model: KerasModel, x: np.ndarray, folder: Path) -> tuple[np.ndarray, generate.NativeModel]:
    """The generated native model of `model` (Keras 2's activations: tf-keras is the reference) on `x`."""
    native = generate.generate(model, keras2=True)
    (folder / "model.py").write_text(native.source)
    module = load.source_module(folder / "model.py")
    net = module.Model()
    net.load_state_dict({key: torch.from_numpy(value) for key, value in native.state_dict.items()})
    with torch.inference_mode():
        return net.eval()(torch.from_numpy(x)).numpy(), native


@pytest.mark.parametrize("vintage", list(VINTAGES))
def test_each_vintage_gives_the_native_model_equal_to_keras(keras2_models, tmp_path, vintage):
    base, rewrite = VINTAGES[vintage]
    model = KerasModel.open(_rewritten(keras2_models / f"{base}.h5", tmp_path / f"{vintage}.h5", rewrite))
    stored = np.load(keras2_models / f"{base}.npz")
    outputs, native = _native_outputs(model, stored["x"], tmp_path)
    tolerance = output_tolerance(model.classifier, float(np.abs(stored["y"]).max()))
    assert outputs.shape == stored["y"].shape
    np.testing.assert_allclose(outputs, stored["y"], atol=tolerance, rtol=0)
    convs = [layer.name for layer in model.layers if layer.class_name == "Conv2D"]
    expected = [f"layer {name} (Conv2D): config field future_option ignored" for name in convs] if vintage == "unknown_config_field" else []
    assert native.notes == expected


def test_an_ignored_field_is_noted_in_the_generated_source(keras2_models, tmp_path):
    model = KerasModel.open(_rewritten(keras2_models / "functional.h5", tmp_path / "future.h5", _future_field))
    source = generate.generate(model).source
    assert "Left out of the Keras config" in source and "config field future_option ignored" in source


def test_a_mixed_precision_policy_is_noted(keras2_models, tmp_path):
    """tf-keras's mixed precision (a policy dict naming mixed_float16): the native model is float32, and says so."""
    rewrite = _layer_dtypes({"module": "keras.mixed_precision", "class_name": "Policy", "config": {"name": "mixed_float16"}, "registered_name": None})
    model = KerasModel.open(_rewritten(keras2_models / "dense_rank3.h5", tmp_path / "mixed.h5", rewrite))
    expected = [f"layer {layer.name} ({layer.class_name}): dtype mixed_float16 (the native model computes in float32)"
                for layer in model.layers if layer.class_name != "InputLayer"]
    assert generate.generate(model).notes == expected


def _each(class_name: str, change):
    """A config rewrite applying `change` to every layer entry of `class_name`."""
    def rewrite(config: dict) -> dict:
        for entry in _entries(config):
            if entry["class_name"] == class_name:
                change(entry)
        return config

    return rewrite


def _set_field(class_name: str, key: str, value):
    return _each(class_name, lambda entry: entry["config"].__setitem__(key, copy.deepcopy(value)))


def _set_class(class_name: str, new: str):
    return _each(class_name, lambda entry: entry.__setitem__("class_name", new))


def _drop_field(class_name: str, key: str):
    return _each(class_name, lambda entry: entry["config"].pop(key))


def _second_output(config: dict) -> dict:
    """The last Dense fed the second output of the layer before it (a layer of several outputs: an LSTM's state)."""
    last = config["config"]["layers"][-1]
    last["inbound_nodes"][0][0][2] = 1
    return config


# name -> (base, rewrite, the one line that names what the native model cannot take)
REFUSED = {
    "ragged_input": ("functional", _set_field("InputLayer", "ragged", True), r"layer input_\d+ \(InputLayer\): a ragged input is not supported"),
    "sparse_input": ("functional", _set_field("InputLayer", "sparse", True), r"a sparse input is not supported"),
    "channels_first": ("sequential", _set_field("Flatten", "data_format", "channels_first"),
                       r"\(Flatten\): data_format channels_first is not supported"),
    "keras1_config": ("functional", _set_field("Dense", "init", "glorot_uniform"), r"\(Dense\): a Keras 1 config \(field 'init'"),
    "layer_as_activation": ("functional", _set_field("Dense", "activation", {"class_name": "LeakyReLU", "config": {"alpha": 0.2}}),
                            r"\(Dense\): activation 'LeakyReLU' is not supported"),
    "unknown_layer_class": ("functional", _set_class("GlobalAveragePooling2D", "GlobalAttentionPool"),
                            r"layer global_average_pooling2d\w*: GlobalAttentionPool has no native PyTorch equivalent"),
    "missing_field": ("functional", _drop_field("Conv2D", "kernel_size"),  # refused when the file is read, before any stage
                      r"layer conv2d\w* \(Conv2D\): kernel_size is missing \(a Conv2D cannot be built without it\)"),
    "second_output": ("functional", _second_output, r"\(Dense\): output 1 of layer \w+ \(a layer of several outputs\)"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_the_native_model_cannot_take_is_one_line_naming_the_layer(keras2_models, tmp_path, case):
    base, rewrite, message = REFUSED[case]
    with pytest.raises(BadInput, match=message) as raised:
        generate.generate(KerasModel.open(_rewritten(keras2_models / f"{base}.h5", tmp_path / f"{case}.h5", rewrite)))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("value", "name"), [
    ("float32", "float32"), ("tf.float32", "float32"), ("<dtype: 'float64'>", "float64"),
    ({"class_name": "Policy", "config": {"name": "mixed_float16"}}, "mixed_float16"),
    ({"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}, "float32"),
    (None, None),
])
def test_dtype_name_reads_every_form(value, name):
    assert graph.dtype_name(value) == name


def test_a_keras20_nested_sequential_is_read_as_its_layers():
    """Keras 2.0–2.1 wrote a Sequential nested as a layer with its config the plain list of its layers."""
    config = {"class_name": "Model", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 4]}, "name": "in", "inbound_nodes": []},
        {"class_name": "Sequential", "name": "stem", "inbound_nodes": [[["in", 0, 0, {}]]],
         "config": [{"class_name": "Dense", "config": {"name": "d", "units": 2, "batch_input_shape": [None, 4]}}]},
    ], "input_layers": [["in", 0, 0]], "output_layers": [["stem", 0, 0]]}}
    stem = graph.layers(config)[1]
    inner = graph.layers({"class_name": "Sequential", "config": stem.config})
    assert (stem.name, stem.inbound, [layer.name for layer in inner]) == ("stem", ("in",), ["d"])
