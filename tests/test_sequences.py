"""Sequence models as users bring them, through the CLI as a user runs it (`onnx`, `torch`, `verify`):
trained a few hundred real steps with our seed on toy tasks whose loss falls
(`tf_side.trained_build.SEQUENCES`). Each must end in "Verification PASSED" with the float64 proof.

CI takes two: Embedding + LSTM written by tf-keras (`.h5`, tf2onnx's ONNX LSTM: the fused torch
layer; its native model too, training like Keras) and a masked Embedding + GRU of any input length written by Keras 3 (`.keras`, a `Loop`:
the body converted and unrolled; the open length checked and converted at 32). `make sequences`
runs every kind in both formats. And a fault planted in the LSTM's kernel is named at that layer.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

import helpers

COMMITTED_BASES = helpers.ROOT / "tests" / "data" / "fuzz_bases"  # recurrent_text.h5: Embedding(50, 8) → LSTM(12) → Dense
# Committed (45 kB) to spare CI a TensorFlow process; made by
# `python -m pipeline.tf_side.trained_build tests/data/sequences keras3 text_gru_masked`.
MASKED_GRU = helpers.ROOT / "tests" / "data" / "sequences" / "text_gru_masked.keras"


@pytest.fixture(scope="module")
def masked_gru(tmp_path_factory):
    model = tmp_path_factory.mktemp("sequences") / MASKED_GRU.name
    shutil.copy(MASKED_GRU, model)
    return model


@pytest.fixture(scope="module")
def lstm_verified(tmp_path_factory):
    """recurrent_text.h5 through onnx, torch (with the AOTInductor package), native and verify: (model, out, the
    native and verify stages' text)."""
    folder = tmp_path_factory.mktemp("lstm")
    model = folder / "recurrent_text.h5"
    shutil.copy(COMMITTED_BASES / model.name, model)
    return model, folder / "out", _through_verify(model, folder / "out", stages=("onnx", "torch", "native", "verify"))


def _through_verify(model, out, *torch_options: str, stages=("onnx", "torch", "verify")) -> str:
    """`stages` run on `model` into `out`; what the last two said."""
    said = []
    for stage, extra in ((stage, torch_options if stage == "torch" else ()) for stage in stages):
        completed = helpers.run_cli(stage, "--model", str(model), "--out", str(out), *extra)
        assert completed.returncode == 0, f"{stage}: {completed.stderr[-3000:]}"
        said.append(completed.stdout + completed.stderr)
    return "".join(said[-2:])


def test_embedding_lstm_h5_verified_with_the_float64_proof(lstm_verified):
    _, out, text = lstm_verified
    assert "Verification PASSED" in text and "Float64 proof" in text and "— ✓" in text
    assert "over [0, 49]" in text  # token ids of its Embedding, not random floats
    assert (out / "recurrent_text" / "model_aoti.pt2").is_file()


def test_embedding_lstm_native_model_trains_like_keras_and_a_swapped_gate_fails_it(lstm_verified):
    """The native model of Embedding + LSTM: torch's fused `nn.LSTM`, in every pair of verify and in its float64
    proof, and one training step equal to Keras's. With two of its gates swapped (i and f: the order a wrong
    mapping from Keras's i, f, c, o would give), the same step fails."""
    import torch

    from pipeline.keras_file.model import KerasModel
    from pipeline.native import load
    from pipeline.verifier import training

    model_path, out, text = lstm_verified
    assert "training parity with Keras" in text and "KerasLSTM" in (out / "recurrent_text" / "native" / "model.py").read_text()
    summary = json.loads((out / "recurrent_text" / "verify.json").read_text())
    assert summary["float64_proof_native"]["passed"] and all(p["passed"] for p in summary["pairs"] if "native" in (p["a"], p["b"]))
    native = out / "recurrent_text" / "native"
    model, source = load.load(native / "model.py", native / "model.safetensors")
    weights_map = json.loads((native / "weights_map.json").read_text())
    units = model.lstm.lstm.hidden_size
    with torch.no_grad():
        for weight in (model.lstm.lstm.weight_ih_l0, model.lstm.lstm.weight_hh_l0):
            weight[:2 * units] = torch.cat([weight[units:2 * units], weight[:units]]).clone()
    report = training.run(KerasModel.open(model_path), model, source, weights_map, None, out / "swapped_parity.json")
    assert not report.passed and any(row.weight.startswith("lstm/") and not row.passed for row in report.rows)


def test_embedding_lstm_keras3_file_native_model_trains_like_keras(tmp_path):
    """The same model written by Keras 3: its LSTM's weights are its cell's in the `.keras` file
    (`layers/lstm/cell/vars/i`), its Embedding's `embeddings`; Keras's step on token ids of dtype int32."""
    model = tmp_path / "recurrent_text.keras"
    shutil.copy(COMMITTED_BASES / model.name, model)
    text = _through_verify(model, tmp_path / "out", stages=("onnx", "native"))
    assert "training parity with Keras" in text and "worst relative error" in text
    weights_map = json.loads((tmp_path / "out" / "recurrent_text" / "native" / "weights_map.json").read_text())
    assert {"embedding/embeddings", "lstm/kernel", "lstm/recurrent_kernel", "lstm/bias"} <= set(weights_map)


def test_masked_gru_keras_loop_of_open_length_verified_with_the_float64_proof(masked_gru, tmp_path):
    out = tmp_path / "out"
    converted = helpers.run_cli("onnx", "--model", str(masked_gru), "--out", str(out))
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert "leaves input dimension(s) 1 open; checked and converted at length 32" in converted.stderr
    text = _through_verify(masked_gru, out, "--no-aot", stages=("torch", "verify"))
    assert "Verification PASSED" in text and "Float64 proof" in text and "— ✓" in text


def _as_stateful_cudnn_lstm(source, target) -> None:
    """A copy of the LSTM `.h5` `source` as Keras 2.2 wrote a stateful CuDNNLSTM of fixed batch size: the
    class and its config (`stateful`, the batch of 32 in the input's `batch_input_shape`), each gate's input
    kernel in cuDNN's (Fortran) order, recurrent kernels transposed, and two biases that only sum to the
    LSTM's — written here in numpy, apart from the Keras code the pipeline relies on to read them back."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        first = config["config"]["layers"][0]
        first["config"]["batch_input_shape"] = [32, *first["config"]["batch_input_shape"][1:]]
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "LSTM")
        layer["class_name"] = "CuDNNLSTM"
        layer["config"]["stateful"] = True
        for key in ("activation", "recurrent_activation", "dropout", "recurrent_dropout", "implementation", "unroll", "time_major", "use_bias"):
            layer["config"].pop(key, None)
        handle.attrs["model_config"] = json.dumps(config)
        group = handle["model_weights/lstm/lstm/lstm_cell"]
        kernel, recurrent, bias = (group[name][()] for name in ("kernel:0", "recurrent_kernel:0", "bias:0"))
        split = np.random.default_rng(0).normal(0, 0.1, bias.shape).astype(np.float32)
        cudnn = {"kernel:0": np.hstack([k.T.reshape(k.shape, order="C") for k in np.hsplit(kernel, 4)]),
                 "recurrent_kernel:0": np.hstack([k.T for k in np.hsplit(recurrent, 4)]),
                 "bias:0": np.concatenate([bias - split, split])}
        for name, value in cudnn.items():
            del group[name]
            group.create_dataset(name, data=value)


def test_a_keras2_stateful_cudnn_lstm_of_fixed_batch_renamed_keras_is_the_lstm_it_equals(lstm_verified, tmp_path):
    """The files users have, as they are, in one: tf2onnx has no op for CuDNNLSTM (TensorFlow's CudnnRNNV3), a
    stateful model of fixed batch 32 fails Keras's own predict at batch 7, and the legacy HDF5 file is named
    `.keras`. It is read as the `.h5` it is, its LSTM rebuilt stateless with an open batch — checked at
    batches 1, 7 and 256 — and computes what the LSTM it was made from computes, from zero state."""
    _, out, _ = lstm_verified
    model = tmp_path / "cudnn_lstm.keras"
    _as_stateful_cudnn_lstm(COMMITTED_BASES / "recurrent_text.h5", model)
    converted = helpers.run_cli("onnx", "--model", str(model), "--out", str(tmp_path / "out"))
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert "cudnn_lstm.keras is a legacy HDF5 file under a .keras name; read as the .h5 it is" in converted.stderr
    assert "saved with a batch size of 32 and stateful recurrent layers; converted and checked with any batch size" in converted.stderr
    with np.load(tmp_path / "out" / "cudnn_lstm" / "keras_reference.npz") as rebuilt, \
            np.load(out / "recurrent_text" / "keras_reference.npz") as original:
        sets = [key for key in original.files if key.endswith("/probs")]
        assert sets and all(np.array_equal(rebuilt[k.replace("probs", "inputs")], original[k.replace("probs", "inputs")]) for k in sets)
        assert max(float(np.abs(rebuilt[k] - original[k]).max()) for k in sets) < 1e-6  # the biases' split: float32 rounding


def test_a_fault_in_the_lstm_kernel_is_named_at_its_layer(lstm_verified, tmp_path):
    good, out, _ = lstm_verified  # its Keras outputs already there: verify starts no TensorFlow for them
    tampered = tmp_path / "tampered" / good.name
    tampered.parent.mkdir()
    shutil.copy(good, tampered)
    with h5py.File(tampered, "r+") as handle:
        kernel = next(handle["model_weights/lstm"][name] for name in _datasets(handle["model_weights/lstm"]) if name.endswith("/kernel:0"))
        value = kernel[()]
        value.flat[value.size // 2] += 2e-2
        kernel[...] = value
    helpers.assert_fault_named(good, tampered, out, tmp_path / "bad", "lstm")


def _datasets(group) -> list[str]:
    names = []
    group.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names
