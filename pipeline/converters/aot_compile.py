"""`model_aoti.pt2`: the optimized program (`fx_optimize`) compiled ahead of time by AOTInductor into a
package of two models, each a shared library:

- `model` (the package's default): dynamic batch as the program has it, oneDNN convolutions with their
  BiasAdd/ReLU/Add fused in — the throughput model;
- `batch1`: the same program for one image, its convolutions as im2col + GEMM (`conv_as_gemm`) compiled
  by inductor's C++ GEMM templates, weights packed at compile time — MLPerf Tiny's single-stream latency.
  oneDNN builds each convolution's primitive descriptor again on every call, most of a batch-1 inference
  (README, "Speed").

`runtimes.aoti.load` runs a one-image batch on `batch1`, any other on `model`; from C++, name the model
(`AOTIModelPackageLoader(path, "batch1")`).
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
# The batch-1 model's: max_autotune lets inductor's C++ GEMM templates compile the im2col GEMMs; the
# template alone (no ATen choice) leaves nothing to benchmark — with ATen beside it, each candidate is
# compiled and timed: 155.8 s against 65.9 s for ResNet8's two models on a first compile here, for no
# faster a package (README, "Speed"). Where the template does not apply, BATCH1_FALLBACK adds ATen's GEMMs. The autotuner's
# tables on stderr would fill the stage's output.
_QUIET = {"autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}
BATCH1_OPTIONS = {**INDUCTOR_OPTIONS, "max_autotune": True, "max_autotune_gemm_backends": "CPP", **_QUIET}
BATCH1_FALLBACK = {**BATCH1_OPTIONS, "max_autotune_gemm_backends": "CPP,ATEN"}


def batch1_program(program, sample_shape: tuple[int, ...]):
    """`program` for one input of `sample_shape` alone, its convolutions as im2col + GEMM (`conv_as_gemm`);
    None where it has no convolution to rewrite (the gain measured is the convolutions': a model without
    one is left its any-batch model alone, and a compile saved)."""
    import torch

    from pipeline.converters import conv_as_gemm

    module = program.module()
    if not conv_as_gemm.rewrite(module):
        return None
    with torch.no_grad():
        return torch.export.export(module, (torch.zeros((1, *sample_shape)),))


def compile_package(program, path: Path, options: dict | None = None, batch1=None) -> float:
    """Compile the ExportedProgram `program` into the AOTInductor package `path` (replaced whole, never
    half-written) with the inductor settings `options` (default `INDUCTOR_OPTIONS`), and with it, where given,
    the batch-1 program `batch1` (`batch1_program`) under `BATCH1_OPTIONS`; returns the seconds it took."""
    from pipeline.runtimes import aoti

    started = time.perf_counter()
    files = {aoti.MODEL: compile_model(program, INDUCTOR_OPTIONS if options is None else options)}
    if batch1 is not None:
        files[aoti.BATCH1] = compile_model(batch1, BATCH1_OPTIONS)
    write_package(path, files)
    return time.perf_counter() - started


def compile_model(exported, settings: dict) -> list:
    """The files of one model of a package (`write_package`): `exported` compiled with the inductor
    `settings` (under `BATCH1_OPTIONS`, with ATen's GEMMs beside the C++ template where that has no choice
    for a GEMM: `BATCH1_FALLBACK`)."""
    import torch

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found": not asked for
    args, kwargs = exported.example_inputs
    try:
        # Under no_grad: inductor freezes (folds and prepacks the weights) only when gradients are off; with
        # them on, "freezing" is silently ignored.
        with torch.no_grad():
            return torch._inductor.aot_compile(  # noqa: SLF001 — what aoti_compile_and_package runs per model
                exported.module(check_guards=False), args, kwargs, options={**settings, "aot_inductor.package": True})
    except torch._inductor.exc.InductorError as exc:  # noqa: SLF001
        if settings != BATCH1_OPTIONS or "NoValidChoicesError" not in str(exc):
            raise
        return compile_model(exported, BATCH1_FALLBACK)


def write_package(path: Path, files: dict[str, list]) -> None:
    """The AOTInductor package `path` (replaced whole, never half-written) of the models `files`
    ({name: `compile_model`'s files})."""
    from torch._inductor.package import package_aoti

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Packaged under its own name in a folder beside it, then moved: the package's archive is named after
    # the file, so a temporary name (atomic_path's) would be the name inside it.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as scratch:
        built = Path(scratch) / path.name
        package_aoti(str(built), files)
        os.replace(built, path)
