"""The Makefile: real file targets (nothing rebuilt when nothing changed), and the native model never
blocks a verdict — a model without one is verified all the same by `make verify`, while `make native`
alone fails on its one line."""

from __future__ import annotations

import json
import subprocess

import pytest

import helpers
from pipeline.common.paths import ModelPaths

NOT_NATIVE = f"layer gaussian_noise: {helpers.NO_NATIVE_LAYER} has no native PyTorch equivalent"


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=helpers.ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def made(no_native_model, tiny_data, tmp_path_factory):
    """`make verify` on the model without a native model: (its run, the make variables, its ModelPaths)."""
    out = tmp_path_factory.mktemp("make_out")
    variables = [f"MODEL={no_native_model}", f"OUT={out}", f"DATA={tiny_data}"]
    return _make("verify", *variables), variables, ModelPaths.for_model(no_native_model, out)


def test_verify_reaches_a_verdict_without_the_native_model(made):
    completed, _, paths = made
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"native: not built — {NOT_NATIVE}" in completed.stderr  # the native stage's one line (--keep-going)
    summary = json.loads(paths.verify_json.read_text())
    assert summary["passed"] and {"onnxruntime", "fx", "torch"} <= set(summary["backends"]) and "native" not in summary["backends"]
    assert summary["not_applicable"]["native"].startswith(f"not built — {NOT_NATIVE}")
    assert f"native: not built — {NOT_NATIVE}" in paths.report_md.read_text()
    assert not paths.native_dir.exists()


def test_nothing_is_rebuilt_when_nothing_changed(made):
    _, variables, _ = made
    assert _make("-q", "verify", *variables).returncode == 0


def test_make_native_alone_fails_on_its_one_line(made):
    _, variables, _ = made
    completed = _make("native", *variables)
    assert completed.returncode == 2
    said = [line for line in completed.stderr.splitlines() if not line.startswith("make")]  # make adds its own "*** Error 2"
    assert len(said) == 1 and said[0].startswith(f"error: {NOT_NATIVE}"), completed.stderr
    assert _make("-q", "verify", *variables).returncode == 0  # failing as recorded leaves verify up to date


@pytest.mark.parametrize("target", ["all", "test"])
def test_all_and_test_install_first_when_the_install_is_missing_or_stale(target):
    """`make all` and `make test` on a fresh clone: the install runs first (here simulated by a newer lock file,
    dry run), then the target's own work."""
    completed = _make("--dry-run", "-W", "requirements.lock", target)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    install = next(i for i, line in enumerate(lines) if "pip install" in line and "requirements.lock" in line)
    work = next(i for i, line in enumerate(lines) if "-m pipeline" in line or "-m pytest" in line)
    assert install < work, lines
