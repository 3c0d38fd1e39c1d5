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
