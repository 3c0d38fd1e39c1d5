"""Write a file through a temporary name in the same folder, renamed into place only on success.

An interrupted or failed write leaves the previous file intact and no debris: the temporary file is
removed on any exception (Ctrl-C included). A process killed outright (SIGKILL, power loss) cannot
clean up; `sweep` removes what such a run left, and every stage calls it before it starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from pipeline.common.errors import BadInput

# `.model.k3j2_x.tmp.onnx`: what `atomic_path` names its temporary files (see mkstemp below).
_TEMPORARY = re.compile(r"^\.[^/]+\.[A-Za-z0-9_]+\.tmp(\.[^./]+)?$")


def sweep(folder: Path) -> list[Path]:
    """Remove the temporary files a killed run left in `folder`; return them."""
    folder = Path(folder)
    debris = [path for path in folder.glob(".*.tmp*") if _TEMPORARY.match(path.name) and path.is_file()] if folder.is_dir() else []
    for path in debris:
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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts should read like any other file
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target: Path, text: str) -> None:
    """Atomically write `text` to `target`."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
