"""Damaged model files, as a user's disk or editor leaves them: each found before Keras sees it, in one
line of at most 200 characters naming the layer and the field — and never a hang."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import helpers
from pipeline.common.messages import ERROR_LINE_CHARS, SHORTENED, one_line
from pipeline.common.errors import BadInput
from pipeline.keras_file import checks
from pipeline.runtimes import keras as keras_runtime
from pipeline.keras_file.graph import layers as graph_layers


def _config(tiny_model: Path) -> dict:
    with h5py.File(tiny_model, "r") as handle:
        return json.loads(handle.attrs["model_config"])


def _layer(config: dict, name: str) -> dict:
    return next(entry for entry in config["config"]["layers"] if entry["config"]["name"] == name)


def _set_inbound(entry: dict, source: str) -> None:
    """Point the layer's inbound node (Keras 3's keras_history, or Keras 2's [name, i, j, kw]) at `source`."""

    def walk(item):
        if isinstance(item, dict):
            history = item.get("config", {}).get("keras_history")
            if history:
                history[0] = source
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                item[0] = source
            for value in item:
                walk(value)

    walk(entry["inbound_nodes"])


def _self_input(config):
    _set_inbound(_layer(config, "conv2d_1"), "conv2d_1")


def _dangling(config):
    _set_inbound(_layer(config, "conv2d_1"), "no_such_layer")


def _cycle(config):
    _set_inbound(_layer(config, "conv2d"), "activation")


def _duplicate(config):
    entry = _layer(config, "conv2d_1")
    entry["config"]["name"] = entry["name"] = "conv2d"


def _no_outputs(config):
    config["config"]["output_layers"] = []


def _negative_strides(config):
    _layer(config, "conv2d_1")["config"]["strides"] = [-1, -1]


DAMAGE = {
    "self input": (_self_input, "layer conv2d_1 (Conv2D): inbound_nodes lists the layer as its own input"),
    "dangling input": (_dangling, "layer conv2d_1 (Conv2D): inbound_nodes names 'no_such_layer'"),
    "cycle": (_cycle, "loop back"),
    "duplicate name": (_duplicate, "name used by more than one layer"),
    "no output layers": (_no_outputs, "output_layers is empty"),
    "negative strides": (_negative_strides, "layer conv2d_1 (Conv2D): strides [-1, -1] must be positive"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_graph_is_named(tiny_model, case):
    damage, expected = DAMAGE[case]
    config = _config(tiny_model)
    damage(config)
    with pytest.raises(BadInput, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        checks.check_entries(config)
        checks.check_graph(config, graph_layers(config))


def test_self_input_through_the_cli_exits_2_within_seconds(tiny_model, tiny_data, tmp_path):
    """Keras itself loops forever on this file (seen: killed after 300 s, twice)."""
    model = tmp_path / "model.h5"
    shutil.copy(tiny_model, model)
    config = _config(model)
    _self_input(config)
    with h5py.File(model, "r+") as handle:
        handle.attrs["model_config"] = json.dumps(config)
    started = time.monotonic()
    completed = helpers.run_cli("onnx", "--model", str(model), "--data", str(tiny_data), "--out", str(tmp_path / "out"))
    assert time.monotonic() - started < 30
    helpers.assert_one_line_error(completed, "conv2d_1", "own input")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weight_exits_2_naming_it(tiny_model, tiny_data, tmp_path, value):
    model = tmp_path / "model.h5"
    shutil.copy(tiny_model, model)
    with h5py.File(model, "r+") as handle:
        found = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and "conv2d_1" in name and "kernel" in name:
                found.append(name)

        handle["model_weights"].visititems(visit)
        data = handle["model_weights"][found[0]]
        changed = data[()]
        changed.flat[3] = value
        data[...] = changed
    completed = helpers.run_cli("onnx", "--model", str(model), "--data", str(tiny_data), "--out", str(tmp_path / "out"))
    helpers.assert_one_line_error(completed, "conv2d_1/kernel", "NaN or infinite")
    assert not (tmp_path / "out").exists()


def test_wrong_weight_shape_is_named(tiny_model):
    from pipeline.keras_file.model import KerasModel

    model = KerasModel.open(tiny_model)
    weights = {name: dict(tensors) for name, tensors in model.weights.items()}
    weights["dense"]["bias"] = np.zeros(11, np.float32)
    with pytest.raises(BadInput, match=r"layer dense \(Dense\): weight dense/bias has shape \(11,\), but its config \(units 10\) implies 10"):
        checks.check_weights(model.layers, weights)


def test_worker_time_limit_stops_a_hang(tiny_model, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_WORKER_TIMEOUT", "1")  # TensorFlow cannot even start in 1 s: stands for a hang
    started = time.monotonic()
    completed = helpers.run_cli("onnx", "--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path / "out"))
    assert time.monotonic() - started < 30
    helpers.assert_one_line_error(completed, "did not finish", "PIPELINE_WORKER_TIMEOUT")
    assert not (tmp_path / "out" / "tiny" / "model.onnx").exists()


def test_worker_memory_cap_ends_in_one_line(tiny_model, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_WORKER_MEMORY_GB", "0.3")  # TensorFlow's start alone takes more: stands for a runaway allocation
    completed = helpers.run_cli("onnx", "--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path / "out"))
    helpers.assert_one_line_error(completed, "ran out of its memory cap (0.3 GiB)", "PIPELINE_WORKER_MEMORY_GB")
    assert not (tmp_path / "out" / "tiny").exists()


def test_memory_cap_counts_what_is_touched_not_what_is_reserved(tmp_path):
    """TensorFlow reserves far more address space than it uses (docs/memory.md): a cap on reservations
    refused models that fit. 2 GiB reserved and never touched stays under a 1 GiB cap; 1.5 GiB written does not."""
    reserve = "import mmap, time; m = mmap.mmap(-1, 2 * 2**30, flags=mmap.MAP_PRIVATE); m[:1] = b'x'; time.sleep(0.5)"
    touch = "import time; b = bytearray(3 * 2**29); time.sleep(5)"
    completed, ended = keras_runtime._run_watched([sys.executable, "-c", reserve], tmp_path / "a.txt", 60, 2**30)
    assert (ended, completed.returncode) == ("exit", 0)
    started = time.monotonic()
    completed, ended = keras_runtime._run_watched([sys.executable, "-c", touch], tmp_path / "b.txt", 60, 2**30)
    assert ended == "memory" and completed.returncode != 0 and time.monotonic() - started < 5


def test_error_line_is_short_and_plain_and_keeps_its_end():
    line = one_line("error: Keras said \x1b[1m\x1b[31mboom\x1b[0m\n" + "config dump " * 200 + " — fix the layer")
    assert len(line) <= ERROR_LINE_CHARS and "\x1b" not in line and "\n" not in line
    assert line.startswith(f"error: {SHORTENED}") and line.endswith("fix the layer")  # the cause and what to do


def test_a_long_line_loses_the_library_detail_in_parentheses_first():
    message = f"error: layer attn (AttentionLayer): Keras cannot load it (Keras said: {'x ' * 150}) — see README"
    assert one_line(message) == "error: layer attn (AttentionLayer): Keras cannot load it — see README"


def test_hdf5_extension_is_the_legacy_format(tiny_model, tiny_data, tmp_path):
    model = tmp_path / "tiny.hdf5"
    shutil.copy(tiny_model, model)
    completed = helpers.run_cli("onnx", "--model", str(model), "--data", str(tiny_data), "--out", str(tmp_path / "out"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (tmp_path / "out" / "tiny" / "model.onnx").is_file()
