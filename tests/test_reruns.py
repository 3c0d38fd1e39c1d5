"""Reruns: two conversions give the same bytes, and an interrupted rerun leaves the last good
artifact as it was, with no temporary files behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import helpers
from pipeline.runtimes.pt2 import load_program
from pipeline.stages import to_onnx, to_torch


def _debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_two_onnx_runs_give_identical_bytes(tiny_converted, tiny_data, tmp_path):
    model, _, paths, _, _ = tiny_converted
    again = to_onnx.run(model, tmp_path, tiny_data)
    assert again.onnx.read_bytes() == paths.onnx.read_bytes()


def test_two_torch_runs_give_identical_weights(tiny_converted, tmp_path):
    _, _, paths, _, first = tiny_converted
    second = to_torch.run(paths.onnx, tmp_path)
    for a, b in ((first.pt2, second.pt2), (first.pt2_opt, second.pt2_opt)):
        state_a, state_b = (load_program(p).state_dict for p in (a, b))
        assert state_a.keys() == state_b.keys() and state_a
        for name in state_a:
            assert torch.equal(state_a[name], state_b[name]), name


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_onnx_rerun_leaves_model_onnx_intact(sig, tiny_converted, tiny_data, tmp_path):
    model, _, paths, _, _ = tiny_converted
    folder = tmp_path / paths.dir.name
    shutil.copytree(paths.dir, folder)
    before = (folder / "model.onnx").read_bytes()
    command = [sys.executable, "-m", "pipeline", "onnx", "--model", str(model), "--data", str(tiny_data), "--out", str(tmp_path)]
    # Its own process group, as a terminal gives a command: the signal reaches the stage and its TensorFlow worker.
    # Ctrl-C's default action restored in the child: a runner started in the background (`cmd &`) hands its
    # children SIGINT ignored, and Python then never raises KeyboardInterrupt — the stage would not stop.
    process = subprocess.Popen(command, cwd=helpers.ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while not helpers.worker_running(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the stage ended before it could be interrupted"
    time.sleep(1.0)  # TensorFlow is loading the model: well inside the stage
    os.killpg(process.pid, sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    if sig == signal.SIGINT:
        assert "Traceback" not in stderr and "interrupted" in stderr, stderr
    assert (folder / "model.onnx").read_bytes() == before
    if sig == signal.SIGINT:
        assert _debris(folder) == []
    # A rerun to the end: the same bytes again (deterministic), and whatever a SIGKILL left is swept away.
    (folder / ".model.k3j2_x9a.tmp.onnx").write_bytes(b"half-written")
    rerun = subprocess.run(command, cwd=helpers.ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "removed .model.k3j2_x9a.tmp.onnx" in rerun.stderr
    assert (folder / "model.onnx").read_bytes() == before and _debris(folder) == []
