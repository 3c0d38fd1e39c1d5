import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.converters import onnx_fixes
from pipeline.common.errors import BadInput


def _graph(nodes, initializers=(), rank=2):
    shape = ["n", 3] if rank == 2 else ["n", 3, 4, 5]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def _run(proto, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_unknown_op_is_named_with_its_keras_layer():
    proto = _graph([helper.make_node("Erfinv", ["x"], ["y"], name="model_1/conv2d_1_2/Erfinv")])
    with pytest.raises(BadInput, match=r"Erfinv \(from layer conv2d_1, ONNX node model_1/conv2d_1_2/Erfinv\)"):
        onnx_fixes.check_ops(proto, 15, ["conv2d", "conv2d_1"])


def test_erfc_rewritten_exactly():
    proto = _graph([helper.make_node("Erfc", ["x"], ["y"], name="gelu/Erfc")])
    assert onnx_fixes.rewrite_erfc(proto) == 1
    onnx.checker.check_model(proto, full_check=True)
    x = np.linspace(-3, 3, 30, dtype=np.float32).reshape(10, 3)
    expected = np.vectorize(math.erfc)(x.astype(np.float64))
    np.testing.assert_allclose(_run(proto, x), expected, atol=2e-7)


def test_global_max_pool_becomes_reduce_max():
    proto = _graph([helper.make_node("GlobalMaxPool", ["x"], ["y"], name="pool")], rank=4)
    assert onnx_fixes.rewrite_global_max_pool(proto) == 1
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(_run(proto, x), x.max(axis=(2, 3), keepdims=True))


def test_canonical_names_do_not_depend_on_the_counter():
    def build(offset):
        k = helper.make_tensor(f"const_fold_opt__{100 + offset}", TensorProto.FLOAT, [3], [1, 2, 3])
        return _graph([helper.make_node("Add", ["x", k.name], [f"Add__{7 + offset}:0"], name=f"Add__{7 + offset}"),
                       helper.make_node("Relu", [f"Add__{7 + offset}:0"], ["y"], name="relu")], [k])
    a, b = build(0), build(42)
    assert a.SerializeToString() != b.SerializeToString()
    onnx_fixes.canonical_names(a)
    onnx_fixes.canonical_names(b)
    assert a.SerializeToString() == b.SerializeToString()
    onnx.checker.check_model(a, full_check=True)


def test_canonical_names_keep_a_loop_body_reading_the_same_outer_values():
    """A Loop's body reads outer values by name; renamed apart from the outer graph, a read would point
    at another constant (found as a Keras GRU failing ONNX's check one run in three)."""
    from onnx import numpy_helper

    body = helper.make_graph(
        [helper.make_node("Add", ["x", "outer__9"], ["y__4"]), helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("y__4", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips__2", "", "x0"], ["x_end"], body=body)], "g",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("x_end", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.array(3, np.int64), "trips__2"), numpy_helper.from_array(np.ones(2, np.float32), "outer__9")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    onnx_fixes.canonical_names(proto)
    outer = {init.name for init in proto.graph.initializer}
    read = proto.graph.node[0].attribute[0].g.node[0].input[1]
    assert read in outer and read != "outer__9"
    onnx.checker.check_model(proto, full_check=True)


def test_a_float32_part_of_the_float64_rebuild_is_named():
    """TensorFlow's bilinear resize returns float32 even in the float64 rebuild; tf2onnx then writes float32
    constants (the clip to the input's range) beside float64 values. That layer has no float64 reference:
    named, so the report says why there is no proof (a proof against it failed by 1e-8, a false alarm)."""
    from onnx import numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Min", ["x", "top"], ["y"], name="functional_1/resizing_1/clip_by_value/Minimum")], "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 2])], [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 2])],
        initializer=[numpy_helper.from_array(np.array(255, np.float32), "top")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    assert onnx_fixes.float32_part(proto, ["resizing", "dense"]) == "resizing"
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(255, np.float64), "top"))
    assert onnx_fixes.float32_part(proto, ["resizing", "dense"]) is None
