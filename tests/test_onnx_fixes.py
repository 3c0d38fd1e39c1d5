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


def _resize_chain(dtype=TensorProto.FLOAT, clip=False, opset=13):
    """tf2onnx's graph of Keras `Resizing(7, 9)` after a 2× bilinear upsampling of a 10×14 map (scales float32): the
    second Resize's scales float32(7/20), float32(9/28); with `clip`, Keras 3's clip to float32's range after the first."""
    from onnx import numpy_helper

    top = np.finfo(np.float32).max
    nodes = [helper.make_node("Resize", ["x", "roi", "up"], ["u"], name="Resize__1", mode="linear", coordinate_transformation_mode="half_pixel")]
    if clip:
        nodes += [helper.make_node("Min", ["u", "top"], ["u_min"], name="resizing/clip_by_value/Minimum"),
                  helper.make_node("Max", ["u_min", "bottom"], ["u_clip"], name="resizing/clip_by_value")]
    nodes.append(helper.make_node("Resize", ["u_clip" if clip else "u", "roi", "down"], ["y"], name="Resize__2", mode="nearest",
                                  coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="floor"))
    initializers = [numpy_helper.from_array(np.zeros(0, np.float32), "roi"), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up"),
                    numpy_helper.from_array(np.array([1, 1, 7 / 20, 9 / 28], np.float32), "down"),
                    numpy_helper.from_array(np.array(top, np.float32), "top"), numpy_helper.from_array(np.array(-top, np.float32), "bottom")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, ["n", 2, 10, 14])],
                              [helper.make_tensor_value_info("y", dtype, ["n", 2, 7, 9])], initializers[:3] + (initializers[3:] if clip else []))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [11, 13])  # Resize-11 takes an empty scales tensor beside sizes, not a missing input
def test_a_resize_that_float64_floors_short_is_given_its_sizes(opset):
    """float32(7/20) · 20 floors to 7 in float32 (ONNX Runtime) and 6 in float64 (shape inference, torch): the checker
    refused tf2onnx's graph. Given sizes instead, every reader gets 7×9 and ONNX Runtime computes the same numbers;
    the exact 2× upsampling before it is left alone."""
    proto = _resize_chain(opset=opset)
    with pytest.raises(onnx.shape_inference.InferenceError, match="differ"):
        onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(0).normal(0, 1, (2, 2, 10, 14)).astype(np.float32)
    before = _run(proto, x)
    assert onnx_fixes.rewrite_resize_scales(proto) == 1
    onnx.checker.check_model(proto, full_check=True)
    np.testing.assert_array_equal(_run(proto, x), before)
    assert [node.input[2] for node in proto.graph.node if node.op_type == "Resize"] == ["up", "" if opset >= 13 else "Resize__2/sizes/no_scales"]
    assert onnx_fixes.rewrite_resize_scales(proto) == 0  # done once


def test_the_float32_clip_after_a_bilinear_resize_of_the_float64_rebuild_is_made_float64():
    """TensorFlow's bilinear resize returns float32 in the float64 rebuild, and Keras clips it to float32's range: the
    graph holds float32 bounds (±3.4e38) beside float64 values. Made float64, the graph is float64 throughout and
    `float32_part` finds nothing; a float32 bound of any other value, or one not after a bilinear resize, stays named."""
    proto = _resize_chain(TensorProto.DOUBLE, clip=True)
    assert onnx_fixes.float32_part(proto, ["resizing"]) == "resizing"
    assert onnx_fixes.float64_resize_clips(proto) == 2
    assert onnx_fixes.float32_part(proto, ["resizing"]) is None
    onnx.checker.check_model(proto, full_check=False)
    nearest = _resize_chain(TensorProto.DOUBLE, clip=True)
    resize = next(node for node in nearest.graph.node if node.name == "Resize__1")
    next(attribute for attribute in resize.attribute if attribute.name == "mode").s = b"nearest"
    assert onnx_fixes.float64_resize_clips(nearest) == 0  # TensorFlow's nearest resize keeps float64: no such clip
