import numpy as np
import onnx
import pytest

from pipeline import onnx_export
from pipeline.backends import KerasReference
from pipeline.errors import BadInput
from pipeline.tolerances import ATOL_PROB


def test_writes_checked_onnx_with_dynamic_batch(tiny_converted):
    _, _, paths, result, _ = tiny_converted
    proto = onnx.load(str(paths.onnx))
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].dim_value and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert result.input_shape == (32, 32, 3)
    assert result.validation.max_abs_diff <= ATOL_PROB


def test_keras_reference_holds_every_check_set(tiny_converted, tiny_data):
    _, _, paths, _, _ = tiny_converted
    reference = KerasReference(paths.keras_reference)
    assert reference.set_names() == ["random_1", "random_256", "random_7", "test"]
    outputs = reference.outputs()
    assert outputs["test"].probs.shape == (64, 10)
    np.testing.assert_allclose(outputs["test"].probs.sum(1), 1, atol=1e-5)
    # logits are the softmax input: softmax(logits) must give the probabilities
    logits = outputs["random_7"].logits
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True), outputs["random_7"].probs, atol=1e-6)


def test_missing_model_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        onnx_export.run(tmp_path / "nope.h5", tmp_path, None)


def test_not_a_model_is_bad_input(tmp_path):
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("not an HDF5 file")
    with pytest.raises(BadInput, match="not an HDF5 file"):
        onnx_export.run(bogus, tmp_path / "out", None)
    assert not (tmp_path / "out" / "bogus" / "model.onnx").exists()
