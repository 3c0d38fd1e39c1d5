"""The class each backend gave every test image in `verify`, kept so that `evaluate` scores model.pt2 and
ONNX Runtime without running them over the same 10,000 images again (the same inputs, the same batches).

Each backend's classes are tied to the SHA-256 of the file that computed them and of the test set: where
either differs (a new conversion, another `--torch`, other data), `lookup` finds nothing and the caller
computes them. Plain `.npz`, no pickle.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pipeline.common.atomic import atomic_path
from pipeline.common.checksums import sha256_of


def save(path: Path, classes: dict[str, np.ndarray], files: dict[str, Path], test_set: Path) -> None:
    """Write {backend: class of each test image} for the backends in `files` ({backend: the file it ran}) that
    `classes` has, tied to those files and to the test set file `test_set`."""
    arrays = {"test_set_sha256": np.array(sha256_of(test_set))}
    for backend, file in files.items():
        if backend in classes and file is not None:
            arrays[f"{backend}/classes"] = np.asarray(classes[backend], dtype=np.int32)
            arrays[f"{backend}/sha256"] = np.array(sha256_of(file))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def lookup(path: Path, files: dict[str, Path], test_set_sha256: str) -> dict[str, np.ndarray]:
    """{backend: the classes it gave the test images} for each backend of `files` ({backend: the file it is to
    have run}) that `path` holds for that very file and for the test set of SHA-256 `test_set_sha256`; {} where
    there is none."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if "test_set_sha256" not in stored.files or str(stored["test_set_sha256"]) != test_set_sha256:
                return {}
            return {backend: stored[f"{backend}/classes"] for backend, file in files.items()
                    if f"{backend}/classes" in stored.files and str(stored[f"{backend}/sha256"]) == sha256_of(file)}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # not there, or not a file of ours: computed again
        return {}
