"""A model with a custom layer class: refused in one line naming the layer and the way on, then converted
once the user gives the class's code (`PIPELINE_CUSTOM_OBJECTS`, README "Custom layers")."""

from __future__ import annotations

import pytest

import helpers
from pipeline.common.keras_job import CUSTOM_OBJECTS_ENV

LAYERS = '''
import keras


class Scale(keras.layers.Layer):
    """x · factor: a layer Keras does not have."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
'''

BUILD = '''
import sys
sys.path.insert(0, sys.argv[2])
import keras
from layers import Scale

keras.utils.set_random_seed(0)
inputs = keras.Input((8,))
outputs = Scale(3.0, name="scale")(keras.layers.Dense(4, name="dense")(inputs))
keras.Model(inputs, outputs).save(sys.argv[1])
'''


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("custom")
    (folder / "layers.py").write_text(LAYERS)
    helpers.run_tf_script(BUILD, str(folder / "scaled.keras"), str(folder))
    return folder / "scaled.keras", folder / "layers.py"


def test_a_custom_layer_is_named_with_the_way_on(custom, tmp_path):
    model, _ = custom
    completed = helpers.run_cli("onnx", "--model", str(model), "--out", str(tmp_path / "out"), cwd=tmp_path)
    line = completed.stderr.strip().splitlines()[-1]
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
    assert line.startswith("error: layer scale (Scale): not a Keras layer class — a custom layer;"), line
    assert CUSTOM_OBJECTS_ENV in line and len(line) <= 200


def test_a_custom_layer_converts_with_its_code_given(custom, tmp_path):
    model, layers = custom
    completed = helpers.run_cli("onnx", "--model", str(model), "--out", str(tmp_path / "out"), cwd=tmp_path,
                                env={CUSTOM_OBJECTS_ENV: str(layers)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (tmp_path / "out" / "scaled" / "model.onnx").is_file()
