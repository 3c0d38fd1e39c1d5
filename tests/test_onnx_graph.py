import onnx
from onnx import helper

from pipeline.converters import onnx_graph


def test_layer_names_with_and_without_keras3_suffix():
    names = ["conv2d", "conv2d_1"]
    keras3 = ["model_1/conv2d_1/Conv2D", "model_1/conv2d_1_2/Conv2D"]
    assert onnx_graph.suffixed_scopes(keras3, names)
    assert [onnx_graph.keras_layer_of(n, names, True) for n in keras3] == ["conv2d", "conv2d_1"]
    tf_keras = ["model/conv2d/Conv2D", "model/conv2d_1/Conv2D"]
    assert not onnx_graph.suffixed_scopes(tf_keras, names)
    assert [onnx_graph.keras_layer_of(n, names, False) for n in tf_keras] == ["conv2d", "conv2d_1"]


def test_softmax_input_is_the_logits_tensor():
    softmax = helper.make_node("Softmax", ["logits"], ["probs"], name="s")
    relu = helper.make_node("Relu", ["x"], ["logits"], name="r")
    value = helper.make_tensor_value_info
    graph = helper.make_graph([relu, softmax], "g", [value("x", onnx.TensorProto.FLOAT, [1, 3])],
                              [value("probs", onnx.TensorProto.FLOAT, [1, 3])])
    assert onnx_graph.softmax_input(graph) == "logits"
    graph.output[0].name = "logits"
    assert onnx_graph.softmax_input(graph) is None
