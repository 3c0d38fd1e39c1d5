"""The floor: on a user's own files, what the bare tools convert against this pipeline's verdict.

The rule (the project's): whatever `tf2onnx.convert.from_keras` + `onnx2torch.convert` convert with outputs equal to
Keras, this pipeline must convert and prove. For each model, the bare tools run as a user without the pipeline
runs them (`tf_side.bare`: load, tf2onnx with its defaults, onnx2torch, nothing checked) and their outputs are
compared with Keras's on seeded inputs; then `keras2torch convert MODEL` runs as a user runs it, in a process of
its own. The floor is broken where the bare tools were equal and the pipeline did not pass.

`python -m pipeline floor MODEL... --out DIR` (`make floor MODELS="a.h5 b.keras"`) writes DIR/floor.json and
DIR/floor.md, and exits 1 where the floor is broken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.common import atomic
from pipeline.common.keras_job import BARE_IO, BARE_ONNX
from pipeline.common.messages import one_line
from pipeline.common.paths import child_environment

# The bare tools' outputs count as equal to Keras within this share of the output's scale (max(1, max|Keras|)):
# looser than the pipeline's own bound (1e-5, or the model's own float32 noise), so that a model the bare tools
# convert nearly right is held to the floor rather than left out of it.
BARE_TOLERANCE = 1e-4
# Longest one `convert` may take: a hang is a verdict too (the longest measured: a zoo model at 224 px, ~10 min).
CONVERT_TIMEOUT_S = 3600


@dataclass
class FloorRow:
    model: str
    bare_equal: bool  # the bare tools converted it, their outputs equal to Keras's (`BARE_TOLERANCE`)
    bare: str  # what the bare tools did, in words
    pipeline_passed: bool  # `keras2torch convert` exited 0: PASSED (1: not equal, 2: refused)
    pipeline: str  # its last line: the verdict, or why it stopped
    exit_code: int

    @property
    def broken(self) -> bool:
        return self.bare_equal and not self.pipeline_passed


def bare_verdict(model: Path, folder: Path, opset: int) -> tuple[bool, str]:
    """(equal, what happened) of the bare tools on `model`, their files in `folder`."""
    import torch

    from pipeline.runtimes import keras as keras_runtime

    got = keras_runtime.bare_tools(model, folder, opset)
    if not got["converted"]:
        return False, f"{'not converted' if got['loaded'] else 'not loaded'}: {got['error']}"
    try:
        import onnx2torch

        module = onnx2torch.convert(str(folder / BARE_ONNX)).eval()
        with np.load(folder / BARE_IO, allow_pickle=False) as stored:
            count = sum(key.startswith("input_") for key in stored.files)
            inputs = [torch.from_numpy(stored[f"input_{i}"]) for i in range(count)]
            expected = [stored[f"output_{i}"] for i in range(sum(key.startswith("output_") for key in stored.files))]
        with torch.no_grad():
            result = module(*inputs)
        outputs = [t.numpy() for t in (result if isinstance(result, (tuple, list)) else [result])]
    except Exception as exc:  # noqa: BLE001 — the bare tools stopped here: recorded, as a user would meet it
        return False, f"onnx2torch: {one_line(f'{type(exc).__name__}: {exc}')[:200]}"
    if [o.shape for o in outputs] != [e.shape for e in expected]:
        return False, f"outputs of shapes {[o.shape for o in outputs]}, Keras's {[e.shape for e in expected]}"
    worst = max(float(np.abs(o.astype(np.float64) - e).max()) / max(1.0, float(np.abs(e).max())) for o, e in zip(outputs, expected, strict=True))
    equal = worst <= BARE_TOLERANCE
    return equal, f"{'equal' if equal else 'differ'}: max |Δ| {worst:.1e} of the output's scale ({got['keras']})"


def pipeline_verdict(model: Path, out: Path, data: Path | None) -> tuple[int, str]:
    """`keras2torch convert MODEL` in a process of its own, as a user runs it: (exit code, its verdict line — the
    `keras2torch:` summary, else the last `error:` line, else the last line; -1 for a hang)."""
    command = [sys.executable, "-m", "pipeline", "convert", str(model), "--out", str(out)] + (["--data", str(data)] if data else [])
    try:
        completed = subprocess.run(command, env=child_environment(), capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"no verdict in {CONVERT_TIMEOUT_S} s"
    lines = [line for line in (completed.stdout + completed.stderr).splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("keras2torch:", "error:"))] or lines
    return completed.returncode, (said[-1] if said else "")[:300]


def run(models: list[Path], out: Path, opset: int, data: Path | None = None, progress=print) -> list[FloorRow]:
    """Each of `models` through the bare tools and the pipeline; floor.json and floor.md written into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, model in enumerate(models, 1):
        progress(f"[{number}/{len(models)}] {model}")
        folder = out / "bare" / f"{number:03d}_{model.stem}"
        folder.mkdir(parents=True, exist_ok=True)
        equal, bare = bare_verdict(model, folder, opset)
        code, verdict = pipeline_verdict(model, out / "pipeline" / f"{number:03d}", data)
        rows.append(FloorRow(str(model), equal, bare, code == 0, verdict, code))
        progress(f"    bare tools: {bare}\n    pipeline:   {verdict}")
    atomic.write_text(out / "floor.json", json.dumps([{**asdict(row), "broken": row.broken} for row in rows], indent=2) + "\n")
    atomic.write_text(out / "floor.md", table(rows))
    return rows


def table(rows: list[FloorRow]) -> str:
    """floor.md: the summary line, then one row per model."""
    bare = sum(row.bare_equal for row in rows)
    passed = sum(row.pipeline_passed for row in rows)
    broken = [Path(row.model).name for row in rows if row.broken]
    lines = [f"# The floor: the bare tools against the pipeline on {len(rows)} model(s)\n",
             f"Bare tools (load, tf2onnx, onnx2torch; outputs within {BARE_TOLERANCE:g} of the output's scale): **{bare} of {len(rows)}** equal "
             f"to Keras. Pipeline (`keras2torch convert`): **{passed} of {len(rows)}** PASSED. "
             + (f"**Floor broken on {len(broken)}: {', '.join(broken)}.**" if broken
                else "Floor held: the pipeline passes every model the bare tools convert."),
             "", "| model | bare tools | pipeline | exit | floor |", "|---|---|---|---|---|"]
    for row in rows:
        cell = "✗ broken" if row.broken else ("✓" if row.bare_equal else "—")
        lines.append(f"| {Path(row.model).name} | {row.bare.replace('|', '/')} | {row.pipeline.replace('|', '/')} | {row.exit_code} | {cell} |")
    return "\n".join(lines) + "\n"
