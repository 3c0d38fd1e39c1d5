"""`make zoo`: the verdict on models nobody here wrote — Keras Applications architectures with calibrated
random weights (built with our own seed by `tf_side.zoo_build`), each as `.keras` and as a legacy
`.h5`, and the trained members (`TRAINED`: small models trained a few hundred steps by
`tf_side.trained_build`, written by tf-keras as `.h5` and by Keras 3 as `.keras`, as users' files are),
through onnx, torch, native and verify — and `zoo/summary.md`, one row per model and format.

The whole zoo takes hours on a small machine, so a run with `--models` adds its rows to those already in
`summary.json` (a rerun replaces a model's row); each row carries the day it was run.

A correct conversion must verify; a false alarm here is a bug as serious as a missed fault.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.common.atomic import write_text
from pipeline.common.errors import PipelineError
from pipeline.common.keras_job import TRAINED_FLAVOURS
from pipeline.common.paths import ModelPaths

ARCHITECTURES = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "EfficientNetV2B0", "ResNet50",
                 "ResNet50V2", "DenseNet121", "InceptionV3", "Xception", "VGG16", "ConvNeXtTiny", "NASNetMobile")
FORMATS = ("keras", "h5")  # Keras 3's own format, and the legacy HDF5 older models arrive in
TRAINED = "trained"  # the name that asks for every trained member (their names are the builder's)
SEQUENCES = "sequences"  # the name that asks for every trained sequence model (recurrent, text, attention)


@dataclass
class ZooRow:
    model: str
    format: str
    layers: int
    converted: bool
    proof_max_abs_diff: float | None  # float64 conversion vs Keras float64
    noise_ratio: float | None  # the worst float32 backend's error vs float64, in units of Keras float32's own
    saturated_share: float | None  # of the check samples whose Keras outputs are saturated or collapsed
    layers_compared: int
    verdict: str  # "verified", "FAILED: …", "does not convert: …"
    seconds: float
    date: str = ""  # the day the row was run (UTC), so a table merged from several runs says so
    # The native model (`stages.native`): "verified, parity ✓", or why not; its training step's worst
    # relative error against Keras's (gradients, statistics, SGD and Adam updates).
    native: str = ""
    parity_worst: float | None = None
    weights: str = "calibrated random"  # or "trained" (the trained members)


def run(out: Path, names: tuple[str, ...] = (*ARCHITECTURES, TRAINED, SEQUENCES), formats: tuple[str, ...] = FORMATS,
        progress: bool = True) -> list[ZooRow]:
    """Build every architecture in `names` (and, with TRAINED or SEQUENCES among them, train every trained
    member or sequence model),
    convert and verify it in each of `formats`; write `<out>/zoo/summary.md` and `summary.json`, keeping
    the rows of earlier runs for other models and formats. Returns this run's rows (a failing model is
    a row, not an error)."""
    from pipeline.runtimes import keras as keras_runtime

    folder = Path(out) / "zoo"
    architectures = [name for name in names if name not in (TRAINED, SEQUENCES)]
    built = {row["model"]: row for row in keras_runtime.build_zoo(folder / "models", architectures)} if architectures else {}
    jobs = [(folder / "models" / f"{name}.{fmt}", folder / fmt, built[name]) for name in architectures for fmt in formats]
    for group in (TRAINED, SEQUENCES):
        if group not in names:
            continue
        for fmt in formats:
            flavour = next(flavour for flavour, suffix in TRAINED_FLAVOURS.items() if suffix == f".{fmt}")
            for row in keras_runtime.build_trained(folder / "models" / group, flavour, [group] if group == SEQUENCES else []):
                jobs.append((Path(row["file"]), folder / f"{group}_{fmt}", row | {"weights": "trained"}))
    rows = []
    for model, models_out, summary in jobs:
        rows.append(_one(model, models_out, summary, progress))
        # written after every row: a run stopped halfway keeps what it measured
        _write(folder, merged(_earlier(folder), rows))
    return rows


def merged(earlier: list[ZooRow], rows: list[ZooRow]) -> list[ZooRow]:
    """`earlier` rows not rerun in `rows`, and `rows`, in the zoo's order (architecture, then format)."""
    by_key = {(r.model, r.format): r for r in earlier} | {(r.model, r.format): r for r in rows}
    order = {name: i for i, name in enumerate(ARCHITECTURES)}
    return sorted(by_key.values(), key=lambda r: (order.get(r.model, len(order)), FORMATS.index(r.format) if r.format in FORMATS else len(FORMATS)))


def _earlier(folder: Path) -> list[ZooRow]:
    """The rows of earlier runs in `folder/summary.json` ([] if none, or written by an older version)."""
    try:
        return [ZooRow(**row) for row in json.loads((folder / "summary.json").read_text())]
    except (OSError, ValueError, TypeError):
        return []


