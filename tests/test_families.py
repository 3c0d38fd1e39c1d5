"""Other people's Keras models: one small model per layer family, as Keras 3 `.keras` and as a legacy
Keras 2 `.h5` (written by tf-keras), through conversion and the full verification (issue 3's layer map
included). Every pair of backends and every compared layer must agree within the project's tolerances."""

from __future__ import annotations

import json
import shutil

import pytest

import families
import helpers
import numpy as np
from pipeline.keras_file.model import KerasModel
from pipeline.stages import native, to_onnx, to_torch, verify
from pipeline.verifier.backends import Artifacts
from pipeline.verifier.keras_reference import KerasReference

FLAVOURS = families.FLAVOURS
MEASURED: dict = {}  # (family, flavour) -> (proof max |Δ|, Keras float32 noise, noise ratios): printed with -s for docs/verification.md
WEIGHTED = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Dense"}
# Keras 3 cannot deserialize these Keras 2 configs (a `groups` key it does not know): tf-keras loads them.
NEEDS_TF_KERAS = {"depthwise", "separable", "conv_transpose"}


def _verify(model, out, onnx_path=None, aot=True):
    torch_result = to_torch.run(out / "model.onnx", out, KerasModel.open(model).layer_names, aot=aot)
    native_result = native.run(model, out)
    artifacts = Artifacts(model, onnx_path or out / "model.onnx", torch_result.pt2, torch_result.pt2_opt, out / "model_f64.onnx",
                          native_result.source)
    return verify.run(artifacts, None, out, progress=False, plots=False)


# Families whose tf-keras .h5 runs in `make zoo-test` only (CI's 30 minutes): their Keras 3 .keras runs in CI.
# In CI, the .h5 of the families whose Keras 2 file differs in kind: read by tf-keras (NEEDS_TF_KERAS), BatchNorm,
# Dense, Conv2D, a Sequential.
ZOO_ONLY_KERAS2 = {"prelu_groupnorm_spatial", "conv3d", "time_distributed", "attention_layers", "resize", "preprocessing", "conv1d",
                   "pooling", "pad_crop_upsample", "reshape_permute", "merge", "activations", "convnext_block", "avgpool_unequal_padding"}
CASES = [pytest.param(family, flavour, marks=pytest.mark.zoo) if flavour == "keras2" and family in ZOO_ONLY_KERAS2
         else (family, flavour) for family in families.FAMILIES for flavour in FLAVOURS]


# The family whose Keras 3 file gets its AOTInductor package in CI: 2-D convolutions (the rest: `make zoo-test`).
AOT_IN_CI = {"conv2d"}


@pytest.mark.parametrize(("family", "flavour"), CASES)
def test_family_converts_and_verifies(family_models, family, flavour):
    model, out = family_models[(family, flavour)]
    to_onnx.validate(out / "model.onnx", KerasReference(out / "keras_reference.npz"), KerasModel.open(model).classifier)
    # The AOTInductor package in CI for AOT_IN_CI's Keras 3 files only: each compile takes ~12 s of CI's 30 minutes
    # (the rest: test_family_aoti_package_agrees, in `make zoo-test`; the package's own tests: test_aoti.py)
    result = _verify(model, out, aot=flavour == "keras3" and family in AOT_IN_CI)
    summary = result.as_dict()
    failing = [pair for pair in summary["pairs"] if not pair["passed"]]
    assert result.passed, (failing, summary["first_divergence"])
    assert set(summary["backends"]) >= {"keras", "onnxruntime", "fx", "torch", "torch_opt", "native"}
    assert summary["float64_proof"]["passed"], (summary["float64_proof"], summary["float64_note"])  # every family rebuilds in float64
    assert summary["float64_proof_native"]["passed"], summary["float64_proof_native"]  # the second, independent path
    MEASURED[(family, flavour)] = (summary["float64_proof"]["max_abs_diff"], summary["keras_float32_noise"], summary["noise_ratios"])
    rows = summary["layers"]["layers"]
    # Every layer with weights is placed in the graph and compared: alone, sharing its tensor, or fused into
    # the layer after it (a Conv into its BatchNorm), which is compared.
    fused = {name for row in rows if row["diffs"] for name in row["fused"]}
    for row in rows:
        if row["keras_class"] in WEIGHTED:
            assert row["compared"] or row["shared_with"] or row["keras_layer"] in fused, row
    assert sum(bool(row["diffs"]) for row in rows) >= 2
    # the native model is compared at every layer, by its Keras name
    assert all(any(d["backend"] == "native" for d in row["diffs"]) for row in rows), [r["keras_layer"] for r in rows if not r["diffs"]]


@pytest.mark.zoo
@pytest.mark.parametrize("family", sorted(set(families.FAMILIES) - AOT_IN_CI))
def test_family_aoti_package_agrees(family_models, family):
    """The AOTInductor package of every other family's Keras 3 file: compiled, and checked against ONNX Runtime."""
    model, out = family_models[(family, "keras3")]
    result = to_torch.run(out / "model.onnx", out, KerasModel.open(model).layer_names, aot=True)
    assert result.pt2_aoti is not None and result.pt2_aoti.is_file() and result.validation_aoti.passed, result.validation_aoti


