"""The package's architecture, read from its code: imports run one way down the layers, no cycle,
TensorFlow stays behind its fence, only `__main__` imports the command line — each rule shown to fail on a planted breach — and
a non-editable install holds and imports every module."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from pipeline.common.import_graph import ImportGraph


def test_package_keeps_every_rule():
    assert ImportGraph(helpers.ROOT).breaches() == []


def _planted(tmp_path: Path, module: str, code: str) -> ImportGraph:
    """A copy of the package with `code` appended to `module` (a path under pipeline/), read as a graph."""
    shutil.copytree(helpers.ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "pipeline" / module
    target.write_text(target.read_text() + "\n\n" + code + "\n")
    return ImportGraph(tmp_path)


PLANTED = {
    "cycle through a function-level import": (
        "common/paths.py", "def _late():\n    from pipeline.stages import verify  # noqa", "import cycle: "),
    "TensorFlow imported on the torch side": (
        "verifier/compare.py", "def _late():\n    import tensorflow  # noqa", "imports tensorflow outside pipeline.tf_side"),
    "torch side importing the TensorFlow process": (
        "stages/verify.py", "from pipeline.tf_side import outputs  # noqa", "which is the TensorFlow side"),
    "TensorFlow process reaching torch": (
        "tf_side/outputs.py", "def _late():\n    from pipeline.verifier import backends  # noqa", "must not share a process with TensorFlow"),
    "command line imported by a stage": (
        "stages/report.py", "def _late():\n    from pipeline import cli  # noqa", "imports the command line"),
    "a runtime importing a stage": (
        "runtimes/ort.py", "def _late():\n    from pipeline.stages import report  # noqa", "a layer above it"),
    "torch reached through a package __init__ the TensorFlow process runs": (
        "converters/__init__.py", "from pipeline.converters import to_fx  # noqa", "must not share a process with TensorFlow"),
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_planted_breach_is_found(tmp_path, case):
    module, code, expected = PLANTED[case]
    breaches = _planted(tmp_path, module, code).breaches()
    assert any(expected in line for line in breaches), breaches


def test_stage_prerequisites_are_what_the_stage_reaches():
    variables = dict(line.split(" := ") for line in ImportGraph(helpers.ROOT).make_variables().splitlines())
    files = {name.removeprefix("CODE_"): set(value.split()) for name, value in variables.items()}
    assert "pipeline/tf_side/to_onnx.py" in files["onnx"]  # launched, not imported: still a prerequisite
    assert "pipeline/tf_side/to_onnx.py" not in files["torch"]  # the torch stage starts no TensorFlow process
    assert "pipeline/keras_file/weights.py" in files["verify"]  # the layer map and the hand-written model read weights
    assert "pipeline/verifier/placement.py" not in files["torch"]


def test_non_editable_install_imports_every_module(tmp_path):
    """`pip install .` into a temporary target (from a copy: setuptools writes build/ beside the sources)."""
    source, target = tmp_path / "src", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(helpers.ROOT / name, source / name)
    shutil.copytree(helpers.ROOT / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(source)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    installed = {p.relative_to(target).as_posix() for p in (target / "pipeline").rglob("*.py")}
    assert installed == {p.relative_to(helpers.ROOT).as_posix() for p in (helpers.ROOT / "pipeline").rglob("*.py")}
    graph = ImportGraph(target)
    torch_side = sorted(m for m in graph.files if not m.startswith("pipeline.tf_side") and m != "pipeline.__main__")
    tf_side = sorted(m for m in graph.files if m.startswith("pipeline.tf_side") and not m.endswith("__main__"))
    for modules in (torch_side, tf_side):  # one process each: the two sides must not share one
        script = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint(importlib.import_module('pipeline').__file__)"
        completed = subprocess.run([sys.executable, "-c", script, *modules], cwd=tmp_path, capture_output=True, text=True,
                                   env={**helpers.tf_env(), "PYTHONPATH": str(target)})
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert completed.stdout.strip().startswith(str(target))  # the installed copy, not the checkout
