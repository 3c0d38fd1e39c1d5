"""`make aot-options`: each AOTInductor setting worth trying for `model_aoti.pt2`, compiled from `model_opt.pt2`,
checked against ONNX Runtime and timed beside it — batch-1 p50 (MLPerf Tiny's metric) and batch-256 images/s.

Every variant runs in a process of its own (thread counts and oneDNN's environment are per process, and
a compile's memory goes with it), with ONNX Runtime timed in the same process, calls interleaved as in
`make bench`: each row's ratio is measured under the same conditions, whatever the machine was doing
for the other rows. Writes `aot_options.json` and `aot_options.md` beside the model's artifacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.common.atomic import write_text
from pipeline.common.errors import BadInput, CheckFailed, PipelineError
from pipeline.common.paths import ModelPaths, child_environment
from pipeline.common.tolerances import ATOL_PROB
from pipeline.converters import aot_compile
from pipeline.stages import bench

TIMED_IMAGES = 2_560  # per batch-256 pass, a multiple of 256 (the batch-256-only package takes no other size); the pool of single-image calls
LATENCY_CALLS = 1_000  # single-image calls per backend for the p50
CHILD_TIMEOUT_S = 1_800  # one variant's compile and timing (max_autotune took 2 min here)


@dataclass(frozen=True)
class Variant:
    """One way to compile the package: inductor settings, and how the program is prepared and run."""

    name: str
    what: str  # one line for the table: what the setting does
    inductor: dict = field(default_factory=dict)
    static_batch: int | None = None  # export the program for this batch size only (else batch 1 … MAX_BATCH)
    threads: int | None = None  # torch's and ONNX Runtime's threads (default: every core)
    env: dict = field(default_factory=dict)  # environment of the variant's process (oneDNN's settings)
    convs_as_gemm: bool = False  # convolutions rewritten as im2col + GEMM (`conv_as_gemm`) before compiling
    direct_convs: bool = False  # convolutions rewritten as calls of our AVX-512 kernel (`conv_direct`) before compiling


FREEZING = aot_compile.INDUCTOR_OPTIONS  # the shipped setting: the row "freezing" is the package's any-batch `model`
VARIANTS = (
    Variant("default", "no settings: ATen convolutions (oneDNN behind them), inductor's own kernels between them"),
    Variant("freezing", "shipped (the package's `model`): weights folded, BiasAdd, ReLU and the residual Add fused into oneDNN convolutions "
            "(weights prepacked only where the batch is static)", FREEZING),
    Variant("freezing, NCHW", "as freezing, layout optimisation off (no channels-last activations)",
            {**FREEZING, "layout_optimization": False}),
    Variant("freezing, batch 1 only", "as freezing, the program exported for batch 1 alone: weights prepacked once", FREEZING,
            static_batch=1),
    Variant("freezing, batch 256 only", "as freezing, exported for batch 256 alone", FREEZING, static_batch=256),
    Variant("freezing, 1 thread", "as freezing, torch and ONNX Runtime on one thread each", FREEZING, threads=1),
    Variant("freezing, oneDNN AVX2", "as freezing, oneDNN held to AVX2 kernels (ONEDNN_MAX_CPU_ISA)", FREEZING,
            env={"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    Variant("no epilogue fusion", "as freezing, epilogue_fusion False (pointwise ops fused into a GEMM template's epilogue; "
            "freezing alone uses no template, so this is a control)",
            {**FREEZING, "epilogue_fusion": False}),
    Variant("im2col + GEMM", "convolutions as channels-last im2col (`unfold`) + addmm, each weight matrix a constant of "
            "the module; dynamic batch; ATen GEMMs", convs_as_gemm=True),
    Variant("im2col + GEMM, max_autotune", "as im2col + GEMM, frozen, GEMMs autotuned (at the export's batch-2 size hint) "
            "among inductor's CPU C++ templates and ATen",
            {**FREEZING, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}, convs_as_gemm=True),
    Variant("im2col + GEMM, max_autotune, batch 1 only", "shipped (the package's `batch1`): as im2col + GEMM, exported "
            "for batch 1 alone, frozen, every GEMM inductor's C++ template (`aot_compile.BATCH1_OPTIONS`)",
            aot_compile.BATCH1_OPTIONS, static_batch=1, convs_as_gemm=True),
    Variant("im2col + GEMM, max_autotune, batch 256 only", "as the batch-1 row, exported for batch 256 alone",
            aot_compile.BATCH1_OPTIONS, static_batch=256, convs_as_gemm=True),
    Variant("direct kernel, batch 1 only", "shipped (the package's `batch1` where the processor has AVX-512): "
            "convolutions as calls of our own kernel (`k2t::conv2d_direct`: channels-last, register-blocked, a zero pad "
            "before and the bias, residual Add and ReLU after folded in, called through its C entry point), exported for "
            "batch 1 alone, frozen, as `aot_compile.BATCH1_OPTIONS`",
            aot_compile.BATCH1_OPTIONS, static_batch=1, direct_convs=True),
    Variant("direct kernel", "as the row above, dynamic batch (the any-batch model with our kernel in place of oneDNN's)",
            FREEZING, direct_convs=True),
)


def run(paths: ModelPaths, data: Path, names: tuple[str, ...] = (), progress: bool = True) -> list[dict]:
    """Measure each variant named in `names` (default: all of `VARIANTS`), each in its own process; write the
    table; returns its rows."""
    from tqdm import tqdm

    bench.require_built(paths.onnx, paths.pt2_opt)
    known = {v.name: v for v in VARIANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(f"unknown AOT variant(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in names] if names else list(VARIANTS)
    rows = []
    for variant in tqdm(chosen, desc="aot-options (variants)", disable=not progress):
        rows.append(_in_child(variant, paths, data))
        # After every variant: a later one failing (a compile error, memory) keeps the minutes already measured.
        write_text(paths.aot_options_json, json.dumps(rows, indent=2) + "\n")
        write_text(paths.aot_options_md, table(rows) + "\n")
    return rows


def _in_child(variant: Variant, paths: ModelPaths, data: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="aot-option-") as scratch:
        result = Path(scratch) / "row.json"
        job = {"variant": asdict(variant), "dir": str(paths.dir), "data": str(data), "package": str(Path(scratch) / "model_aoti.pt2"),
               "result": str(result)}
        env = child_environment(variant.env)
        try:
            child = subprocess.run([sys.executable, "-m", "pipeline.stages.aot_options", json.dumps(job)], env=env,
                                   capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise PipelineError(f"AOT variant {variant.name!r} took over {CHILD_TIMEOUT_S} s; leave it out with --variants") from exc
        if child.returncode != 0 or not result.is_file():
            tail = " ".join(child.stderr.split()[-40:])
            raise PipelineError(f"AOT variant {variant.name!r} failed (exit {child.returncode}): {tail}")
        return json.loads(result.read_text())


def measure(variant: Variant, paths: ModelPaths, data: Path, package: Path) -> dict:
    """Compile `variant` into `package`, check it against ONNX Runtime on the test images, time both."""
    import torch

    from pipeline.converters import conv_as_gemm, conv_direct, to_fx
    from pipeline.data import cifar
    from pipeline.runtimes import aoti, direct_conv
    from pipeline.runtimes.pt2 import load_program

    threads = variant.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    images = cifar.load(data).images[:TIMED_IMAGES].astype(np.float32)
    if len(images) < TIMED_IMAGES:
        raise BadInput(f"{data} holds {len(images):,} test images; the timing needs {TIMED_IMAGES:,}")
    program, rewritten = load_program(paths.pt2_opt), 0  # as it is: what `make torch` compiles
    if variant.direct_convs and not direct_conv.load():
        raise BadInput(f"AOT variant {variant.name!r} needs a processor with AVX-512")
    if variant.convs_as_gemm or variant.direct_convs or variant.static_batch:
        module = program.module()
        if variant.convs_as_gemm or variant.direct_convs:
            rewritten = (conv_as_gemm if variant.convs_as_gemm else conv_direct).rewrite(module)
            if not rewritten:
                raise CheckFailed(f"AOT variant {variant.name!r}: no convolution was rewritten; it would time the plain model")
        with torch.no_grad():
            program = (torch.export.export(module, (torch.from_numpy(images[: variant.static_batch]),)) if variant.static_batch
                       else to_fx.export(module, images.shape[1:]))
    seconds = aot_compile.compile_package(program, package, variant.inductor)
    aot = bench.torch_runner(aoti.load(package), torch.device("cpu"))
    ort = bench.onnxruntime_runner(paths.onnx, threads)

    sizes = [variant.static_batch] if variant.static_batch else [1, 256]
    worst, flips, checked = 0.0, 0, 0
    for size in sizes:  # agreement on the images timed: every one at batch 256, a fifth at batch 1
        for start in range(0, TIMED_IMAGES if size > 1 else TIMED_IMAGES // 5, size):
            batch = images[start: start + size]
            mine, theirs = aot(batch).numpy(), ort(batch)[0]
            worst = max(worst, float(np.abs(mine - theirs).max()))
            flips += int((mine.argmax(1) != theirs.argmax(1)).sum())
            checked += len(batch)
    runners = {"onnxruntime": ort, "model_aoti.pt2": aot}
    row = {**asdict(variant), "threads": threads, "compile_s": round(seconds, 1), "convs_rewritten": rewritten,
           "max_abs_diff": worst, "flips": flips, "images_checked": checked}
    if 1 in sizes:
        latency = bench.latencies(runners, images, LATENCY_CALLS)
        row.update(ort_p50_us=latency["onnxruntime"]["p50"], aoti_p50_us=latency["model_aoti.pt2"]["p50"],
                   aoti_p99_us=latency["model_aoti.pt2"]["p99"])
    if 256 in sizes:
        speed = bench.time_backends(runners, images, 256, repeats=3)
        row.update(ort_b256=round(speed["onnxruntime"], 1), aoti_b256=round(speed["model_aoti.pt2"], 1))
    return row


def table(rows: list[dict]) -> str:
    """Markdown: one row per variant — its ratios to ONNX Runtime at batch 1 (p50) and 256, the raw figures,
    its agreement with ONNX Runtime (✓: within ATOL_PROB, no prediction flipped), its compile time."""
    lines = ["| variant | batch 1 p50 µs (onnxruntime) | vs onnxruntime | batch 256 img/s (onnxruntime) | vs onnxruntime | "
             f"agrees (≤ {ATOL_PROB:g}, 0 flips): max abs diff, flips | compile s | what it is |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b1 = (f"{r['aoti_p50_us']:,.0f} ({r['ort_p50_us']:,.0f}) | {r['ort_p50_us'] / r['aoti_p50_us']:.2f}×"
              if "aoti_p50_us" in r else "— | —")
        b256 = f"{r['aoti_b256']:,.0f} ({r['ort_b256']:,.0f}) | {r['aoti_b256'] / r['ort_b256']:.2f}×" if "aoti_b256" in r else "— | —"
        agrees = "✓" if r["max_abs_diff"] <= ATOL_PROB and r["flips"] == 0 else "✗"
        lines.append(f"| {r['name']} | {b1} | {b256} | {agrees} {r['max_abs_diff']:.1e}, {r['flips']} | {r['compile_s']} | {r['what']} |")
    return "\n".join(lines)


def _child(job: dict) -> None:
    variant = Variant(**job["variant"])
    started = time.perf_counter()
    row = measure(variant, ModelPaths(Path(job["dir"])), Path(job["data"]), Path(job["package"]))
    row["seconds"] = round(time.perf_counter() - started, 1)
    Path(job["result"]).write_text(json.dumps(row))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
