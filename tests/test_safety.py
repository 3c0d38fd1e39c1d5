"""Bad model files end in one clear sentence, before any Keras loads them; Lambda code never runs."""

import io
import json
import zipfile

import h5py
import pytest

import helpers
from pipeline.keras_file import safety
from pipeline.common.errors import BadInput

LAMBDA_CONFIG = {"class_name": "Functional", "config": {"name": "m", "layers": [
    {"class_name": "InputLayer", "config": {"name": "in"}, "inbound_nodes": []},
    {"class_name": "Lambda", "config": {"name": "sneaky", "function": ["payload", None, None]}, "inbound_nodes": [[["in", 0, 0, {}]]]},
]}}


def _h5_with_config(path, config):
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
    return path


@pytest.mark.parametrize("content, message", [
    (b"this is a text file, not a model\n", "not an HDF5 file"),
    (bytes(range(256)) * 8, "not an HDF5 file"),
])
def test_not_hdf5(tmp_path, content, message):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message):
        safety.check(path)


def test_missing(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        safety.check(tmp_path / "nope.h5")


def test_truncated(tiny_model, tmp_path):
    path = tmp_path / "truncated.h5"
    path.write_bytes(tiny_model.read_bytes()[:4096])
    with pytest.raises(BadInput, match="truncated"):
        safety.check(path)


def test_weights_only(tmp_path):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("dense/kernel:0", data=[[1.0]])
    with pytest.raises(BadInput, match="save_weights"):
        safety.check(path)


def test_lambda_refused_unless_opted_in(tmp_path):
    path = _h5_with_config(tmp_path / "lambda.h5", LAMBDA_CONFIG)
    with pytest.raises(BadInput, match="Lambda layer.*sneaky.*--allow-unsafe-code"):
        safety.check(path)
    assert safety.check(path, allow_unsafe_code=True)["class_name"] == "Functional"


def test_lambda_in_keras_zip_refused(tmp_path):
    path = tmp_path / "model.keras"
    weights = io.BytesIO()
    h5py.File(weights, "w").close()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(LAMBDA_CONFIG))
        archive.writestr("model.weights.h5", weights.getvalue())
    with pytest.raises(BadInput, match="sneaky"):
        safety.check(path)


SENTINEL_MODEL = """
import sys, keras
sentinel = sys.argv[2]
inputs = keras.Input((4,))
outputs = keras.layers.Lambda(lambda x: (open(sentinel, "w").write("ran"), x)[1], name="payload")(inputs)
keras.Model(inputs, outputs).save(sys.argv[1])
"""


def test_cli_refuses_lambda_model_and_its_code_never_runs(tmp_path):
    model, sentinel, out = tmp_path / "lambda.h5", tmp_path / "ran.txt", tmp_path / "out"
    helpers.run_tf_script(SENTINEL_MODEL, str(model), str(sentinel))
    sentinel.unlink()  # Keras ran the lambda while building the model; from here on it must not run
    completed = helpers.run_cli("onnx", "--model", str(model), "--out", str(out), "--data", str(tmp_path))
    helpers.assert_one_line_error(completed, "Lambda", "payload")
    assert not sentinel.exists() and not out.exists()
