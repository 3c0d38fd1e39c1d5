"""Every bad input a user can give, as they give it: `python -m pipeline onnx ...` exits 2 with one line
on stderr, no traceback, and writes nothing into the output folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import helpers
from pipeline.common.atomic import sweep


def _text(tmp_path, tiny_model, tiny_data):
    path = tmp_path / "model.h5"
    path.write_text("this is a text file, not a model\n")
    return path, tiny_data


def _random_bytes(tmp_path, tiny_model, tiny_data):
    path = tmp_path / "model.h5"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path, tiny_data


def _truncated(tmp_path, tiny_model, tiny_data):
    path = tmp_path / "model.h5"
    path.write_bytes(tiny_model.read_bytes()[:4096])
    return path, tiny_data


def _weights_only(tmp_path, tiny_model, tiny_data):
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("dense/kernel:0", data=np.ones((2, 2)))
    return path, tiny_data


def _lambda(tmp_path, tiny_model, tiny_data):
    path = tmp_path / "model.h5"
    config = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "in"}, "inbound_nodes": []},
        {"class_name": "Lambda", "config": {"name": "sneaky", "function": ["payload", None, None]}, "inbound_nodes": [[["in", 0, 0, {}]]]},
    ]}}
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
    return path, tiny_data


def _truncated_keras(tmp_path, tiny_model, tiny_data):
    import zipfile

    whole = tmp_path / "whole.keras"
    with zipfile.ZipFile(whole, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", bytes(4096))
    path = tmp_path / "model.keras"
    path.write_bytes(whole.read_bytes()[:3000])  # a download cut short: the zip directory at the end is gone
    return path, tiny_data


def _missing_model(tmp_path, tiny_model, tiny_data):
    return tmp_path / "model.h5", tiny_data


def _missing_data(tmp_path, tiny_model, tiny_data):
    return tiny_model, tmp_path / "no-data-here"


def _truncated_test_batch(tmp_path, tiny_model, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    batch = data / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    return tiny_model, data


def _wrong_size_test_batch(tmp_path, tiny_model, tiny_data):
    data = tmp_path / "data"
    (data / "cifar-10-batches-bin").mkdir(parents=True)
    (data / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\0" * 5000)
    return tiny_model, data


BAD_INPUTS = {
    "missing model": (_missing_model, "does not exist"),
    "text file named .h5": (_text, "not an HDF5 file"),
    "random bytes named .h5": (_random_bytes, "not an HDF5 file"),
    "truncated .h5": (_truncated, "truncated"),
    "truncated .keras": (_truncated_keras, "not a readable .keras archive"),
    "weights-only .h5": (_weights_only, "save_weights"),
    "Lambda layer": (_lambda, "Lambda"),
    "missing data folder": (_missing_data, "does not exist"),
    "truncated test_batch.bin": (_truncated_test_batch, "truncated"),
    "wrong-size test_batch.bin": (_wrong_size_test_batch, "not a whole number"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_in_one_line_writing_nothing(case, tmp_path, tiny_model, tiny_data):
    make, message = BAD_INPUTS[case]
    model, data = make(tmp_path, tiny_model, tiny_data)
    out = tmp_path / "out"
    completed = helpers.run_cli("onnx", "--model", str(model), "--data", str(data), "--out", str(out))
    helpers.assert_one_line_error(completed, message)
    assert not out.exists()


@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_unwritable_output_folder_exits_2(where, tmp_path, tiny_model, tiny_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out" if where == "under a file" else Path("/proc/pipeline-out")  # /proc refuses even root
    completed = helpers.run_cli("onnx", "--model", str(tiny_model), "--data", str(tiny_data), "--out", str(out))
    helpers.assert_one_line_error(completed, "cannot be written", "--out")
    assert blocker.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_sweep_removes_only_temporary_files(tmp_path):
    (tmp_path / "model.onnx").write_text("good")
    (tmp_path / ".model.k3j2_x9a.tmp.onnx").write_text("half")
    (tmp_path / ".hidden").write_text("mine")
    assert [p.name for p in sweep(tmp_path)] == [".model.k3j2_x9a.tmp.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "model.onnx"]


def test_checksum_mismatch_in_the_mirror_exits_2_keeping_nothing(tmp_path):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    (mirror / "models").mkdir(parents=True)
    (mirror / "models" / "pretrainedResnet.h5").write_bytes(b"tampered")
    completed = helpers.run_cli("fetch", "--mirror", str(mirror), "--data", str(data), "--offline")
    helpers.assert_one_line_error(completed, "SHA-256")
    assert not (data / "models" / "pretrainedResnet.h5").exists()


def test_a_model_pt2_that_is_not_an_archive_exits_2_in_one_line(tmp_path, tiny_data):
    """A `model.pt2` overwritten by something else: one line that says to rebuild it — not torch.export's own
    logged traceback, nor zipfile's."""
    folder = tmp_path / "out" / "pretrainedResnet"
    folder.mkdir(parents=True)
    (folder / "model.pt2").write_text("this is a text file, not a program\n")
    completed = helpers.run_cli("evaluate", "--out", str(tmp_path / "out"), "--data", str(tiny_data))
    helpers.assert_one_line_error(completed, "model.pt2 is not a loadable torch.export program", "rerun `make torch`")
