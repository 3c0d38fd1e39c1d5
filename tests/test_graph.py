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
