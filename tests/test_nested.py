"""A pretrained-style base nested in a Sequential (transfer learning, the most common Keras model there
is), trained a few steps and written by tf-keras (.h5) and Keras 3 (.keras): verified through onnx, torch,
native and verify, its base's layers compared one by one under the user's nested names (`base/conv2d`) in
every backend, the native model's included; a fault planted in the base's second convolution is named there."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

import families
import helpers
from pipeline.common.keras_job import TRAINED_FLAVOURS


@pytest.fixture(scope="module")
def nested_verified(tmp_path_factory):
    """{flavour: (model file, artifacts folder, verify's output)} for nested_transfer (`tf_side.trained_build`; the
    files committed under tests/data/fuzz_bases, spared a training run each in CI)."""
    folder = tmp_path_factory.mktemp("nested")

    def run(flavour: str):
        model = folder / flavour / f"nested_transfer{TRAINED_FLAVOURS[flavour]}"
        model.parent.mkdir()
        shutil.copy(helpers.ROOT / "tests" / "data" / "fuzz_bases" / model.name, model)
        out = folder / flavour / "out"
        return flavour, (model, out, "".join(helpers.run_stages(model, out, torch_options=helpers.NO_AOT)))

    with ThreadPoolExecutor(len(families.FLAVOURS)) as pool:  # one TensorFlow process per flavour (CI has two cores)
        return dict(pool.map(run, families.FLAVOURS))


@pytest.mark.parametrize("flavour", families.FLAVOURS)
def test_the_nested_base_is_compared_layer_by_layer_under_its_nested_names(nested_verified, flavour):
    model, out, text = nested_verified[flavour]
    assert "Verification PASSED" in text
    summary = json.loads((out / model.stem / "verify.json").read_text())
    assert summary["float64_proof"]["passed"], summary["float64_note"]
    rows = {row["keras_layer"]: row for row in summary["layers"]["layers"]}
    inner = [name for name in rows if name.startswith("base/")]
    assert {"base/conv2d_1", "base/re_lu", "base/global_average_pooling2d"} <= set(inner), sorted(rows)
    fused = {name for row in rows.values() if row["diffs"] for name in row["fused"]}
    for name in inner:  # every layer of the base compared, sharing a compared tensor, or folded into a compared group
        assert rows[name]["diffs"] or rows[name]["shared_with"] or name in fused, rows[name]
    assert summary["layers"]["passed"]
    # the native model writes the base as a class of its own, its layers under the same nested names: compared there too
    assert all(any(d["backend"] == "native" for d in rows[name]["diffs"]) for name in inner), [rows[n]["diffs"] for n in inner]
    source = (out / model.stem / "native" / "model.py").read_text()
    assert "class Base(nn.Module):" in source and "self.base = Base()" in source and "base = self.base(" in source
    weights_map = json.loads((out / model.stem / "native" / "weights_map.json").read_text())
    assert weights_map["conv2d_1/kernel"]["key"] == "base.conv2d_1.conv.weight", weights_map["conv2d_1/kernel"]  # state_dict keys nest
    assert summary["float64_proof_native"]["passed"] and any(p["a"] == "native" or p["b"] == "native" for p in summary["pairs"])
    assert "training parity with Keras" in text and "worst relative error" in text


def test_a_fault_in_the_nested_base_is_named_at_its_nested_layer(nested_verified, tmp_path):
    good, out, _ = nested_verified["keras3"]  # its Keras outputs already there: verify starts no TensorFlow for them
    tampered = tmp_path / "tampered" / good.name
    tampered.parent.mkdir()
    helpers.plant_kernel_fault(good, tampered, "conv2d_1")  # the base's second convolution (weights filed by their own names)
    helpers.assert_fault_named(good, tampered, out, tmp_path / "bad", "base/conv2d_1")


def _nested_config() -> dict:
    """A Sequential holding a Functional base of two layers and a Dense, as Keras 3 writes it (what matters here)."""
    base = {"class_name": "Functional", "config": {"name": "base", "input_layers": ["image", 0, 0], "layers": [
        {"class_name": "InputLayer", "config": {"name": "image", "batch_shape": [None, 8, 8, 3]}, "inbound_nodes": []},
        {"class_name": "Conv2D", "config": {"name": "conv"}, "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__",
                                                                                            "config": {"keras_history": ["image", 0, 0]}}]}]},
        {"class_name": "ReLU", "config": {"name": "relu"}, "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__",
                                                                                         "config": {"keras_history": ["conv", 0, 0]}}]}]}]}}
    return {"class_name": "Sequential", "config": {"name": "model", "layers": [
        {"class_name": "InputLayer", "config": {"name": "input", "batch_shape": [None, 8, 8, 3]}}, base,
        {"class_name": "Dense", "config": {"name": "head"}}]}}


def test_a_nested_models_layers_come_before_it_under_nested_names():
    from pipeline.keras_file.graph import layers, with_nested

    flat = with_nested(layers(_nested_config()))
    assert [(layer.name, layer.inbound) for layer in flat] == [
        ("input", ()), ("base/conv", ("input",)), ("base/relu", ("base/conv",)), ("base", ("base/relu",)), ("head", ("base",))]
    # where the TensorFlow process captured none of its layers (a mask, a subclassed model), it stays one row
    assert [layer.name for layer in with_nested(layers(_nested_config()), {"base", "head"})] == ["input", "base", "head"]


def test_a_constant_is_placed_in_the_layout_that_holds_its_shape():
    """A ReLU all zero on the matching inputs equals its NCHW tensor read either way: the layout that needs no
    reshape is the tensor's own (the nested model above failed a correct conversion when NHWC was kept)."""
    import numpy as np

    from pipeline.verifier import placement

    zeros = np.zeros((2, 8, 16, 16))
    assert placement._equal_layout(np.zeros((2, 16, 16, 8)), zeros, 1e-6) == placement.CHANNELS_FIRST
    values = np.random.default_rng(0).normal(size=(2, 16, 16, 8))
    assert placement._equal_layout(values, values, 1e-6) == placement.KERAS
    assert placement._equal_layout(values, np.moveaxis(values, -1, 1), 1e-6) == placement.CHANNELS_FIRST


def test_a_nested_models_row_shares_its_last_layers_tensor_not_a_later_equal_one():
    """ConvNeXt's stem (a nested Sequential) is followed by blocks whose LayerScale (1e-6) makes each residual add
    equal the stem's output: the stem's row must take its last layer's tensor, or every block after it is placed
    too late and left uncompared (the zoo's ConvNeXtTiny rows lost 20 and 121 layers so)."""
    import numpy as np

    from pipeline.keras_file.graph import KerasLayer
    from pipeline.verifier import placement

    layers = [KerasLayer("stem/conv", "Conv2D", {}, ("input",)), KerasLayer("stem", "Sequential", {}, ("stem/conv",)),
              KerasLayer("block_conv", "Conv2D", {}, ("stem",))]
    hits = {"stem/conv": [placement._Hit(5, "conv", placement.KERAS)],
            "stem": [placement._Hit(5, "conv", placement.KERAS), placement._Hit(9, "add", placement.KERAS)],
            "block_conv": [placement._Hit(7, "block", placement.KERAS)]}
    references = {name: np.arange(4.0) for name in hits}
    placed = placement._choose(layers, references, hits)
    assert placed["stem"].position == 5 and placed["block_conv"].position == 7


# The trained nested model loaded by the Keras that wrote it, its base frozen as users freeze it, saved again: a
# legacy .h5 stores a frozen model's weights in another order (non-trainable after trainable), so the file must be
# Keras's own, not an edited config.
_FREEZE = """
    import sys
    if sys.argv[1].endswith(".h5"):
        import tf_keras as keras
    else:
        import keras
    model = keras.models.load_model(sys.argv[1], compile=False)
    model.get_layer("base").trainable = False
    model.save(sys.argv[2])
"""


@pytest.mark.parametrize("suffix", [".keras", pytest.param(".h5", marks=pytest.mark.zoo)])  # the .h5: `make zoo-test`
def test_a_frozen_nested_base_trains_like_keras_and_unfrozen_it_fails(suffix, tmp_path):
    """Transfer learning's usual form: the base frozen (`trainable=False`) under a head that alone trains. Keras
    trains none of the base's weights and keeps its BatchNorms in inference mode in a training step; the native
    model writes `requires_grad_(False)` and `BatchNorm(..., frozen=True)` and trains like it. The same model with
    the base left trainable in torch fails training parity, naming a base weight."""
    from pipeline.common.errors import CheckFailed
    from pipeline.keras_file.model import KerasModel
    from pipeline.native import load
    from pipeline.verifier import training

    frozen = tmp_path / f"frozen{suffix}"
    helpers.run_tf_script(_FREEZE, str(helpers.ROOT / "tests" / "data" / "fuzz_bases" / f"nested_transfer{suffix}"), str(frozen))
    out = tmp_path / "out"
    for stage in ("onnx", "native"):
        completed = helpers.run_cli(stage, "--model", str(frozen), "--out", str(out))
        assert completed.returncode == 0, completed.stderr[-3000:]
    native = out / "frozen" / "native"
    source_text = (native / "model.py").read_text()
    assert "frozen=True)" in source_text and "requires_grad_(False)  # frozen in Keras" in source_text
    assert json.loads((native / "parity.json").read_text())["passed"]
    model, module = load.load(native / "model.py", native / "model.safetensors")
    model.requires_grad_(True)  # the planted fault: the base trains in torch
    with pytest.raises(CheckFailed, match=r"the native model trains base\.[\w.]+, which Keras keeps frozen"):
        training.run(KerasModel.open(frozen), model, module, json.loads((native / "weights_map.json").read_text()), None,
                     tmp_path / "parity.json")


_DOUBLY_NESTED = """
    import sys
    import keras
    L = keras.layers
    inner = keras.Input((8, 8, 3))
    stem = keras.Sequential([L.Conv2D(4, 3, name="c1"), L.ReLU(name="r1")], name="stem")
    base = keras.Model(inner, L.GlobalAveragePooling2D(name="gap")(stem(inner)), name="base")
    image = keras.Input((8, 8, 3))
    keras.Model(image, L.Dense(2, activation="softmax", name="head")(base(image))).save(sys.argv[1])
"""


def test_a_model_nested_in_a_nested_model_is_refused_by_the_native_stage_in_one_line(tmp_path):
    """A Sequential stem inside a base inside the model: the native stage names the base and the stem, exit 2 (it
    ended in `weights kernel missing`)."""
    model = tmp_path / "doubly_nested.keras"
    helpers.run_tf_script(_DOUBLY_NESTED, str(model))
    completed = helpers.run_cli("native", "--model", str(model), "--out", str(tmp_path / "out"))
    assert completed.returncode == 2 and "layer base (Functional): a model nested in a nested model (base/stem)" in completed.stderr, \
        completed.stderr[-2000:]


# `python -m pipeline.tf_side.trained_build tests/data/several_io keras2|keras3 nested_masked` (trained; ~80 kB each).
NESTED_MASKED = helpers.ROOT / "tests" / "data" / "several_io" / "nested_masked"


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_keras_mask_crosses_a_nested_models_boundary_as_a_tensor_of_its_own(suffix):
    """The native source of a model whose nested encoder computes a mask (Embedding mask_zero → LSTM over every step)
    that a GRU outside it takes, and whose nested reader takes an outer Embedding's mask: each mask passed out as a
    second value and in as a parameter (it was dropped at the class's boundary, and Keras 3's mask op counted as a
    second output of the encoder). Read from the file alone: no TensorFlow."""
    from pipeline.keras_file.model import KerasModel
    from pipeline.native import generate

    source = generate.generate(KerasModel.open(NESTED_MASKED.with_suffix(suffix))).source
    model = source.split("class Model(", 1)[1]
    assert "encoder, encoder_mask = self.encoder(tokens)" in model and "self.outer_gru(encoder, encoder_mask)" in model
    assert "reader = self.reader(outer_embedding, outer_embedding_mask)" in model
    assert "def forward(self, vectors, vectors_mask):" in source and "self.inner_gru(vectors, vectors_mask)" in source


@pytest.mark.zoo  # onnx, torch, native and verify on each (~2.5 min): `make zoo-test`
@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_model_with_masks_across_nested_boundaries_is_proven_on_both_paths(suffix, tmp_path):
    model = tmp_path / f"nested_masked{suffix}"
    shutil.copy(NESTED_MASKED.with_suffix(suffix), model)
    helpers.run_stages(model, tmp_path / "out", torch_options=helpers.NO_AOT)
    summary = json.loads((tmp_path / "out" / model.stem / "verify.json").read_text())
    assert summary["passed"] and "native" in summary["backends"] and summary["layer_warning"] is None
    assert summary["float64_proof"]["passed"] and summary["float64_proof_native"]["passed"]
