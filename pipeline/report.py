"""Human-readable results: the terminal tables and `report.md`, rendered from verify.json / evaluate.json."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.atomic import write_text
from pipeline.paths import ModelPaths


def verify_table(verify: dict) -> str:
    """Per backend pair: max diffs, argmax disagreements, images, pass/fail (Markdown)."""
    lines = [
        f"| a | b | max abs Δprob | max rel Δprob | max abs Δlogit | argmax disagreements | images | ≤ {verify['atol_prob']:g} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in verify["pairs"]:
        logit = "—" if p["logits_max_abs_diff"] is None else f"{p['logits_max_abs_diff']:.2e}"
        lines.append(
            f"| {p['a']} | {p['b']} | {p['max_abs_diff']:.2e} | {p['max_rel_diff']:.2e} | {logit} | "
            f"{p['argmax_disagreements']} | {p['images']:,} | {'✓' if p['passed'] else '✗'} |"
        )
    lines.append(f"\nImages: {verify['test_images']:,} test + {verify['random_images']:,} random (batch sizes 1, 7, 256).")
    for name, why in verify.get("not_applicable", {}).items():
        lines.append(f"Backend `{name}` not compared: {why}.")
    lines.append(f"Verification {'PASSED' if verify['passed'] else 'FAILED'}.")
    return "\n".join(lines)


def evaluate_table(evaluate: dict) -> str:
    """Accuracy of model.pt2 and, side by side, of the other backends (Markdown)."""
    lines = ["| backend | top-1 | correct / total |", "|---|---|---|"]
    for name, acc in evaluate["side_by_side"].items():
        lines.append(f"| {name} | {acc['accuracy']:.4f} | {acc['correct']:,} / {acc['total']:,} |")
    if evaluate["subset_accuracy"] is not None:
        lines.append(
            f"\nMLPerf Tiny 200-image subset (model.pt2): {evaluate['subset_accuracy']:.4f} "
            f"({evaluate['subset_correct']}/{evaluate['subset_total']})."
        )
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in evaluate["per_class_accuracy"].items())
    lines.append(f"Per class: {per_class}.")
    lines.append(f"Gate: top-1 ≥ {evaluate['gate']} — {'PASSED' if evaluate['passed'] else 'FAILED'}.")
    return "\n".join(lines)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_report(out_dir: Path, model: Path | None = None) -> Path:
    """(Re)write `report.md` in `out_dir` from whatever results are there."""
    paths = ModelPaths(Path(out_dir))
    sections = [f"# Conversion report: {model.name if model else paths.dir.name}\n"]
    verify = _load(paths.verify_json)
    if verify:
        sections += ["## Equality across backends (`verify.json`)\n", verify_table(verify), ""]
    evaluate = _load(paths.evaluate_json)
    if evaluate:
        sections += ["## Accuracy on the CIFAR-10 test set (`evaluate.json`)\n", evaluate_table(evaluate), "",
                     "![confusion matrix](confusion.png)", ""]
    write_text(paths.report_md, "\n".join(sections))
    return paths.report_md


def summary(out_dir: Path) -> str:
    """The short table `make all` ends with."""
    paths = ModelPaths(Path(out_dir))
    verify, evaluate = _load(paths.verify_json), _load(paths.evaluate_json)
    rows = [("artifacts", str(paths.dir))]
    if verify:
        worst = max(verify["pairs"], key=lambda p: p["max_abs_diff"])
        rows.append(("verify", f"{'PASSED' if verify['passed'] else 'FAILED'} — {len(verify['backends'])} backends, "
                               f"worst max |Δprob| {worst['max_abs_diff']:.2e} ({worst['a']} vs {worst['b']}), "
                               f"{sum(p['argmax_disagreements'] for p in verify['pairs'])} argmax disagreements, "
                               f"{verify['test_images']:,} test + {verify['random_images']} random images"))
    if evaluate:
        sub = "" if evaluate["subset_accuracy"] is None else f", subset {evaluate['subset_accuracy']:.3f}"
        others = ", ".join(f"{k} {v['correct']:,}" for k, v in evaluate["side_by_side"].items() if k != "torch")
        rows.append(("evaluate", f"{'PASSED' if evaluate['passed'] else 'FAILED'} — model.pt2 top-1 "
                                 f"{evaluate['accuracy']:.4f} ({evaluate['correct']:,}/{evaluate['total']:,}){sub}; {others}"))
    rows.append(("report", str(paths.report_md)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
