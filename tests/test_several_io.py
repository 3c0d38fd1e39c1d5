"""Models of several inputs and several outputs (`data.feeds`): an image and its metadata in, a class and a
box out, trained a few hundred steps with our seed and written by Keras 3 (`.keras`; tf-keras's `.h5` beside
it for `make`) — committed (55 kB each) to spare CI a TensorFlow process; made by
`python -m pipeline.tf_side.trained_build tests/data/several_io keras2|keras3 two_heads siamese seq2seq seq2seq_bidirectional`.

The `.keras` goes through the CLI (onnx, torch, verify) and must pass with each output compared on its own;
a fault planted in its box head must fail, naming that output and that layer.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import helpers
from pipeline.common.errors import BadInput
from pipeline.data import checkset
from pipeline.data.feeds import Layout, sample_from_json, sample_json
from pipeline.verifier.backends import Outputs
from pipeline.verifier.compare import compare

SEVERAL_IO = helpers.ROOT / "tests" / "data" / "several_io"
LAYOUT = Layout.of(["image", "meta"], [(16, 16, 3), (5,)])


def test_a_layout_packs_and_unpacks_each_input_whole():
    rng = np.random.default_rng(0)
    image, meta = rng.normal(size=(4, 16, 16, 3)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    packed = LAYOUT.pack([image, meta])
    assert packed.shape == (4, 16 * 16 * 3 + 5)
    back = LAYOUT.unpack(packed)
    assert np.array_equal(back[0], image) and np.array_equal(back[1], meta)
    assert [name for name, _ in LAYOUT.parts()] == ["image", "meta"]
    assert LAYOUT.pack([image.astype(np.float64), meta]).dtype == np.float64  # the float64 proof's outputs stay float64
    assert sample_from_json(sample_json(LAYOUT)) == LAYOUT
    assert sample_from_json(sample_json((32, 32, 3))) == (32, 32, 3)  # one input: the list it always was


def test_one_input_draws_exactly_as_before_and_several_each_their_own():
    single = checkset.random_sets(Layout.of(["input"], [(8,)]))
    assert all(np.array_equal(single[k], v) for k, v in checkset.random_batches((8,)).items())
    several = checkset.random_sets(LAYOUT)
    assert set(several) == set(single)
    image, meta = LAYOUT.unpack(several[checkset.set_name(7, (0, 1))])
    assert image.shape == (7, 16, 16, 3) and meta.shape == (7, 5)
    assert not np.array_equal(image.reshape(7, -1)[:, :5], meta)  # drawn with their own seeds


def test_user_inputs_of_several_inputs_come_as_an_npz_of_one_array_per_input(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, image=np.zeros((3, 16, 16, 3)), meta=np.ones((3, 5)))
    assert checkset.load_user_inputs(path, LAYOUT).shape == (3, 16 * 16 * 3 + 5)
    np.savez(path, image=np.zeros((3, 16, 16, 3)))
    with pytest.raises(BadInput, match="no array for input meta"):
        checkset.load_user_inputs(path, LAYOUT)


def test_several_outputs_are_judged_each_on_its_own_scale_and_a_breach_names_its_output():
    """A class head (probabilities) beside a box head in the hundreds: an error that hides under the box's
    scale in the pooled row must still fail the class head."""
    outputs = Layout.of(["cls", "box"], [(3,), (4,)])
    rng = np.random.default_rng(1)
    cls, box = rng.dirichlet(np.ones(3), 16).astype(np.float32), rng.normal(0, 300, (16, 4)).astype(np.float32)
    keras = {"random": Outputs(outputs.pack([cls, box]), None, outputs)}
    good = compare("fx", {"random": Outputs(outputs.pack([cls, box + 1e-4]))}, "keras", keras)
    assert good.passed and [part["name"] for part in good.outputs] == ["cls", "box"]
    cls_off = cls.copy()
    cls_off[0, 0] += 1e-3  # far below 1e-5 · 300 + 1e-6 (the box's bound), far above the class head's
    bad = compare("fx", {"random": Outputs(outputs.pack([cls_off, box]))}, "keras", keras)
    assert not bad.passed and bad.breach().startswith("output cls: max |Δ| 0.001")
    assert [part["passed"] for part in bad.outputs] == [False, True]


@pytest.fixture(scope="module")
def two_heads_verified(tmp_path_factory):
    """two_heads.keras through onnx, torch (no AOTInductor package: the stage's own tests compile one), native and verify."""
    folder = tmp_path_factory.mktemp("several_io")
    model = folder / "two_heads.keras"
    shutil.copy(SEVERAL_IO / model.name, model)
    return folder / "out", helpers.run_stages(model, folder / "out", torch_options=helpers.NO_AOT)


def test_two_inputs_and_two_outputs_verified_output_by_output(two_heads_verified):
    out, (onnx_text, _, _, verify_text) = two_heads_verified
    assert "inputs image (16, 16, 3), meta (5,)" in onnx_text
    assert "Verification PASSED" in verify_text and "Float64 proof" in verify_text and "— ✓" in verify_text
    proof = json.loads((out / "two_heads" / "verify.json").read_text())["float64_proof"]
    assert 0 < proof["max_abs_diff"] < 1e-12  # float64 against float64: not float32's rounding, and not nothing
    assert "| a | b | cls: max abs Δ (tolerance) | box: max abs Δ (tolerance) |" in verify_text
    assert "The model has several outputs, cls (3,), box (4,)" in verify_text


def test_the_native_model_of_two_inputs_and_two_outputs_trains_like_keras(two_heads_verified):
    """`forward(image, meta)` in Keras's input order, `(cls, box)` in its output order; one training step on both
    heads' losses summed (cross-entropy on the class head's logits, MSE on the box), as Keras sums them."""
    out, (_, _, native_text, _) = two_heads_verified
    native = out / "two_heads" / "native"
    source = (native / "model.py").read_text()
    assert "def forward(self, image, meta):" in source and "LOGITS = ['cls_logits', None]" in source
    parity = json.loads((native / "parity.json").read_text())
    assert parity["passed"] and parity["loss"] == "sparse_categorical_crossentropy + mean_squared_error"
    assert any(row["kind"] == "moving statistic" for row in parity["rows"])  # its BatchNorm's, after the training-mode pass
    summary = json.loads((out / "two_heads" / "verify.json").read_text())
    assert summary["float64_proof_native"]["passed"] and all(p["passed"] for p in summary["pairs"] if "native" in (p["a"], p["b"]))


def test_a_fault_in_one_head_fails_naming_that_output_and_its_layer(two_heads_verified, tmp_path):
    out, _ = two_heads_verified  # its Keras outputs already there: verify starts no TensorFlow for them
    good = out.parent / "two_heads.keras"
    tampered = tmp_path / "tampered" / good.name
    tampered.parent.mkdir()
    helpers.plant_kernel_fault(good, tampered, "box")
    verdict = helpers.assert_fault_named(good, tampered, out, tmp_path / "bad", "box")
    failing = {part["name"] for pair in verdict["pairs"] if not pair["passed"] for part in pair["outputs"] if not part["passed"]}
    assert failing == {"box"}  # the class head, the same weights, passes in every pair


def test_bench_times_a_model_of_several_inputs_and_outputs(two_heads_verified):
    """`make bench` on two inputs and two outputs: every backend fed its inputs by name, all outputs compared."""
    out, _ = two_heads_verified
    model = out.parent / "two_heads.keras"
    completed = helpers.run_cli("bench", "--model", str(model), "--out", str(out), "--batch-sizes", "1,16", "--images", "64",
                                "--repeats", "1", "--threads", "1")
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((out / "two_heads" / "bench.json").read_text())
    assert "image (16, 16, 3), meta (5,)" in result["machine"]["inputs"]
    backends = {row["backend"] for row in result["results"]}
    assert {"onnxruntime", "model.pt2 eager", "keras predict"} <= backends, backends
    assert all(agree["max_abs"] < 1e-4 for agree in result["agreement"].values()), result["agreement"]


def _through_verify(name: str, tmp_path) -> tuple:
    """tests/data/several_io's `name`, copied into `tmp_path`, through onnx, torch (no AOTInductor package), native
    and verify: (the copy, its artifacts folder, verify.json), every stage exiting 0."""
    model = tmp_path / name
    shutil.copy(SEVERAL_IO / name, model)
    out = tmp_path / "out"
    helpers.run_stages(model, out, torch_options=helpers.NO_AOT)
    return model, out / model.stem, json.loads((out / model.stem / "verify.json").read_text())


def _assert_proven(summary: dict, folder) -> None:
    """Every pair with the native backend, both float64 proofs, every layer within its bound, training parity."""
    assert summary["passed"] and "native" in summary["backends"]
    assert summary["float64_proof"]["passed"] and summary["float64_proof_native"]["passed"]
    assert summary["layer_warning"] is None and all(row["passed"] for row in summary["layers"]["layers"])
    assert json.loads((folder / "native" / "parity.json").read_text())["passed"]


def _assert_native_fault_named(model, folder, good: str, bad: str, layer: str) -> None:
    """model.py with `good` made `bad` fails verify, first divergent at `layer` in the native backend."""
    source = (folder / "native" / "model.py").read_text()
    assert good in source, source.split("def forward", 1)[1]
    (folder / "native" / "model.py").write_text(source.replace(good, bad))
    completed = helpers.run_cli("verify", "--model", str(model), "--out", str(folder.parent))
    line = completed.stderr.strip().splitlines()[-1]
    assert completed.returncode == 1 and f"first divergent layer: {layer} in native" in line, line


@pytest.mark.parametrize("suffix", [".h5", pytest.param(".keras", marks=pytest.mark.zoo)])
def test_a_seq2seq_model_gets_a_native_model_whose_decoder_starts_from_the_encoders_states(tmp_path, suffix):
    """An encoder LSTM returning its states (`return_state`), which start the decoder LSTM (`initial_state`): the
    native model unpacks the encoder's three outputs and passes h and c on. Every pair, both float64 proofs,
    every layer and training parity pass; a decoder started from zeros fails, named at the decoder."""
    model, folder, summary = _through_verify(f"seq2seq{suffix}", tmp_path)
    _assert_proven(summary, folder)
    assert [row["keras_layer"] for row in summary["layers"]["layers"] if row["diffs"]][-3:] == ["encoder", "decoder", "next_token"]
    source = (folder / "native" / "model.py").read_text()
    assert "encoder, encoder_h, encoder_c = self.encoder(source_embedding)" in source
    _assert_native_fault_named(model, folder, "self.decoder(target_embedding, initial_state=[encoder_h, encoder_c])",
                               "self.decoder(target_embedding)", "decoder")


@pytest.mark.zoo  # ~70 s each (CI's 30 minutes): `make zoo-test`; CI holds the states' order in tests/test_native_recurrent.py
@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_bidirectional_encoders_four_states_start_the_decoder_in_the_native_model(tmp_path, suffix):
    """A Bidirectional LSTM encoder returning its states — forward h, c, then backward h, c, as Keras returns them —
    joined per kind into the decoder's initial state (published translators' form): every pair, both float64
    proofs, every layer and training parity pass; the decoder given the directions' states in the other order
    fails, named at the join."""
    model, folder, summary = _through_verify(f"seq2seq_bidirectional{suffix}", tmp_path)
    _assert_proven(summary, folder)
    source = (folder / "native" / "model.py").read_text()
    assert "encoder, encoder_forward_h, encoder_forward_c, encoder_backward_h, encoder_backward_c = self.encoder(" in source
    _assert_native_fault_named(model, folder, "torch.cat([encoder_forward_h, encoder_backward_h], dim=1)",
                               "torch.cat([encoder_backward_h, encoder_forward_h], dim=1)", "h")


@pytest.mark.parametrize("suffix", [".h5", pytest.param(".keras", marks=pytest.mark.zoo)])
def test_a_siamese_model_gets_a_native_model_calling_its_shared_modules_once_per_branch(tmp_path, suffix):
    """An encoder nested as a layer and called on both inputs, and a Dense shared by both branches: one module
    each (the encoder's of a class of its own), called once per branch, each call fed its own branch (the (layer, call, tensor) triples of the config;
    tf-keras counts a nested model's calls from 1). Every pair, both float64 proofs and training parity pass, every
    layer compared; the native model with its second branch wired to the first's output fails."""
    model, folder, summary = _through_verify(f"siamese{suffix}", tmp_path)
    _assert_proven(summary, folder)
    assert all(row["diffs"] for row in summary["layers"]["layers"])
    source = (folder / "native" / "model.py").read_text()
    forward = source.split("class Model", 1)[1].split("def forward", 1)[1]
    assert source.count("self.project = ") == 1 and forward.count("self.project(") == 2, forward
    # the encoder: a class of its own, one module called on each branch
    assert "class Encoder(nn.Module):" in source and source.count("self.encoder = Encoder()") == 1
    assert "encoder_call2 = self.encoder(right)" in forward and "project_call2 = self.project(encoder_call2)" in forward
    _assert_native_fault_named(model, folder, "self.project(encoder_call2)", "self.project(encoder)", "concatenate")  # both branches meet there
