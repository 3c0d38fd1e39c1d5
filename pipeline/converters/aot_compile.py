"""`model_aoti.pt2`: the optimized program (`fx_optimize`) compiled ahead of time by AOTInductor into a
package of two models, each a shared library:

- `model` (the package's default): dynamic batch as the program has it, oneDNN convolutions with their
  BiasAdd/ReLU/Add fused in — the throughput model;
- `batch1`: the same program for one image, its convolutions calls of our own kernel (`conv_direct`,
  `runtimes.direct_conv`) through its C entry point where the processor has AVX-512, else im2col + GEMM
  (`conv_as_gemm`) compiled by inductor's C++ GEMM templates — MLPerf Tiny's single-stream latency.
  oneDNN builds each convolution's primitive descriptor again on every call, most of a batch-1 inference
  (docs/speed.md).

`runtimes.aoti.load` runs a one-image batch on `batch1`, any other on `model`; from C++, name the model
(`AOTIModelPackageLoader(path, "batch1")`).

`python -m pipeline.converters.aot_compile PROGRAM SAMPLE RESULT` compiles the batch-1 model in a process of
its own (`batch1_beside`, `main`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.common.errors import PipelineError
from pipeline.common.paths import child_environment
from pipeline.data.feeds import Sample, sample_from_json, sample_json

# Inductor settings the package is compiled with, chosen by `make aot-options` (every setting tried, its
# figures in docs/speed.md). freezing: the weights become constants, folded, with BiasAdd/ReLU/Add
# fused into oneDNN convolutions (inference only; prepacked too where the batch is static, not ours).
INDUCTOR_OPTIONS = {"freezing": True}
# The batch-1 model's (with our kernel, its Linear is the one GEMM left; without it, every convolution's):
# max_autotune lets inductor's C++ GEMM templates compile the GEMMs; the
# template alone (no ATen choice) leaves nothing to benchmark — with ATen beside it each candidate is
# compiled and timed, for no faster a package (docs/speed.md). Where the template does not apply,
# BATCH1_FALLBACK adds ATen's GEMMs. Epilogue fusion off: with pointwise ops fused into a template's
# epilogue, inductor's code generation failed on four of six zoo models tried ("AssertionError: wrong
# ndim"), and ResNet8's batch-1 model is no slower without it (docs/speed.md).
BATCH1_OPTIONS = {**INDUCTOR_OPTIONS, "max_autotune": True, "max_autotune_gemm_backends": "CPP", "epilogue_fusion": False,
                  # the autotuner's tables on stderr would bury the one line that says why a compile failed
                  "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}
BATCH1_FALLBACK = {**BATCH1_OPTIONS, "max_autotune_gemm_backends": "CPP,ATEN"}


def batch1_program(program, sample: Sample):
    """`program` for one input of `sample` alone, its convolutions calls of our own kernel
    (`conv_direct`) where it runs here (AVX-512) and takes them (at most `conv_direct.MAX_IN_CHANNELS` input
    channels), the others im2col + GEMM (`conv_as_gemm`); None where it has no convolution to rewrite (the
    gain measured is the convolutions': a model without one is left its any-batch model alone, and a compile
    saved)."""
    import torch

    from pipeline.converters import conv_as_gemm, conv_direct
    from pipeline.converters.examples import example_tensors
    from pipeline.runtimes import direct_conv

    module = program.module()
    try:
        direct = conv_direct.rewrite(module) if direct_conv.load() else 0
    except PipelineError:  # the kernel did not build here: inductor's GEMMs still make a batch-1 model
        direct = 0
    if not direct + conv_as_gemm.rewrite(module):  # the convolutions the kernel does not take
        return None
    with torch.no_grad():
        return torch.export.export(module, example_tensors(sample, 1))


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


def compile_for_device(program, sample: Sample, device, path: Path) -> None:
    """The any-batch model of `program` compiled for `device` (a CUDA GPU; the torch stage's package is the
    CPU's) under `INDUCTOR_OPTIONS`, written as the package `path`."""
    from pipeline.converters import to_fx
    from pipeline.runtimes import aoti

    on_device = to_fx.export(program.module().to(device), sample, str(device))
    write_package(path, {aoti.MODEL: compile_model(on_device, INDUCTOR_OPTIONS)})


NO_CONVOLUTION = "not built: no convolution to rewrite for one image"  # why a package may lack a batch-1 model and be complete


def build_package(program, program_path: Path, sample: Sample, path: Path) -> tuple[float, str]:
    """The torch stage's package `path` from `program` (saved in `program_path`): its any-batch model and, where
    it can be built, its batch-1 model (`batch1_beside`), compiled side by side; the seconds it took, and why
    there is no batch-1 model ("" where there is one; the any-batch model ships without it).

    Raises:
        InductorError (or another compile error): the any-batch model did not compile.
    """
    from pipeline.runtimes import aoti

    started = time.perf_counter()
    why = ""
    with batch1_beside(program_path, sample) as batch1_files:
        files = {aoti.MODEL: compile_model(program, INDUCTOR_OPTIONS)}  # a failure here raises
        try:
            batch1 = batch1_files()
        except PipelineError as exc:  # the batch-1 model is a speed-up: where it fails, the any-batch model still ships
            why = f"not built ({' '.join(str(exc).split())[:200]})"
        else:
            if batch1 is None:
                why = NO_CONVOLUTION
            else:
                files[aoti.BATCH1] = batch1
    write_package(path, files)
    return time.perf_counter() - started, why


# Longest the batch-1 model's compile may take before it is given up (the any-batch model ships alone):
# DenseNet121's, the longest measured here, took about 2 minutes.
BATCH1_TIMEOUT_S = 1800


@contextlib.contextmanager
def batch1_beside(program_path: Path, sample: Sample):
    """Compile the batch-1 model of the program saved in `program_path` (`batch1_program`, `BATCH1_OPTIONS`)
    in a process of its own while the body runs, so that the torch stage's compile of the any-batch model
    overlaps it. Yields a function that waits for it (at most `BATCH1_TIMEOUT_S`) and returns its files
    (`compile_model`'s; None where no convolution was rewritten). Whenever the body leaves before the
    compile is done, the process and the compilers it started are killed.

    Raises (from the function):
        PipelineError: the compile failed, did not start, or ran past its time; the message says why.
    """
    with tempfile.TemporaryDirectory(prefix="batch1-") as scratch:
        result, log = Path(scratch) / "result.json", Path(scratch) / "stderr.txt"
        command = [sys.executable, "-m", __name__, str(program_path), sample_json(sample), str(result)]
        try:
            with open(log, "w") as stderr:  # a file, not a pipe: inductor's warnings could fill a pipe nobody reads yet
                # its own session: killing the group reaches the g++ processes the compile starts, too
                child = subprocess.Popen(command, env=child_environment(), stdout=subprocess.DEVNULL, stderr=stderr,
                                         start_new_session=True)
        except OSError as exc:
            child, not_started = None, f"the batch-1 compile did not start ({exc})"

        def files():
            if child is None:
                raise PipelineError(not_started)
            try:
                code = child.wait(timeout=BATCH1_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise PipelineError(f"the batch-1 compile took over {BATCH1_TIMEOUT_S} s") from None
            report = json.loads(result.read_text()) if result.is_file() else {}
            if code == 0 and "files" in report:
                return report["files"]
            if "error" in report:
                raise PipelineError(report["error"])
            if code < 0:
                likely = ", most likely out of memory" if code == -signal.SIGKILL else ""
                raise PipelineError(f"the batch-1 compile was killed (signal {-code}{likely})")
            lines = log.read_text().strip().splitlines()
            raise PipelineError(f"the batch-1 compile exited with code {code}" + (f": {lines[-1]}" if lines else ""))

        try:
            yield files
        finally:
            if child is not None and child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def compile_model(exported, settings: dict) -> list:
    """The files of one model of a package (`write_package`): `exported` compiled with the inductor
    `settings` (under `BATCH1_OPTIONS`, with ATen's GEMMs beside the C++ template where that has no choice
    for a GEMM: `BATCH1_FALLBACK`)."""
    import torch

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found": not asked for
    args, kwargs = exported.example_inputs
    compile_settings = settings
    if _program_calls_kernel(exported):  # the package calls our kernel's C entry point, not the proxy executor
        from pipeline.runtimes import direct_conv

        compile_settings = {**settings, **direct_conv.shim_options()}
    try:
        # Under no_grad: inductor freezes (folds and prepacks the weights) only when gradients are off; with
        # them on, "freezing" is silently ignored.
        with torch.no_grad():
            return torch._inductor.aot_compile(  # noqa: SLF001 — what aoti_compile_and_package runs per model
                exported.module(check_guards=False), args, kwargs, options={**compile_settings, "aot_inductor.package": True})
    except torch._inductor.exc.InductorError as exc:  # noqa: SLF001
        if settings != BATCH1_OPTIONS or "NoValidChoicesError" not in str(exc):
            raise
        return compile_model(exported, BATCH1_FALLBACK)


def _program_calls_kernel(exported) -> bool:
    """Whether the ExportedProgram `exported` calls `k2t.conv2d_direct` (`conv_direct`)."""
    return any(node.op == "call_function" and str(node.target).startswith("k2t.conv2d_direct") for node in exported.graph.nodes)


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


def main(argv: list[str]) -> int:
    """`batch1_beside`'s process: argv is PROGRAM (the saved optimized program, `model_opt.pt2`), SAMPLE (one
    input's shape or the layout of several, `feeds.sample_json`) and RESULT, which gets `{"files": [...]}` (`compile_model`'s files; null where no
    convolution was rewritten) or `{"error": "why"}` (exit 1)."""
    if len(argv) != 3:
        print(f"usage: python -m {__name__} PROGRAM SAMPLE RESULT", file=sys.stderr)
        return 2
    from pipeline.runtimes.pt2 import load_program

    program_path, sample, result = Path(argv[0]), sample_from_json(argv[1]), Path(argv[2])
    try:
        batch1 = batch1_program(load_program(program_path), sample)
        files = None if batch1 is None else compile_model(batch1, BATCH1_OPTIONS)
        if files is not None and not all(isinstance(f, str) for f in files):  # paths cross the boundary, nothing else
            raise TypeError(f"the compile returned more than file paths: {files!r:.200}")
    except Exception as exc:  # noqa: BLE001 — the parent says why in one line; the any-batch model still ships
        result.write_text(json.dumps({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}))
        return 1
    result.write_text(json.dumps({"files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
