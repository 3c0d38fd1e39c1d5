import onnx
import pytest

import faults
from pipeline.keras_file.model import KerasModel
from pipeline.verifier import layer_map


@pytest.fixture(scope="module")
def real_map(real_run):
    _, paths, data = real_run
    model = data / "models" / "pretrainedResnet.h5"
    keras = KerasModel.open(model)
    return model, paths.onnx, keras.layers, keras.weights


@pytest.mark.real_data
def test_every_resnet8_layer_has_its_own_op(real_map):
    model, onnx_path, layers, weights = real_map
    points = {p.layer.name: p for p in layer_map.map_onnx(layers, onnx.load(str(onnx_path)), weights)}
    proto = onnx.load(str(onnx_path))
    ops = {n.name: n.op_type for n in proto.graph.node}
    assert ops[points["conv2d_5"].onnx_node] == "Conv" and ops[points["conv2d_3"].onnx_node] == "Conv"
    assert points["conv2d_5"].onnx_node != points["conv2d_3"].onnx_node  # the branch told apart by weights
    assert ops[points["batch_normalization_4"].onnx_node] == "Add"  # BN's Mul + Add, compared after the Add
    assert ops[points["dense"].onnx_node] == "Softmax"  # Dense = MatMul + Add + its inner softmax
    assert points["conv2d"].layout == layer_map.CHANNELS_FIRST and points["dense"].layout == layer_map.KERAS
    assert all(p.compared and p.own_op for name, p in points.items() if name != "input_1")


@pytest.mark.real_data
def test_missing_relu_shares_its_input_point(real_map, tmp_path):
    model, onnx_path, layers, weights = real_map
    broken = faults.broken_onnx("relu_dropped", onnx_path, tmp_path / "b.onnx", model, "conv2d_3")
    points = {p.layer.name: p for p in layer_map.map_onnx(layers, onnx.load(str(broken)), weights)}
    assert not points["activation_3"].own_op and "folded or missing" in points["activation_3"].note
    assert points["activation_3"].shared_with == ["batch_normalization_3"]
    assert points["activation_3"].compared and not points["batch_normalization_3"].compared


def test_weight_distance_ignores_permutation_and_layout():
    import numpy as np

    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5))
    assert layer_map._weight_distance(kernel, kernel.transpose(3, 2, 1, 0)) == 0
    assert layer_map._weight_distance(kernel, kernel[:2]) == float("inf")
