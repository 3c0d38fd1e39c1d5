"""A stage killed midway (SIGKILL: the out-of-memory killer's way, no cleanup) leaves nothing Make takes
for done: `make` run again runs that stage again, and it completes.

Each stage is started by `make`, in a session of its own, and killed — with every process it started,
TensorFlow's included — once its half-written outputs exist: files in its staging folder beside the
artifacts (`atomic.staged_files`, `atomic.atomic_dir`), or, for verify, which writes only at its end, its
staging folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import helpers
from pipeline.common.paths import ModelPaths

KILL_WAIT_S = 600  # the longest a stage may take to reach its half-written state on 2 busy cores


def _start(target: str, variables: list[str]) -> subprocess.Popen:
    return subprocess.Popen(["make", "--no-print-directory", target, *variables], cwd=helpers.ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _staged_file(folder: Path, pattern: str) -> bool:
    return any(path.is_file() for staging in folder.glob(pattern) for path in staging.iterdir()) if folder.is_dir() else False


def _kill_when(process: subprocess.Popen, ready) -> None:
    """SIGKILL `process`'s whole session once `ready()` holds; fail if it ends first."""
    deadline = time.monotonic() + KILL_WAIT_S
    while not ready():
        assert process.poll() is None, f"the stage ended before it could be killed midway: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "the stage never reached its half-written state"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=helpers.ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def setting(tiny_model, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("kills")
    return [f"MODEL={tiny_model}", f"OUT={out}", f"DATA={tiny_data}"], ModelPaths.for_model(tiny_model, out)


# (make target, the file Make takes for done, when to kill). In this order: each stage needs the ones before.
STAGES = {
    "onnx": ("onnx", lambda p: p.onnx, lambda p: _staged_file(p.dir, ".stage.*.tmp")),
    "torch": ("torch", lambda p: p.pt2, lambda p: _staged_file(p.dir, ".stage.*.tmp")),
    "native": ("native", lambda p: p.native_source, lambda p: _staged_file(p.dir, ".native.*.tmp")),
    # verify writes its records at its end: killed once its staging folder exists, while it compares
    "verify": ("verify", lambda p: p.verify_json, lambda p: p.dir.is_dir() and any(p.dir.glob(".stage.*.tmp"))),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_killed_midway_runs_again(setting, stage):
    variables, paths = setting
    target, done, ready = STAGES[stage]
    process = _start(target, variables)
    _kill_when(process, lambda: ready(paths))
    assert not done(paths).exists(), f"the killed {stage} stage left {done(paths).name}"
    assert _make("-q", target, *variables).returncode != 0, f"make takes the killed {stage} stage for done"
    rerun = _make(target, *variables)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert done(paths).is_file()
    assert not list(paths.dir.glob(".*.tmp")), "a staging folder was left behind"
