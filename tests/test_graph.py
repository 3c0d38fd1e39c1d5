import pytest

from pipeline.keras_file import graph
from pipeline.keras_file.model import KerasModel
from pipeline.common.errors import BadInput


def test_keras3_inbound_format(tiny_model):
    layers = KerasModel.open(tiny_model).layers
    assert [layer.name for layer in layers][:3] == ["input_layer", "conv2d", "batch_normalization"]
    assert layers[2].inbound == ("conv2d",)
    assert layers[-1].activation == "softmax"


@pytest.mark.real_data
def test_keras2_inbound_format_and_residual_adds(real_paths):
    model = KerasModel.open(real_paths[0])
    layers = {layer.name: layer for layer in model.layers}
    assert layers["add_1"].inbound == ("conv2d_5", "batch_normalization_4")
    assert layers["conv2d_8"].inbound == ("activation_4",)
    weights = model.weights
    assert weights["conv2d_4"]["kernel"].shape == (3, 3, 32, 32)


def test_sequential_layers_chain():
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "a"}}, {"class_name": "Dense", "config": {"name": "b"}}]}}
    assert [layer.inbound for layer in graph.layers(config)] == [(), ("a",)]


def test_weights_only_file_is_bad_input(tmp_path):
    import h5py

    with h5py.File(tmp_path / "weights.h5", "w") as handle:
        handle.create_dataset("dense/kernel:0", data=[1.0])
    with pytest.raises(BadInput, match="no model config"):
        KerasModel.open(tmp_path / "weights.h5")


def test_an_unnamed_weight_is_read_under_its_layer_attribute_name(tmp_path):
    """ConvNeXt's LayerScale makes its weight without a name: Keras files it as `variable` (legacy .h5)
    or vars/0 (.keras). Both read as `gamma`, the name the training step gives it (`tf_side.training`)."""
    import io
    import zipfile

    import h5py
    import numpy as np

    from pipeline.keras_file import weights

    scale = graph.KerasLayer("block_layer_scale", "LayerScale", {}, ())
    legacy = tmp_path / "model.h5"
    with h5py.File(legacy, "w") as handle:
        group = handle.create_group("model_weights/block_layer_scale")
        group.attrs["weight_names"] = [b"block_layer_scale/variable"]
        group.create_dataset("block_layer_scale/variable", data=np.ones(3, np.float32))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("layers/layer_scale/vars/0", data=np.ones(3, np.float32))
    packed = tmp_path / "model.keras"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("model.weights.h5", buffer.getvalue())
    for path in (legacy, packed):
        assert list(weights.read(path, [scale])["block_layer_scale"]) == ["gamma"]


def test_an_open_input_dimension_is_checked_at_the_declared_length():
    from pipeline.data import checkset
    from pipeline.keras_file.graph import KerasLayer, input_shape, open_dimensions

    layers = [KerasLayer("tokens", "InputLayer", {"batch_shape": [None, None]}, ())]
    assert input_shape(layers) == (checkset.OPEN_DIMENSION_LENGTH,) and open_dimensions(layers) == [1]
    layers = [KerasLayer("image", "InputLayer", {"batch_input_shape": [None, 8, 8, 3]}, ())]
    assert input_shape(layers) == (8, 8, 3) and open_dimensions(layers) == []


def test_a_string_layer_is_refused_in_one_line_saying_what_converts_instead(tmp_path):
    """TextVectorization takes strings, which ONNX and PyTorch do not hold: the line names it and the model
    behind it (a Keras 2 config, written as tf-keras writes one, with h5py: no TensorFlow here)."""
    import json

    import h5py

    def layer(cls, name, after=None, **config):
        return {"class_name": cls, "name": name, "config": {"name": name, **config},
                "inbound_nodes": [[[after, 0, 0, {}]]] if after else []}

    config = {"class_name": "Functional", "config": {"name": "text", "layers": [
        layer("InputLayer", "text", batch_input_shape=[None, 1], dtype="string"),
        layer("TextVectorization", "text_vectorization", "text", max_tokens=50, output_sequence_length=20),
        layer("Embedding", "embedding", "text_vectorization", input_dim=50, output_dim=8),
        layer("GlobalAveragePooling1D", "pool", "embedding"),
        layer("Dense", "dense", "pool", units=2, activation="softmax")],
        "input_layers": [["text", 0, 0]], "output_layers": [["dense", 0, 0]]}}
    with h5py.File(tmp_path / "text.h5", "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
        handle.create_group("model_weights")
    with pytest.raises(BadInput, match=r"^layer text_vectorization \(TextVectorization\) takes strings, which do not convert: "
                                       r"convert the layers from embedding on, fed the token ids, and keep the string step"):
        KerasModel.open(tmp_path / "text.h5")
