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

    try:
        return torch.export.load(str(path))
    except (RuntimeError, ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:  # BadZipFile: not a .pt2 archive at all
        raise BadInput(f"{path} is not a loadable torch.export program ({exc}); rerun `make torch`") from exc


def load_module(path: Path):
    """The program in `path` as a callable module (see `load_program`)."""
    return load_program(path).module()