@pytest.mark.parametrize("family", sorted(NEEDS_TF_KERAS))
def test_legacy_h5_that_keras3_refuses_is_loaded_with_tf_keras(family_models, family):
    _, out = family_models[(family, "keras2")]
    assert json.loads((out / "worker.json").read_text())["keras_version"].startswith("tf_keras ")
    _, out3 = family_models[(family, "keras3")]
    assert json.loads((out3 / "worker.json").read_text())["keras_version"].startswith("keras ")


def test_broken_weight_in_a_family_model_is_caught_at_its_layer(family_models, tmp_path):
    """The checker fails on a broken input: one pointwise weight of the last SeparableConv2D +2e-2."""
    model, out = family_models[("separable", "keras3")]
    work = tmp_path / "separable"
    shutil.copytree(out, work)
    keras = KerasModel.open(model)
    target = [layer.name for layer in keras.layers if layer.class_name == "SeparableConv2D"][-1]
    kernel = keras.weights[target]["pointwise_kernel"]
    helpers.perturb_onnx_kernel(work / "model.onnx", work / "broken.onnx", kernel)
    result = verify.run(Artifacts(model, work / "broken.onnx", onnx_reference=work / "model.onnx"), None, work, progress=False, plots=False)
    assert not result.passed
    assert result.layers.first_divergence["keras_layer"] == target


# `torch` without its AOTInductor package (seconds of compile) where a test is about something else.
NO_AOT = {"onnx": (), "torch": ("--no-aot",), "verify": ()}


def test_keras_file_through_the_cli(family_models, tmp_path):
    """A `.keras` file through `onnx`, `torch` and `verify` as a user runs them."""
    model, _ = family_models[("merge", "keras3")]
    for stage in ("onnx", "torch", "verify"):
        completed = helpers.run_cli(stage, "--model", str(model), "--out", str(tmp_path))
        assert completed.returncode == 0, (stage, completed.stderr[-2000:])
    assert json.loads((tmp_path / "merge" / "verify.json").read_text())["passed"]


def test_unsupported_op_names_the_layer_and_op(tmp_path):
    model = families.build(tmp_path, "keras3", families.UNSUPPORTED)["avgpool_unequal_padding"]
    out = tmp_path / "out"
    assert helpers.run_cli("onnx", "--model", str(model), "--out", str(out)).returncode == 0
    completed = helpers.run_cli("torch", "--model", str(model), "--out", str(out))
    helpers.assert_one_line_error(completed, "AveragePool", "odd_pool", "non symmetrical padding")
    assert not (out / "avgpool_unequal_padding" / "model.pt2").exists()


SCALAR_OPS_H5 = """
import sys, keras
keras.utils.set_random_seed(0)
L = keras.layers
x = inp = keras.Input((6, 6, 3))
x = L.Conv2D(4, 3, padding="same")(x)
x = L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)  # MobileNetV3's hard sigmoid: op nodes with a number, in a Keras 3 legacy .h5
x = L.GlobalAveragePooling2D()(x)
keras.Model(inp, L.Dense(3, activation="softmax")(x)).save(sys.argv[1])
"""


def test_legacy_h5_with_scalar_ops_written_by_keras3_converts(tmp_path):
    """Keras 3 writes `x + 3.0` into a legacy .h5 as an `Add` with a number, which its own loader then
    refuses; the loader rebuilds each as the Rescaling it equals, and the model converts and verifies."""
    model = tmp_path / "hard_sigmoid.h5"
    helpers.run_tf_script(SCALAR_OPS_H5, str(model))
    for stage in ("onnx", "torch", "verify"):  # the AOTInductor compile is tested elsewhere: skipped here
        completed = helpers.run_cli(stage, "--model", str(model), "--out", str(tmp_path / "out"), *NO_AOT[stage])
        assert completed.returncode == 0, (stage, completed.stderr[-2000:])
    assert json.loads((tmp_path / "out" / "hard_sigmoid" / "verify.json").read_text())["float64_proof"]["passed"]


def test_user_inputs_join_every_check(family_models, tmp_path):
    """`--inputs` adds the user's own samples (here 5 of the Dense model's 10 features) to the check set."""
    model, _ = family_models[("dense", "keras3")]
    samples = tmp_path / "samples.npy"
    np.save(samples, np.random.default_rng(3).normal(size=(5, 10)).astype(np.float32))
    onnx = helpers.run_cli("onnx", "--model", str(model), "--out", str(tmp_path), "--inputs", str(samples))
    assert onnx.returncode == 0, onnx.stderr[-2000:]
    for stage in ("torch", "verify"):
        completed = helpers.run_cli(stage, "--model", str(model), "--out", str(tmp_path), *NO_AOT[stage])
        assert completed.returncode == 0, (stage, completed.stderr[-2000:])
    saved = json.loads((tmp_path / "dense" / "verify.json").read_text())
    assert saved["passed"] and saved["user_inputs"] == 5
    assert all(pair["images"] == saved["random_images"] + 5 for pair in saved["pairs"])


