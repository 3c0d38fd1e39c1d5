"""`common.atomic`: a folder written through a temporary one appears whole or not at all, and what a killed
run left is swept."""

from __future__ import annotations

import pytest

from pipeline.common import atomic


def _files(folder) -> dict[str, str]:
    return {path.name: path.read_text() for path in folder.iterdir()}


@pytest.mark.parametrize("older", [True, False], ids=["replacing", "new"])
def test_atomic_dir_appears_whole_on_success_and_not_at_all_on_failure(tmp_path, older):
    target = tmp_path / "native"
    if older:
        target.mkdir()
        (target / "model.py").write_text("old")
        (target / "stale.json").write_text("old")
    before = _files(target) if older else None
    with pytest.raises(RuntimeError), atomic.atomic_dir(target) as folder:
        (folder / "model.py").write_text("half")
        raise RuntimeError("the stage failed after writing")
    assert (_files(target) if target.exists() else None) == before  # the old state, or nothing
    with atomic.atomic_dir(target) as folder:
        (folder / "model.py").write_text("new")
        (folder / "weights_map.json").write_text("new")
    assert _files(target) == {"model.py": "new", "weights_map.json": "new"}  # whole: nothing of the older one kept
    assert sorted(path.name for path in tmp_path.iterdir()) == ["native"]  # no debris


def test_sweep_removes_the_folders_and_files_a_killed_run_left(tmp_path):
    staged = tmp_path / ".native.k3j2_x9a.tmp"
    staged.mkdir()
    (staged / "model.py").write_text("half")
    (tmp_path / ".model.k3j2_x9a.tmp.onnx").write_text("half")
    (tmp_path / "native").mkdir()  # real artifacts are left alone
    (tmp_path / "model.onnx").write_text("kept")
    assert sorted(path.name for path in atomic.sweep(tmp_path)) == [".model.k3j2_x9a.tmp.onnx", ".native.k3j2_x9a.tmp"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "native"]


def test_remove_dir_leaves_nothing(tmp_path):
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "model.py").write_text("x")
    atomic.remove_dir(tmp_path / "native")
    atomic.remove_dir(tmp_path / "native")  # none there: nothing to do
    assert list(tmp_path.iterdir()) == []
