"""Stage 2: `model.onnx` → onnx2torch `GraphModule` → portable `model.pt2` (torch.export) + `model_fx.py`,
and the optimized `model_opt.pt2` + `model_opt_fx.py` (`converters.fx_optimize`: BatchNorm folded into
the convs, onnx2torch's wrappers replaced by torch functions, MatMul+Add as Linear).

`model.pt2` holds no pickled code: `torch.export.load` rebuilds it without onnx2torch in the process.
Each saved program is loaded back and checked against ONNX Runtime before the stage returns — within
the model's own float32 noise, where the onnx stage measured it (`verifier.precision`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common import cpuinfo, manifest
from pipeline.common.atomic import atomic_path, staged_files, write_text
from pipeline.common.errors import BadInput, PipelineError
from pipeline.common.paths import ModelPaths
from pipeline.converters import onnx_graph, to_fx
from pipeline.converters.fx_optimize import OptimizeReport
from pipeline.data import checkset
from pipeline.data.feeds import Sample
from pipeline.runtimes import aoti, direct_conv
from pipeline.verifier import backends, precision
from pipeline.verifier.backends import Outputs
from pipeline.verifier.compare import PairResult, compare, require
from pipeline.verifier.keras_reference import KerasReference
from pipeline.verifier.precision import Float32Noise


@dataclass
class TorchResult:
    pt2: Path
    fx_code: Path
    reshapes_made_static: int
    validation: PairResult  # model.pt2 against onnxruntime
    pt2_opt: Path
    optimizations: OptimizeReport
    validation_opt: PairResult  # model_opt.pt2 against onnxruntime
    pt2_aoti: Path | None = None  # the AOTInductor package, where asked for
    validation_aoti: PairResult | None = None  # model_aoti.pt2 against onnxruntime
    aoti_seconds: float = 0.0  # its compile time (where it came from the cache, the compile's that built it)
    aoti_batch1: str = ""  # why the package has no batch-1 model, where it has none
    aoti_cached: bool = False  # taken from `aot_cache`, not compiled now


def run(onnx_path: Path, out_dir: Path, layer_names: list[str] = (), aot: bool = False) -> TorchResult:
    """Convert `onnx_path`; write `model.pt2`, `model_fx.py`, `model_opt.pt2`, `model_opt_fx.py` into
    `out_dir`, and with `aot` the AOTInductor package `model_aoti.pt2`, its any-batch and batch-1 models
    (`aot_compile`; a compile of seconds to minutes: the CLI's `torch` asks for it, the zoo and the layer
    families do not).

    `layer_names` (the Keras model's, if known) let an unconvertible op be named by its layer.

    Raises:
        BadInput: the ONNX file is missing or cannot be converted.
        CheckFailed: a reloaded `.pt2` disagrees with ONNX Runtime beyond the output tolerance.
    """
    from pipeline.converters import fx_optimize

    started = time.time()
    if not Path(onnx_path).is_file():
        raise BadInput(f"{onnx_path} does not exist; run `make onnx` first")
    paths = ModelPaths(Path(out_dir))
    for stale in (paths.pt2_aoti, paths.aoti_kernels):  # never a package of an earlier conversion beside this one
        stale.unlink(missing_ok=True)
    gm, n_static = to_fx.convert(onnx_path, layer_names)
    sample = onnx_graph.input_sample(onnx_path)
    stored = KerasReference(paths.keras_reference) if paths.keras_reference.is_file() else None
    sets, ort_outputs, classifier = _onnxruntime_reference(onnx_path, stored)
    noise = precision.measure_stored(stored, paths.keras_reference_f64) if stored is not None else None
    # Written into a folder of their own and moved beside the ONNX file together, once every check passed.
    with staged_files(paths.dir, [paths.pt2, paths.pt2_opt, paths.pt2_aoti]) as folder:
        staged = ModelPaths(folder)
        _save(to_fx.export(gm, sample), staged.pt2)
        write_text(staged.fx_code, to_fx.fx_source(gm, onnx_path))
        validation = validate(staged.pt2, onnx_path, sets, ort_outputs, classifier, noise)
        optimized, report = fx_optimize.optimize(gm, sample)
        program = to_fx.export(optimized, sample)
        _save(program, staged.pt2_opt)
        write_text(staged.fx_opt_code, to_fx.fx_source(optimized, onnx_path, "after fx_optimize"))
        validation_opt = validate(staged.pt2_opt, onnx_path, sets, ort_outputs, classifier, noise)
        result = TorchResult(paths.pt2, paths.fx_code, n_static, validation, paths.pt2_opt, report, validation_opt)
        if aot:
            def check(package: Path) -> PairResult:
                return validate(package, onnx_path, sets, ort_outputs, classifier, noise, backend="aoti")

            result.aoti_seconds, result.aoti_batch1, result.aoti_cached, result.validation_aoti = _aot_package(program, sample, staged, check)
            result.pt2_aoti = paths.pt2_aoti
    written = [paths.pt2, paths.fx_code, paths.pt2_opt] + ([paths.pt2_aoti, paths.aoti_kernels] if aot else [])
    manifest.record(paths.dir, "torch", None, written, started,
                    **({"aot_compile_seconds": round(result.aoti_seconds, 1), "aot_cached": result.aoti_cached} if aot else {}))
    return result


def _aot_package(program, sample: Sample, paths: ModelPaths, check) -> tuple[float, str, bool, PairResult]:
    """`paths.pt2_aoti` (and our kernel's library beside it, where its batch-1 model calls the kernel) for
    `program`: taken from `aot_cache` where the same program was compiled before, else compiled
    (`aot_compile.build_package`) and, once it passes, kept there where complete. `check(path)` is the check
    against ONNX Runtime (raises CheckFailed); a kept package that fails it (or does not load) is dropped and
    compiled again.
    Returns the compile's seconds (that earlier compile's, for a kept package), why there is no batch-1 model
    ("" where there is one), whether it came from the cache, and the check's result."""
    from pipeline.converters import aot_cache, aot_compile

    entry = aot_cache.key(program, sample)
    kept = aot_cache.fetch(entry, paths.pt2_aoti)
    if kept is not None:
        try:
            return kept["seconds"], kept["batch1"], True, _check_with_kernel(paths, check)
        except (PipelineError, OSError):  # fails its check, does not load, or its kernel does not: compiled anew
            aot_cache.forget(entry)
    seconds, why = aot_compile.build_package(program, paths.pt2_opt, sample, paths.pt2_aoti)
    validation = _check_with_kernel(paths, check)
    if _complete(why):
        aot_cache.keep(entry, paths.pt2_aoti, {"seconds": round(seconds, 1), "batch1": why})
    return seconds, why, False, validation


def _complete(why: str) -> bool:
    """Whether a package whose batch-1 model is missing for `why` ("" where it is there) is worth keeping: not
    when that compile failed or ran out of time, nor when our kernel should have built here and did not (the
    batch-1 model then fell back to im2col GEMMs): both are tried again next time."""
    from pipeline.converters import aot_compile

    return why in ("", aot_compile.NO_CONVOLUTION) and (not cpuinfo.has_avx512() or direct_conv.library_path().is_file())


def _check_with_kernel(paths: ModelPaths, check) -> PairResult:
    """`check(paths.pt2_aoti)`, our kernel's library written beside the package first where it calls the kernel:
    what a C++ program must load before its batch-1 model (docs/architecture.md, "Use it from C++")."""
    paths.aoti_kernels.unlink(missing_ok=True)
    if aoti.calls_direct_kernel(paths.pt2_aoti):  # built here if it is not: a package from the cache comes without a build
        shutil.copyfile(direct_conv.built(), paths.aoti_kernels)
    return check(paths.pt2_aoti)


def _save(program, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))


