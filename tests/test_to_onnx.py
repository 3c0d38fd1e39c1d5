import numpy as np
import onnx
import pytest

import helpers
from pipeline.common.errors import BadInput, CheckFailed
from pipeline.data import checkset
from pipeline.keras_file.model import KerasModel
from pipeline.stages import to_onnx
from pipeline.verifier.keras_reference import KerasReference


def test_writes_checked_onnx_with_dynamic_batch(tiny_converted):
    _, _, paths, result, _ = tiny_converted
    proto = onnx.load(str(paths.onnx))
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].dim_value and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert result.input_shape == (32, 32, 3)


def test_keras_reference_holds_every_check_set(tiny_converted, tiny_data):
    _, _, paths, _, _ = tiny_converted
    reference = KerasReference(paths.keras_reference)
    assert reference.set_names() == sorted([*checkset.random_batches((32, 32, 3)), "test"])  # every size and default range
    outputs = reference.outputs()
    assert outputs["test"].probs.shape == (64, 10)
    np.testing.assert_allclose(outputs["test"].probs.sum(1), 1, atol=1e-5)
    # logits are the softmax input: softmax(logits) must give the probabilities
    seven = checkset.set_name(7, checkset.DEFAULT_RANGES[0])
    logits = outputs[seven].logits
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True), outputs[seven].probs, atol=1e-6)


def test_missing_model_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        to_onnx.run(tmp_path / "nope.h5", tmp_path, None)


def test_not_a_model_is_bad_input(tmp_path):
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("not an HDF5 file")
    with pytest.raises(BadInput, match="not an HDF5 file"):
        to_onnx.run(bogus, tmp_path / "out", None)
    assert not (tmp_path / "out" / "bogus" / "model.onnx").exists()


def test_validation_fails_on_a_broken_onnx(tiny_converted, tmp_path):
    """The onnx stage's own check is shown to fail: one conv weight +2e-2 breaks agreement with Keras."""
    model, _, paths, _, _ = tiny_converted
    helpers.perturb_onnx_kernel(paths.onnx, tmp_path / "broken.onnx", KerasModel.open(model).weights["conv2d_1"]["kernel"], delta=5.0)
    with pytest.raises(CheckFailed, match="disagrees with Keras"):
        to_onnx.validate(tmp_path / "broken.onnx", KerasReference(paths.keras_reference), classifier=True)
