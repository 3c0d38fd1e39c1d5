"""The damaged copies of the ResNet8 `.h5` a new user tried (issue 28's list): each ends in exit 2 with one
`error:` line of at most 200 characters, whole, naming the layer and the field, with nothing written.
Those refused by Keras, and two of the others, go through the CLI as the user ran them; the rest through
the same checks in this process (`KerasModel.open`, `check_weights`: what the CLI runs before anything
else), as the CLI prints them — a CLI run costs seconds of imports a case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import helpers
from pipeline.common.errors import BadInput
from pipeline.common.messages import ERROR_LINE_CHARS, one_line, was_shortened
from pipeline.keras_file.model import KerasModel


def _entry(config: dict, name: str) -> dict:
    return next(entry for entry in config["config"]["layers"] if entry["config"]["name"] == name)


def _set(name: str, key: str, value):
    return lambda config: _entry(config, name)["config"].__setitem__(key, value)


def _inbound(name: str, source: str):
    def change(config):
        _entry(config, name)["inbound_nodes"][0][0][0] = source
    return change


def _rename(name: str, new: str):
    def change(config):
        entry = _entry(config, name)
        entry["name"] = entry["config"]["name"] = new
    return change


# name → (change to the config, phrases the error line must hold; None: a verdict, exit 0)
CONFIG_DAMAGE = {
    "class_name dropped": (lambda c: _entry(c, "conv2d_6").pop("class_name"), ("layer conv2d_6", "class_name")),
    "class_name unknown": (lambda c: _entry(c, "conv2d_6").__setitem__("class_name", "FancyLayer"),
                           ("layer conv2d_6 (FancyLayer): not a Keras layer class", "Custom layers")),
    "config null": (lambda c: _entry(c, "conv2d_6").__setitem__("config", None), ("conv2d_6", "config null must be a mapping")),
    "number as a word": (_set("conv2d_6", "filters", "thirty-two"), ("layer conv2d_6 (Conv2D): filters", "positive integer")),
    "kernel 99x99": (_set("conv2d_6", "kernel_size", [99, 99]), ("layer conv2d_6 (Conv2D): weight conv2d_6/kernel", "kernel_size")),
    "dangling input": (_inbound("conv2d_6", "no_such_layer"), ("layer conv2d_6 (Conv2D)", "no_such_layer")),
    "self input": (_inbound("conv2d_6", "conv2d_6"), ("layer conv2d_6 (Conv2D)", "own input")),
    "duplicate names": (_rename("conv2d_6", "conv2d_5"), ("conv2d_5", "more than one layer")),
    "no layers": (lambda c: c["config"].__setitem__("layers", []), ("holds no layers",)),
    "strides -1": (_set("conv2d_6", "strides", [-1, -1]), ("layer conv2d_6 (Conv2D): strides [-1, -1] must be positive integers",)),
    "unknown activation": (_set("activation_6", "activation", "fancy_relu"), ("fancy_relu",)),
    "missing output layer": (lambda c: c["config"].__setitem__("output_layers", [["no_such_output", 0, 0]]), ("no_such_output",)),
    "input shape with a 0": (_set("input_1", "batch_input_shape", [None, 32, 0, 3]), ("layer input_1 (InputLayer): batch_input_shape",)),
    "input shape as a string": (_set("input_1", "batch_input_shape", "32x32x3"), ("layer input_1 (InputLayer): batch_input_shape",)),
    "Dense of 10^12 units": (_set("dense", "units", 10**12), ("layer dense (Dense): weight dense/kernel", "units 1000000000000")),
}


def _damaged(model: Path, target: Path, change) -> Path:
    shutil.copyfile(model, target)
    with h5py.File(target, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        change(config)
        handle.attrs["model_config"] = json.dumps(config)
    return target


def _weights(change):
    def damage(model: Path, target: Path) -> Path:
        shutil.copyfile(model, target)
        with h5py.File(target, "r+") as handle:
            change(handle["model_weights"])
        return target
    return damage


def _replace(name: str, make):
    def change(group):
        value = group[name][()]
        del group[name]
        group.create_dataset(name, data=make(value))
    return change


KERNEL = "conv2d_6/conv2d_6/kernel:0"
WEIGHT_DAMAGE = {
    "weight NaN": (_weights(_replace(KERNEL, lambda a: np.full_like(a, np.nan))), ("conv2d_6/kernel", "NaN")),
    "weight of the wrong shape": (_weights(_replace(KERNEL, lambda a: a[..., :3])), ("conv2d_6/kernel", "shape")),
    "weight as text": (_weights(_replace(KERNEL, lambda a: np.full(a.shape, b"x"))), ("conv2d_6/kernel", "not numbers")),
    "weight removed": (_weights(lambda group: group.__delitem__(KERNEL)), ("no weight conv2d_6/kernel",)),
}


def _run(model: Path, data: Path, tmp_path: Path):
    out = tmp_path / "out"
    return helpers.run_cli("onnx", "--model", str(model), "--data", str(data), "--out", str(out)), out


# through the CLI: Keras's own refusals, and two of ours
THROUGH_CLI = {"class_name unknown", "unknown activation", "strides -1", "weight NaN"}


def _assert_refused(model: Path, data: Path, tmp_path: Path, case: str, phrases) -> None:
    if case in THROUGH_CLI:
        completed, out = _run(model, data, tmp_path)
        line = helpers.assert_one_line_error(completed, *phrases)
        assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True
    else:
        with pytest.raises(BadInput) as raised:
            KerasModel.open(model).check_weights()
        line = one_line(f"error: {raised.value}")
        assert all(phrase in line for phrase in phrases), (phrases, line)
    assert len(line) <= ERROR_LINE_CHARS and not was_shortened(line), line


@pytest.mark.parametrize("case", list(CONFIG_DAMAGE))
def test_a_damaged_config_ends_in_one_whole_line(real_paths, tmp_path, case):
    change, phrases = CONFIG_DAMAGE[case]
    model = _damaged(real_paths[0], tmp_path / "pretrainedResnet.h5", change)
    _assert_refused(model, real_paths[1], tmp_path, case, phrases)


@pytest.mark.parametrize("case", list(WEIGHT_DAMAGE))
def test_damaged_weights_end_in_one_whole_line(real_paths, tmp_path, case):
    damage, phrases = WEIGHT_DAMAGE[case]
    model = damage(real_paths[0], tmp_path / "pretrainedResnet.h5")
    _assert_refused(model, real_paths[1], tmp_path, case, phrases)