def _onnxruntime_reference(onnx_path: Path, stored: KerasReference | None = None):
    """The random check batches (those of the Keras reference `stored` beside the ONNX file, where it is
    there: the same ranges), ONNX Runtime's outputs on them, and whether those are probabilities."""
    sources = backends.Sources(backends.Artifacts(onnx=onnx_path))
    sets = {name: stored.inputs(name) for name in stored.set_names() if name.startswith("random_")} if stored else {}
    if not sets:  # no reference: sized on the inputs alone, counted twice for the outputs
        layout = onnx_graph.input_layout(onnx_path)
        sets = checkset.random_sets(layout, sizes=checkset.random_sizes(2 * checkset.sample_bytes(layout.shapes), len(checkset.DEFAULT_RANGES)))
    outputs = backends.run_sets(backends.load("onnxruntime", sources), sets)
    return sets, outputs, onnx_graph.softmax_input(sources.onnx_proto.graph) is not None


def validate(pt2: Path, onnx_path: Path, sets: dict[str, np.ndarray], ort_outputs: dict[str, Outputs], classifier: bool,
             noise: Float32Noise | None = None, backend: str = "torch") -> PairResult:
    """A reloaded `.pt2` against ONNX Runtime's outputs on `sets`, within the model's float32 `noise` where
    known; `backend` says how it loads ("torch": torch.export, "aoti": an AOTInductor package).

    Raises:
        CheckFailed: beyond the output tolerance, or an argmax differs (classifiers).
    """
    # the ONNX file names the inputs a batch packs, where the model has several (`Sources.input_layout`)
    predict = backends.load(backend, backends.Sources(backends.Artifacts(onnx=onnx_path, **{backends.needs(backend): pt2})))
    result = compare(backend, backends.run_sets(predict, sets), "onnxruntime", ort_outputs, classifier, noise)
    return require(result, f"{pt2} disagrees with {onnx_path}", with_counts=False)
