"""Sequence models as users bring them, through the CLI as a user runs it (`onnx`, `torch`, `verify`):
trained a few hundred real steps with our seed on toy tasks whose loss falls
(`tf_side.trained_build.SEQUENCES`). Each must end in "Verification PASSED" with the float64 proof.

CI takes two: Embedding + LSTM written by tf-keras (`.h5`, tf2onnx's ONNX LSTM: the fused torch
layer) and a masked Embedding + GRU of any input length written by Keras 3 (`.keras`, a `Loop`:
the body converted and unrolled; the open length checked and converted at 32). `make sequences`
runs every kind in both formats. And a fault planted in the LSTM's kernel is named at that layer.
"""

from __future__ import annotations

import shutil

import h5py
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
    """recurrent_text.h5 through onnx, torch (with the AOTInductor package) and verify: (model, out, verify's text)."""
    folder = tmp_path_factory.mktemp("lstm")
    model = folder / "recurrent_text.h5"
    shutil.copy(COMMITTED_BASES / model.name, model)
    return model, folder / "out", _through_verify(model, folder / "out")


def _through_verify(model, out, *torch_options: str, stages=("onnx", "torch", "verify")) -> str:
    for stage, extra in ((stage, torch_options if stage == "torch" else ()) for stage in stages):
        completed = helpers.run_cli(stage, "--model", str(model), "--out", str(out), *extra)
        assert completed.returncode == 0, f"{stage}: {completed.stderr[-3000:]}"
    return completed.stdout + completed.stderr


def test_embedding_lstm_h5_verified_with_the_float64_proof(lstm_verified):
    _, out, text = lstm_verified
    assert "Verification PASSED" in text and "Float64 proof" in text and "— ✓" in text
    assert "over [0, 49]" in text  # token ids of its Embedding, not random floats
    assert (out / "recurrent_text" / "model_aoti.pt2").is_file()


def test_masked_gru_keras_loop_of_open_length_verified_with_the_float64_proof(masked_gru, tmp_path):
    out = tmp_path / "out"
    converted = helpers.run_cli("onnx", "--model", str(masked_gru), "--out", str(out))
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert "leaves input dimension(s) 1 open; checked and converted at length 32" in converted.stderr
    text = _through_verify(masked_gru, out, "--no-aot", stages=("torch", "verify"))
    assert "Verification PASSED" in text and "Float64 proof" in text and "— ✓" in text


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
    assert helpers.run_cli("onnx", "--model", str(tampered), "--out", str(tmp_path / "bad")).returncode == 0
    completed = helpers.run_cli("verify", "--model", str(good), "--onnx", str(tmp_path / "bad" / "recurrent_text" / "model.onnx"),
                                "--out", str(out))
    assert completed.returncode == 1, completed.stderr[-2000:]
    line = completed.stderr.strip().splitlines()[-1]
    assert line.startswith("error: verification failed — first divergent layer: lstm "), line


def _datasets(group) -> list[str]:
    names = []
    group.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names