def _write(folder: Path, rows: list[ZooRow]) -> None:
    write_text(folder / "summary.json", json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    write_text(folder / "summary.md", table(rows) + "\n")


def _native(model: Path, paths: ModelPaths, row: ZooRow) -> Path | None:
    """The native model of `model` with its training parity, into `row`; its source, for verify, or None
    where the stage failed and so left none (the ONNX path is verified all the same)."""
    from pipeline.common.errors import CheckFailed
    from pipeline.stages import native

    try:
        result = native.run(model, paths.dir, parity=True)
    except CheckFailed as exc:
        row.native = f"FAILED: {' '.join(str(exc).split())[:160]}"
        return None
    except PipelineError as exc:
        row.native = f"not generated: {' '.join(str(exc).split())[:160]}"
        return None
    if result.parity.skipped:
        row.native = f"parity skipped: {' '.join(result.parity.skipped.split())[:160]}"
    else:
        row.parity_worst = max(result.parity.worst.values())
        row.native = "parity ✓"
    return result.source


def _one(model: Path, out: Path, built: dict, progress: bool) -> ZooRow:
    """One model file through onnx, torch, native and verify."""
    from pipeline.stages import to_onnx, to_torch, verify
    from pipeline.verifier.backends import Artifacts

    started = time.perf_counter()
    row = ZooRow(model.stem, model.suffix.lstrip("."), built.get("layers", 0), False, None, None, None, 0, "", 0.0,
                 time.strftime("%Y-%m-%d", time.gmtime()), weights=built.get("weights", ZooRow.weights))
    try:
        onnx_result = to_onnx.run(model, out, None)
        paths = ModelPaths.for_model(model, out)
        torch_result = to_torch.run(onnx_result.onnx, paths.dir)
        row.converted = True
        native_source = _native(model, paths, row)
        artifacts = Artifacts(model, paths.onnx, torch_result.pt2, torch_result.pt2_opt, paths.onnx_f64 if paths.onnx_f64.is_file() else None,
                              native_source)
        result = verify.run(artifacts, None, paths.dir, progress=progress, plots=False)
    except PipelineError as exc:
        row.verdict = f"{'FAILED' if row.converted else 'does not convert'}: {' '.join(str(exc).split())[:160]}"
        row.seconds = round(time.perf_counter() - started, 1)
        return row
    try:
        result.raise_if_failed()
        failure = ""
    except PipelineError as exc:
        failure = str(exc)
    fill(row, result.as_dict(), failure)
    row.seconds = round(time.perf_counter() - started, 1)
    return row


def fill(row: ZooRow, summary: dict, failure: str) -> None:
    """`row`'s figures and verdict from a verification's `verify.json` contents and its error ("" if it passed)."""
    row.converted = True
    row.proof_max_abs_diff = summary["float64_proof"]["max_abs_diff"] if summary["float64_proof"] else None
    row.noise_ratio = max(summary["noise_ratios"].values()) if summary["noise_ratios"] else None
    samples = sum(s["samples"] for s in summary["saturation"].values())
    row.saturated_share = sum(s["saturated"] + s["collapsed"] for s in summary["saturation"].values()) / samples if samples else None
    # placed in the converted graph (the native model is compared at every layer, by its Keras name)
    row.layers_compared = sum(any(d["backend"] == "onnxruntime" for d in r["diffs"]) for r in summary["layers"]["layers"]) if summary["layers"] else 0
    if failure:
        row.verdict = f"FAILED: {' '.join(failure.split())[:160]}"
    else:
        row.verdict = "verified" + (" (no evidence: outputs saturated)" if summary["no_evidence"] else "")
        if summary.get("layer_warning"):
            row.verdict += f" (layer warning: {' '.join(summary['layer_warning'].split())[:120]})"


def table(rows: list[ZooRow]) -> str:
    """summary.md: one Markdown row per model and format."""
    def figure(value, spec):
        return "—" if value is None else format(value, spec)

    lines = ["| model | weights | format | layers | converted? | float64 proof max \\|Δ\\| | float32 noise ratio | saturated | layers compared "
             "| verdict | native model | training parity (worst) | s | run on |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.weights} | .{r.format} | {r.layers} | {'yes' if r.converted else 'no'} | "
                     f"{figure(r.proof_max_abs_diff, '.1e')} | "
                     f"{figure(r.noise_ratio, '.2f')} | {figure(r.saturated_share, '.0%')} | {r.layers_compared} | {r.verdict} | "
                     f"{r.native or '—'} | {figure(r.parity_worst, '.1e')} | {r.seconds:.0f} | {r.date or '—'} |")
    verified = sum(r.verdict.startswith("verified") for r in rows)
    days = sorted({r.date for r in rows if r.date})
    when = f" (rows run {days[0]}{' to ' + days[-1] if len(days) > 1 else ''})" if days else ""
    lines.append(f"\n{verified} of {len(rows)} verified; {sum(r.seconds for r in rows) / 60:.1f} min in all{when}.")
    return "\n".join(lines)
