"""Load a `.pt2` (torch.export) program: no pickled code runs, and onnx2torch need not be installed."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pipeline.common.errors import BadInput


def load_program(path: Path):
    """The `ExportedProgram` in `path`.

    Raises:
        BadInput: the file is not a loadable torch.export program.
    """
    import torch

    # Not an archive at all: said here, before torch.export.load logs a traceback of its own on stderr.
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise BadInput(f"{path} is not a loadable torch.export program (not a .pt2 archive); rerun `make torch`")
    try:
        return torch.export.load(str(path))
    except (RuntimeError, ValueError, OSError, KeyError, AssertionError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path} is not a loadable torch.export program ({exc}); rerun `make torch`") from exc


def load_module(path: Path):
    """The program in `path` as a callable module (see `load_program`)."""
    return load_program(path).module()