@pytest.mark.parametrize("case", ["wrong shape", "object array"])
def test_bad_user_inputs_exit_2_writing_nothing(family_models, tiny_data, tmp_path, case):
    model, _ = family_models[("dense", "keras3")]
    samples = tmp_path / "samples.npy"
    if case == "wrong shape":
        np.save(samples, np.zeros((5, 11), np.float32))
    else:
        np.save(samples, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out = tmp_path / "out"
    completed = helpers.run_cli("onnx", "--model", str(model), "--out", str(out), "--inputs", str(samples), "--data", str(tiny_data))
    helpers.assert_one_line_error(completed, "error: --inputs")
    assert not (out / "dense" / "model.onnx").exists()


def test_print_float64_measurements():
    """Not a check: the float64 figures the family tests measured, printed (`pytest -s`) for docs/verification.md."""
    for key, (proof, noise, ratios) in sorted(MEASURED.items()):
        print(key, f"proof {proof:.1e}", f"noise {noise:.1e}", {k: round(v, 2) for k, v in ratios.items()})


def test_a_layer_without_a_float64_kernel_is_named_in_the_missing_proofs_reason():
    """TensorFlow's 3-D pooling has no float64 kernel (MaxPool3D: half, bfloat16, float; AvgPool3D: none registered
    on this CPU): the float64 proof is left out, and the reason names the layer and the op, from TensorFlow's
    messages as each Keras writes them, not a traceback's first line."""
    from pipeline.tf_side import float64

    class MaxPooling3D:
        name = "max_pooling3d"

    class AveragePooling3D:
        name = "average_pooling3d"

    model = type("Model", (), {"layers": [MaxPooling3D(), AveragePooling3D()]})()
    keras3 = ("Exception encountered when calling MaxPooling3D.call(). Value for attr 'T' of double is not in the list of "
              "allowed values: half, bfloat16, float ; NodeDef: {{node MaxPool3D}}; [Op:MaxPool3D] name:")
    tf_keras = ('Exception encountered when calling layer "max_pooling3d" (type MaxPooling3D). Value passed to parameter '
                "'input' has DataType float64 not in list of allowed values: float16, bfloat16, float32")
    unregistered = ("No OpKernel was registered to support Op 'AvgPool3D' used by {{node functional_2_1/average_pooling3d_1/AvgPool3D}} "
                    "with these attrs: [ksize=[1, 2, 2, 2, 1]]")
    assert float64.unconverted_layer(model, TypeError(keras3)) == "layer max_pooling3d (MaxPooling3D): TensorFlow's MaxPool3D has no float64 kernel"
    assert float64.unconverted_layer(model, TypeError(tf_keras)) == "layer max_pooling3d (MaxPooling3D): TensorFlow has no float64 kernel for it"
    assert (float64.unconverted_layer(model, ValueError(unregistered))
            == "layer average_pooling3d (AveragePooling3D): TensorFlow's AvgPool3D has no float64 kernel")
    assert float64.unconverted_layer(model, ValueError("something else")) == "ValueError: something else"


# A Keras 2 functional model calling TensorFlow functions on Keras tensors: tf-keras writes each as a TFOpLambda.
_TF_FUNCTIONS = """
    import sys
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    L = keras.layers
    keras.utils.set_random_seed(3)
    x = inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same")(x)
    b = tf.nn.relu6(a)
    c = tf.concat([a, b], axis=-1)
    d = tf.reduce_mean(c, axis=[1, 2])
    e = tf.math.sigmoid(d) * 2.0
    f = tf.reshape(e, (-1, 3, 4))
    g = tf.reduce_max(f, axis=1, keepdims=False)
    h = tf.nn.relu(g) + tf.math.tanh(g)
    model = keras.Model(inp, L.Dense(3, activation="softmax")(tf.squeeze(tf.expand_dims(h, 1), axis=1)))
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(0, 1, (64, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 64), epochs=2, verbose=0)
    model.save(sys.argv[1])
"""


@pytest.mark.zoo  # `make zoo-test`
def test_keras2_tensorflow_functions_convert_verify_and_get_a_native_model(tmp_path):
    """tf.nn.relu6, tf.concat, tf.reduce_mean, tf.math.sigmoid, tf.reshape, tf.reduce_max, tf.expand_dims and
    tf.squeeze in a tf-keras file: each a TFOpLambda the native model writes as its torch operation (those that
    depend on the axes' order in Keras's layout), verified in every pair and in float64 on both paths."""
    model = helpers.build_tiny_model(tmp_path / "tf_functions.h5", _TF_FUNCTIONS)
    text = "".join(helpers.run_stages(model, tmp_path / "out", torch_options=helpers.NO_AOT))
    assert "Verification PASSED" in text and "Float64 proof, second path" in text
    source = (tmp_path / "out" / "tf_functions" / "native" / "model.py").read_text()
    assert "channels_first(channels_last(tf_concat).mean(dim=(1, 2), keepdim=False))" in source
    assert json.loads((tmp_path / "out" / "tf_functions" / "native" / "parity.json").read_text())["passed"]
