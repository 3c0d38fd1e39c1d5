"""A mixed-precision model (`mixed_float16`: float16 compute, float32 variables, a float32 softmax), trained a
few steps, as users' tf-keras `.h5` and Keras 3 `.keras`. The bare tools convert it; so must this pipeline: its
tolerances come from the model's own float16 rounding, measured against its float64 twin, not from float32's;
a fault in a kernel still fails it, and is named at its layer where it stands above float16's rounding there."""

from __future__ import annotations

import json

import pytest

import families
import helpers

BUILD_SCRIPT = """
import sys
import numpy as np
flavour, path = sys.argv[1], sys.argv[2]
if flavour == "keras2":
    import tf_keras as keras
else:
    import keras
keras.mixed_precision.set_global_policy("mixed_float16")
keras.utils.set_random_seed(7)
inputs = keras.Input((24,), name="features")
x = keras.layers.Dense(48, activation="relu", name="hidden")(inputs)
x = keras.layers.Dense(32, activation="tanh", name="hidden_2")(x)
x = keras.layers.Dense(10, name="logits")(x)
outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(7)
features = rng.normal(size=(512, 24)).astype("float32")
labels = (features[:, :10].argmax(axis=1)).astype("int32")  # a task the model can learn: its loss falls
history = model.fit(features, labels, epochs=3, batch_size=64, verbose=0).history["loss"]
assert history[-1] < history[0], history
model.save(path)
"""

SUFFIX = {"keras2": ".h5", "keras3": ".keras"}


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory):
    """flavour -> (the model file, the artifacts root with its onnx and torch stages run), built on first use."""
    folder, built = tmp_path_factory.mktemp("mixed"), {}

    def get(flavour: str) -> tuple:
        if flavour not in built:
            model, out = folder / f"mixed_{flavour}{SUFFIX[flavour]}", folder / f"artifacts_{flavour}"
            helpers.run_tf_script(BUILD_SCRIPT, flavour, str(model))
            helpers.run_stages(model, out, ("onnx", "torch"), helpers.NO_AOT)
            built[flavour] = (model, out)
        return built[flavour]

    return get


# users' files are Keras 2 (tf-keras .h5): in CI; the Keras 3 file in `make zoo-test` (CI's 30 minutes)
@pytest.mark.parametrize("flavour", [pytest.param(f, marks=pytest.mark.zoo) if f == "keras3" else f for f in families.FLAVOURS])
def test_mixed_float16_model_passes_with_its_own_noise_and_the_float64_proof(mixed_model, flavour):
    model, out = mixed_model(flavour)
    completed = helpers.run_cli("verify", "--model", str(model), "--out", str(out))
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads((out / model.stem / "verify.json").read_text())
    assert summary["float64_proof"]["passed"], summary["float64_note"]
    # the noise measured is float16's (~1e-3 in probability), far above float32's (~1e-7): the model's own
    assert summary["keras_float32_noise"] > 1e-5, summary["keras_float32_noise"]
    # every layer placed and compared, none over its bound: a Dense's MatMul (its output before the bias) is within
    # float16's bound of the Dense's output, and was placed there first — a layer "differing" while all agreed
    assert summary["layer_warning"] is None, summary["layer_warning"]
    assert all(row["diffs"] and row["passed"] for row in summary["layers"]["layers"]), summary["layers"]["layers"]


def test_a_kernel_fault_in_a_mixed_float16_model_fails_it_and_is_named_at_its_layer_above_float16s_noise(mixed_model, tmp_path):
    """Float16 rounds hidden_2's output to ~3% of its range (its Keras error against float64: 3.1e-2 of 1.0), and
    its layer bound is 4× that: 5% on its largest kernel element moves the layer by 1e-2 — the outputs, over the
    whole check set, still fail — and 25% moves it by 0.6, named there."""
    model, out = mixed_model("keras2")
    small = tmp_path / "small" / model.name
    small.parent.mkdir()
    helpers.plant_kernel_fault(model, small, "hidden_2", relative=0.05)
    assert helpers.run_cli("onnx", "--model", str(small), "--out", str(tmp_path / "small_out")).returncode == 0
    completed = helpers.run_cli("verify", "--model", str(model), "--onnx", str(tmp_path / "small_out" / model.stem / "model.onnx"),
                                "--out", str(out))
    assert completed.returncode == 1 and "verification failed" in completed.stderr, completed.stderr[-2000:]
    large = tmp_path / "large" / model.name
    large.parent.mkdir()
    helpers.plant_kernel_fault(model, large, "hidden_2", relative=0.25)
    helpers.assert_fault_named(model, large, out, tmp_path / "scratch", "hidden_2")
