"""Write a file — or a folder of files — through a temporary name in the same folder, renamed into place
only on success.

An interrupted or failed write leaves the previous file intact and no debris: the temporary file is
removed on any exception (Ctrl-C included). A process killed outright (SIGKILL, power loss) cannot
clean up; `sweep` removes what such a run left, and every stage calls it before it starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from pipeline.common.errors import BadInput

# `.model.k3j2_x.tmp.onnx`: what `atomic_path` names its temporary files (see mkstemp below), and
# `.native.k3j2_x.tmp` what `atomic_dir` names its temporary folders (mkdtemp).
_TEMPORARY = re.compile(r"^\.[^/]+\.[A-Za-z0-9_]+\.tmp(\.[^./]+)?$")


def sweep(folder: Path) -> list[Path]:
    """Remove the temporary files and folders a killed run left in `folder`; return them."""
    folder = Path(folder)
    debris = [path for path in folder.glob(".*.tmp*") if _TEMPORARY.match(path.name) and not path.is_symlink()] if folder.is_dir() else []
    for path in debris:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return debris


def require_writable(folder: Path) -> None:
    """Prove that `folder` can be written, or created: a probe file in it (or in its nearest existing
    parent), removed at once. Nothing is left behind, not even the folder.

    Raises:
        BadInput: the folder cannot be written or created, with the reason the system gave.
    """
    folder = probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, f"{probe} is a file, not a folder")
        fd, name = tempfile.mkstemp(dir=probe, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise BadInput(f"output folder {folder} cannot be written ({exc.strerror or exc}); "
                       "pass --out with a folder you can write to (or OUT=... to make)") from exc


@contextlib.contextmanager
def atomic_path(target: Path):
    """Yield a temporary path beside `target`; on a clean exit, rename it onto `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The real extension stays last: some writers (torch.export.save) check it.
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(name)
    _readable(tmp, 0o666)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _readable(path: Path, mode: int) -> None:
    """Give `path` (made 0600 or 0700 by mkstemp/mkdtemp) the permissions any other file of ours has."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Yield a new, empty temporary folder beside the folder `target`; on a clean exit it takes `target`'s
    place (an older `target` is removed), else it is removed. So a stage's files appear together, and
    only when all of them were written and checked.

    The swap is two renames (a folder cannot be renamed onto a full one): a kill between them leaves no
    `target` at all — never a half of it — and the older one under a temporary name, which `sweep` removes.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    _readable(tmp, 0o777)
    try:
        yield tmp
        remove_dir(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_dir(target: Path) -> None:
    """Remove the folder `target` (if there is one) as one act: renamed to a temporary name first, so no
    reader — and no Make run — sees it half removed."""
    target = Path(target)
    if target.is_symlink() or target.is_file():
        target.unlink()
        return
    if not target.exists():
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    os.replace(target, old)  # onto the empty folder mkdtemp made
    shutil.rmtree(old, ignore_errors=True)


def write_text(target: Path, text: str) -> None:
    """Atomically write `text` to `target`."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def staged_files(folder: Path, make_targets: list[Path]):
    """Yield a new, empty temporary folder inside `folder` for a stage to write its files into. On a clean
    exit each file written there replaces its namesake in `folder`, the `make_targets` last; on any
    failure (a failed check included) nothing is moved and the folder is removed.

    So a stage's outputs appear together and only on success: a kill before the moves leaves the earlier
    files as they were (`sweep` removes the folder), and one during the moves leaves the make targets
    as they were — older than the files a rerun was asked for, so Make runs the stage again.
    """
    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".stage.", suffix=".tmp"))
    _readable(tmp, 0o777)
    try:
        yield tmp
        last = {Path(target).name for target in make_targets}
        for path in sorted(tmp.iterdir(), key=lambda p: p.name in last):
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made and not any(folder.iterdir()):  # a first run that failed leaves not even its folder
            folder.rmdir()
