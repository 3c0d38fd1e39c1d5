"""`model_aoti.pt2`: the optimized program (`fx_optimize`) compiled ahead of time by AOTInductor into one
shared library in a package, dynamic batch as the program has it.

Per-operator dispatch, not arithmetic, is what a 12.5-MMAC model spends its time on at batch 1: a
compiled package runs the whole graph from C++ (README "Speed": how far that gets, and what still costs).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

# Inductor settings the package is compiled with, chosen by `make aot-options` (every setting tried, its
# figures in the README, "Speed"). freezing: the weights become constants, folded, with BiasAdd/ReLU/Add
# fused into oneDNN convolutions (inference only; prepacked too where the batch is static, not ours).
INDUCTOR_OPTIONS = {"freezing": True}


def compile_package(program, path: Path, options: dict | None = None) -> float:
    """Compile the ExportedProgram `program` into the AOTInductor package `path` (replaced whole, never
    half-written) with the inductor settings `options` (default `INDUCTOR_OPTIONS`); returns the seconds it took."""
    import torch

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found": not asked for
    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compiled under its own name in a folder beside it, then moved: the package's archive is named after
    # the file, so a temporary name (atomic_path's) would be the name inside it.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as scratch:
        built = Path(scratch) / path.name
        # Under no_grad: inductor freezes (folds and prepacks the weights) only when gradients are off; with
        # them on, "freezing" is silently ignored.
        with torch.no_grad():
            torch._inductor.aoti_compile_and_package(  # noqa: SLF001
                program, package_path=str(built), inductor_configs=dict(INDUCTOR_OPTIONS if options is None else options))
        os.replace(built, path)
    return time.perf_counter() - started
