import numpy as np
import pytest
import torch

from pipeline.converters import fx_passes, to_fx


@pytest.fixture
def converted(tiny_converted):
    _, _, paths, _, _ = tiny_converted
    return to_fx.convert_raw(paths.onnx)


def test_export_fails_without_the_rewrite(converted):
    # The reason the pass exists: onnx2torch's Reshape branches on tensor data.
    with pytest.raises(Exception, match="(?i)data-dependent|guard"):
        to_fx.export(converted, (32, 32, 3))


def test_static_reshapes_keeps_outputs_and_allows_export(converted):
    x = torch.rand(5, 32, 32, 3) * 255
    with torch.inference_mode():
        before = converted(x)
    assert fx_passes.static_reshapes(converted, (32, 32, 3)) == 1
    assert "OnnxReshape" not in {type(m).__name__ for m in converted.modules()}
    with torch.inference_mode():
        assert torch.equal(converted(x), before)
    program = to_fx.export(converted, (32, 32, 3)).module()
    for batch in (1, 7, 300):
        xb = torch.rand(batch, 32, 32, 3) * 255
        with torch.inference_mode():
            torch.testing.assert_close(program(xb), converted(xb), atol=0, rtol=0)


def test_with_logits_returns_softmax_input(converted):
    with_logits = fx_passes.with_logits(converted)
    x = torch.rand(4, 32, 32, 3) * 255
    with torch.inference_mode():
        logits, probs = with_logits(x)
        np.testing.assert_array_equal(probs.numpy(), converted(x).numpy())
        np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), probs.numpy(), atol=1e-7)


def test_with_logits_none_without_final_softmax():
    gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    assert fx_passes.with_logits(gm) is None


def _pad_model(path, mode: str, pads: list[int], value: float | None):
    import onnx
    from onnx import TensorProto, helper

    inputs = ["x", "pads"] + (["value"] if value is not None else [])
    initializers = [helper.make_tensor("pads", TensorProto.INT64, [len(pads)], pads)]
    if value is not None:
        initializers.append(helper.make_tensor("value", TensorProto.FLOAT, [], [value]))
    graph = helper.make_graph([helper.make_node("Pad", inputs, ["y"], mode=mode), helper.make_node("Relu", ["y"], ["z"])], "pad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("mode, pads, value", [("constant", [0, 0, 1, 0, 0, 0, 2, 3], 0.5),  # asymmetric: top 1, bottom 2, right 3
                                               ("constant", [0, 0, 0, 1, 0, 0, 1, 0], None),
                                               ("reflect", [0, 0, 1, 2, 0, 0, 2, 1], None)])
def test_static_pads_keep_onnxruntime_outputs_and_export_without_data_dependent_sizes(tmp_path, mode, pads, value):
    import onnx

    from pipeline.runtimes import ort

    path = _pad_model(tmp_path / "pad.onnx", mode, pads, value)
    gm = to_fx.convert_raw(path)
    x = torch.randn(2, 3, 5, 4)
    expected = ort.session(onnx.load(str(path))).run(None, {"x": x.numpy()})[0]
    assert fx_passes.static_pads(gm) == 1
    assert "OnnxPadDynamic" not in {type(m).__name__ for m in gm.modules()}
    with torch.inference_mode():
        np.testing.assert_array_equal(gm(x).numpy(), expected)
    program = torch.export.export(gm, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    # With onnx2torch's dynamic pad, export fails here on the data-dependent pads ("guard"), or (in
    # MobileNetV3Small) leaves every later size an expression of unbacked symbols u0, u1, … for load to parse.
    assert not [s for s in map(str, program.range_constraints) if s.startswith("u")]
    with torch.inference_mode():
        np.testing.assert_array_equal(program.module()(x).numpy(), expected)


@pytest.mark.parametrize("given", ["scales", "sizes"])
def test_static_resizes_keep_onnx_runtime_values_and_export(given, tmp_path):
    """A bilinear Resize by constant scales (UpSampling2D) and by sizes computed from the input's Shape
    (Keras Resizing): onnx2torch reads both with `.tolist()`, which `torch.export` cannot trace."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2])]
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    if given == "scales":
        inits.append(numpy_helper.from_array(np.array([1, 1, 1.5, 1.5], np.float32), "scales"))
        nodes.append(helper.make_node("Resize", ["nchw", "roi", "scales"], ["y"], mode="linear"))
    else:
        inits += [numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([2], np.int64), "two"),
                  numpy_helper.from_array(np.array([24, 24], np.int64), "hw")]
        nodes += [helper.make_node("Shape", ["nchw"], ["shape"]), helper.make_node("Slice", ["shape", "zero", "two"], ["nc"]),
                  helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
                  helper.make_node("Resize", ["nchw", "roi", "", "sizes"], ["y"], mode="linear")]
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 16, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    path = tmp_path / "resize.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), path)
    x = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    gm = to_fx.convert_raw(path)
    assert fx_passes.static_resizes(gm, (16, 16, 3)) == 1
    np.testing.assert_allclose(gm(torch.from_numpy(x)).numpy(), expected, atol=1e-6, rtol=0)
    program = to_fx.export(gm, (16, 16, 3)).module()
    np.testing.assert_allclose(program(torch.from_numpy(x[:1])).numpy(), expected[:1], atol=1e-6, rtol=0)
