import pytest

from pipeline import keras_graph
from pipeline.errors import BadInput


def test_keras3_inbound_format(tiny_model):
    layers = keras_graph.layers(keras_graph.read_model_config(tiny_model))
    assert [layer.name for layer in layers][:3] == ["input_layer", "conv2d", "batch_normalization"]
    assert layers[2].inbound == ("conv2d",)
    assert layers[-1].activation == "softmax"


@pytest.mark.real_data
def test_keras2_inbound_format_and_residual_adds(real_paths):
    layers = {layer.name: layer for layer in keras_graph.layers(keras_graph.read_model_config(real_paths[0]))}
    assert layers["add_1"].inbound == ("conv2d_5", "batch_normalization_4")
    assert layers["conv2d_8"].inbound == ("activation_4",)
    weights = keras_graph.weights(real_paths[0])
    assert weights["conv2d_4"]["kernel"].shape == (3, 3, 32, 32)


def test_sequential_layers_chain():
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "a"}}, {"class_name": "Dense", "config": {"name": "b"}}]}}
    assert [layer.inbound for layer in keras_graph.layers(config)] == [(), ("a",)]


def test_weights_only_file_is_bad_input(tmp_path):
    import h5py

    with h5py.File(tmp_path / "weights.h5", "w") as handle:
        handle.create_dataset("dense/kernel:0", data=[1.0])
    with pytest.raises(BadInput, match="no model config"):
        keras_graph.read_model_config(tmp_path / "weights.h5")
