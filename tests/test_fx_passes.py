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
