"""Human-readable results: the terminal tables and `report.md`, rendered from verify.json / evaluate.json."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.common import manifest
from pipeline.common.atomic import write_text
from pipeline.common.paths import ModelPaths
from pipeline.common.stage_status import NOT_BUILT, StageStatus
from pipeline.common.tolerances import describe_scaled, short
from pipeline.data import checkset


def verify_table(verify: dict) -> str:
    """Per backend pair: max diffs, argmax disagreements, images, pass/fail (Markdown)."""
    lines = [
        "| a | b | max abs Δ | max rel Δ | max abs Δlogit | argmax disagreements | images | tolerance | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in verify["pairs"]:
        logit = "—" if p["logits_max_abs_diff"] is None else f"{p['logits_max_abs_diff']:.2e}"
        lines.append(
            f"| {p['a']} | {p['b']} | {p['max_abs_diff']:.2e} | {p['max_rel_diff']:.2e} | {logit} | "
            f"{p['argmax_disagreements']} | {p['images']:,} | {p['tolerance']:.1e} | {'✓' if p['passed'] else '✗'} |"
        )
    user = f" + {verify['user_inputs']:,} of yours (--inputs)" if verify.get("user_inputs") else ""
    sizes = ", ".join(map(str, verify.get("random_batch_sizes", checkset.RANDOM_BATCH_SIZES)))
    ranges = ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in verify.get("input_ranges", ()))
    ranges = f" over {ranges}" if ranges else ""
    lines.extend(_by_output(verify))
    inputs = f" — the model's inputs {verify['inputs']}, each drawn on its own" if verify.get("inputs") else ""
    lines.append(f"\nImages: {verify['test_images']:,} test + {verify['random_images']:,} random{ranges} (batch sizes {sizes}){user}{inputs}.")
    noise = verify.get("keras_float32_noise")
    widened = f", or {verify['noise_factor']:g}× the model's own float32 noise where larger" if noise is not None else ""
    if verify.get("outputs"):
        lines.append(f"The model has several outputs, {verify['outputs']}: each is compared on its own, max |Δ| ≤ "
                     f"{describe_scaled('max|that output|')}{widened.replace('model', 'output')}; a pair passes where every output does.")
    else:
        lines.append(f"Outputs are class probabilities: max |Δ| ≤ {short(verify['atol_prob'])}{widened}, and no decisive argmax may differ."
                     if verify.get("classifier") else
                     f"Outputs are not probabilities: max |Δ| ≤ {describe_scaled()}{widened}; argmax not gated.")
    lines.extend(_float64_lines(verify))
    lines.extend(_length_lines(verify))
    for name, why in verify.get("not_applicable", {}).items():
        lines.append(f"{name}: {why}." if why.startswith(NOT_BUILT) else f"Backend `{name}` not compared: {why}.")
    if verify.get("layer_warning"):
        lines.append(f"Warning: {verify['layer_warning']}.")
    lines.append(f"Verification {'PASSED' if verify['passed'] else 'FAILED'}.")
    return "\n".join(lines)


def _by_output(verify: dict) -> list[str]:
    """Per pair, each of a model's several outputs: max |Δ| against its own tolerance (Markdown); none for one output."""
    pairs = [p for p in verify["pairs"] if p.get("outputs")]
    if not pairs:
        return []
    names = [part["name"] for part in pairs[0]["outputs"]]
    lines = ["\n| a | b | " + " | ".join(f"{name}: max abs Δ (tolerance)" for name in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for p in pairs:
        cells = [f"{part['max_abs_diff']:.2e} ({part['tolerance']:.1e}) {'✓' if part['passed'] else '✗'}" for part in p["outputs"]]
        lines.append(f"| {p['a']} | {p['b']} | " + " | ".join(cells) + " |")
    return lines


def _float64_lines(verify: dict) -> list[str]:
    """The float64 proof, the model's own float32 noise and each backend's multiple of it, saturation."""
    lines = []
    proof = verify.get("float64_proof")
    if proof:
        lines.append(f"Float64 proof (the model rebuilt in float64, converted the same way, run in float64, vs Keras float64): "
                     f"max |Δ| {proof['max_abs_diff']:.2e} (tolerance {proof['tolerance']:.1e}) on {proof['images']:,} inputs — "
                     f"{'✓' if proof['passed'] else '✗'}.")
    elif verify.get("float64_note"):
        lines.append(f"No float64 proof: {verify['float64_note']}.")
    native = verify.get("float64_proof_native")
    if native:
        lines.append(f"Float64 proof, second path (the native model generated from the Keras file alone, run in float64, vs Keras "
                     f"float64): max |Δ| {native['max_abs_diff']:.2e} (tolerance {native['tolerance']:.1e}) on {native['images']:,} inputs — "
                     f"{'✓' if native['passed'] else '✗'}.")
    if verify.get("keras_float32_noise") is not None:
        ratios = ", ".join(f"{name} {value:.2f}×" for name, value in verify.get("noise_ratios", {}).items())
        lines.append(f"Keras float32 vs Keras float64: max |Δ| {verify['keras_float32_noise']:.2e} "
                     "(the model's own rounding noise: float32's, or float16's in a mixed-precision model); "
                     f"bounds are at least {verify['noise_factor']:g}× that. Each backend's error against float64, in those units: {ratios}.")
    saturation = verify.get("saturation") or {}
    if saturation:
        flagged = [f"{name} {s['saturated'] + s['collapsed']}/{s['samples']}" for name, s in saturation.items() if s["saturated"] + s["collapsed"]]
        if flagged:
            lines.append(f"Saturated or collapsed Keras outputs (prove nothing): {', '.join(flagged)}.")
        if verify.get("no_evidence"):
            lines.append("**Every check sample is saturated or collapsed: this comparison is not evidence — give other inputs (--inputs).**")
    return lines


def _length_lines(verify: dict) -> list[str]:
    """A model that leaves a dimension open: the backends that take any length against Keras at the other lengths."""
    pairs = (verify.get("length_pairs") or []) + (verify.get("length_proofs") or [])
    note = f" Not checked: {verify['lengths_note']}." if verify.get("lengths_note") else ""
    if not verify.get("other_lengths"):
        return [f"The model leaves its input's length open: checked at the converted length only.{note}"] if note else []
    lengths = " and ".join(map(str, verify["other_lengths"]))
    if not pairs:
        return [f"The model leaves its input's length open: checked at the converted length only — no backend here takes "
                f"{lengths} (the native model would; it was not built).{note}"]
    checked = "; ".join(f"{p['a']} vs {p['b']} max |Δ| {p['max_abs_diff']:.2e} ({p['tolerance']:.1e}) {'✓' if p['passed'] else '✗'}"
                        for p in pairs)
    fixed = ", ".join(verify.get("fixed_length") or [])
    fixed = f" {fixed} take the converted length only (model.onnx was converted at it)." if fixed else ""
    return [f"The model leaves its input's length open: checked at {lengths} too — {checked}.{fixed}{note}"]


def layers_table(layers: dict) -> str:
    """Per Keras layer: max |Δ| against Keras in each backend, the tolerance, ✓/✗ (Markdown)."""
    from pipeline.verifier.layer_compare import label

    backends = layers["backends"]
    lines = [f"| # | Keras layer | class | {' | '.join(f'max abs Δ {b}' for b in backends)} | tolerance | |",
             "|---|---|---|" + "---|" * len(backends) + "---|---|"]
    for index, row in enumerate(layers["layers"], 1):
        diffs = {d["backend"]: d for d in row["diffs"]}
        cells = [f"{diffs[b]['max_abs_diff']:.2e}" if b in diffs else "—" for b in backends]
        tolerance = f"{row['diffs'][0]['tolerance']:.1e}" if row["diffs"] else "—"
        mark = ("✓" if row["passed"] else "✗") if row["diffs"] else "·"
        name = label(row["keras_layer"], row.get("fused", []))
        if row["shared_with"] and not row["compared"]:
            name += f" (shares point with {', '.join(row['shared_with'])})"
        lines.append(f"| {index} | {name} | {row['keras_class']} | {' | '.join(cells)} | {tolerance} | {mark} |")
    lines.append(f"\nTolerance per layer: {describe_scaled('max|Keras output|', layers['atol'], layers['rtol'])}, "
                 "or more where the layer's own float32 noise is larger (see above); "
                 f"{layers['images']} images; each layer placed by {layers['placed_by']}. "
                 "·: no comparison point of its own.")
    if layers.get("manual_note"):
        lines.append(f"Hand-written model: {layers['manual_note']}.")
    divergence = layers["first_divergence"]
    if divergence:
        lines.append(f"**First divergence: `{label(divergence['keras_layer'], divergence.get('fused', []))}` in "
                     f"{divergence['backend']}** — max |Δ| "
                     f"{divergence['max_abs_diff']:.3g} > tolerance {divergence['tolerance']:.3g} "
                     f"(ONNX node `{divergence['onnx_node']}`, FX node `{divergence['fx_node']}`).")
    else:
        lines.append("Every layer within tolerance.")
    return "\n".join(lines)


PLOT_NAMED_LAYERS = 60


def plot_layers(layers: dict, path: Path) -> None:
    """Per-layer error relative to the layer's scale, log scale, one line per backend pair."""
    from pipeline.common import figures

    plt = figures.pyplot()

    rows = [row for row in layers["layers"] if row["diffs"]]
    names = [row["keras_layer"] for row in rows]
    # One named tick per layer up to PLOT_NAMED_LAYERS; a deep model gets a readable width and every n-th name.
    fig, ax = plt.subplots(figsize=(min(max(8, 0.32 * len(rows)), 0.32 * PLOT_NAMED_LAYERS), 4.8))
    floor = 1e-12
    for backend in layers["backends"]:
        xs, ys = [], []
        for i, row in enumerate(rows):
            diff = next((d for d in row["diffs"] if d["backend"] == backend), None)
            if diff is not None:
                xs.append(i)
                ys.append(max(min(diff["max_abs_diff"], 1e6) / max(diff["scale"], floor), floor))
        ax.plot(xs, ys, marker="o", markersize=3, label=f"{backend} vs keras")
    limit = [r["diffs"][0]["tolerance"] / max(r["diffs"][0]["scale"], floor) for r in rows]
    ax.plot(range(len(rows)), limit, "k--", linewidth=1, label="tolerance")
    divergence = layers["first_divergence"]
    if divergence and divergence["keras_layer"] in names:
        ax.axvline(names.index(divergence["keras_layer"]), color="red", alpha=0.4, label=f"first divergence: {divergence['keras_layer']}")
    ax.set_yscale("log")
    step = max(1, -(-len(rows) // PLOT_NAMED_LAYERS))
    ax.set_xticks(range(0, len(rows), step), names[::step], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("max |Δ| / max |Keras output|  (exact: 1e-12)")
    ax.set_title("Layer-by-layer error against Keras")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    figures.save(fig, path, dpi=110)



def evaluate_table(evaluate: dict) -> str:
    """Accuracy of model.pt2 and, side by side, of the other backends (Markdown)."""
    lines = ["| backend | top-1 | correct / total |", "|---|---|---|"]
    for name, acc in evaluate["side_by_side"].items():
        lines.append(f"| {name} | {acc['accuracy']:.4f} | {acc['correct']:,} / {acc['total']:,} |")
    if evaluate["subset_accuracy"] is not None:
        lines.append(
            f"\nMLPerf Tiny {evaluate['subset_total']}-image subset (model.pt2): {evaluate['subset_accuracy']:.4f} "
            f"({evaluate['subset_correct']}/{evaluate['subset_total']})."
        )
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in evaluate["per_class_accuracy"].items())
    lines.append(f"Per class: {per_class}.")
    if evaluate.get("from_verify"):
        lines.append(f"Classes of {' and '.join(evaluate['from_verify'])} as `verify` computed them on this test set "
                     "(the same files: `test_predictions.npz`).")
    lines.append(f"Gate: top-1 ≥ {evaluate['gate']} — {'PASSED' if evaluate['passed'] else 'FAILED'}.")
    return "\n".join(lines)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def parity_table(parity: dict) -> str:
    """The native model's training step against Keras's: the worst relative error of each kind (Markdown)."""
    if parity.get("skipped"):
        return f"Training parity skipped: {parity['skipped']}."
    lines = ["| compared | tensors | worst relative L2 error | bound | |", "|---|---|---|---|---|"]
    for kind, worst in parity["worst"].items():
        rows = [r for r in parity["rows"] if r["kind"] == kind]
        compared = [r for r in rows if not r["note"]]
        skipped = f" (+{len(rows) - len(compared)} on zero gradients, not compared)" if len(rows) > len(compared) else ""
        lines.append(f"| {kind} | {len(compared)}{skipped} "
                     f"| {worst:.1e} | {parity['rtol']:g} | {'✓' if all(r['passed'] for r in rows) else '✗'} |")
    lines.append(f"\nOne step on {parity['batch']} {parity['inputs']}, loss {parity['loss']} (Keras {parity['loss_keras']:.6g}, "
                 f"native {parity['loss_torch']:.6g}); a tensor's bound widens to {parity['noise_factor']:g}× the float32 steps' own "
                 f"error against float64 where that is larger ({parity.get('widened', 0)} of {len(parity['rows'])} here). "
                 f"Training parity {'PASSED' if parity['passed'] else 'FAILED'}.")
    return "\n".join(lines)


def write_report(out_dir: Path, model: Path | None = None) -> Path:
    """(Re)write `report.md` in `out_dir` from whatever results are there; titled after `model`, or
    after the model the manifest names."""
    paths = ModelPaths(Path(out_dir))
    model = model or (Path(manifest.load(paths.dir)["model"]["path"]) if "model" in manifest.load(paths.dir) else None)
    sections = [f"# Conversion report: {model.name if model else paths.dir.name}\n"]
    verify = _load(paths.verify_json)
    if verify:
        sections += ["## Equality across backends (`verify.json`)\n", verify_table(verify), ""]
        if verify.get("layers"):
            sections += ["## Layer by layer against Keras\n", layers_table(verify["layers"]), "", "![per-layer error](layers.png)", ""]
    parity = _load(paths.native_parity)
    if parity:
        sections += ["## The native model's training step against Keras (`native/parity.json`)\n", parity_table(parity), ""]
    evaluate = _load(paths.evaluate_json)
    if evaluate and evaluate.get("applies") is False:
        sections += ["## Accuracy\n", f"Not evaluated: {evaluate['reason']}.", ""]
    elif evaluate:
        sections += ["## Accuracy on the CIFAR-10 test set (`evaluate.json`)\n", evaluate_table(evaluate), "",
                     "![confusion matrix](confusion.png)", ""]
    write_text(paths.report_md, "\n".join(sections))
    return paths.report_md


def _stage_times(paths: ModelPaths) -> list[tuple[str, str]]:
    """The row of each stage's seconds (as the manifest recorded them when the stage last ran; start-up of
    its interpreter not included) and their sum."""
    stages = {name: facts for name, facts in manifest.load(paths.dir).get("stages", {}).items() if "seconds" in facts}
    if not stages:
        return []
    parts = [f"{name} {facts['seconds']:.1f}"
             + (" (AOT package from the compile cache)" if facts.get("aot_cached")
                else f" (AOT compile {facts['aot_compile_seconds']:.1f})" if "aot_compile_seconds" in facts else "")
             for name, facts in stages.items()]
    total = sum(facts["seconds"] for facts in stages.values())
    return [("seconds", f"{' · '.join(parts)} — {total:.1f} in all (each stage when it last ran; interpreter start-up not counted)")]


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
                               f"{verify['test_images']:,} test + {verify['random_images']} random images"
                               + (f" + {verify['user_inputs']} of yours" if verify.get("user_inputs") else "")))
    parity = _load(paths.native_parity)
    status = StageStatus.read(paths.native_status)
    if status is not None and not status.built:
        rows.append(("native", f"{NOT_BUILT}{status.reason}"))
    elif parity and parity.get("skipped"):
        rows.append(("native", f"training parity skipped — {parity['skipped']}; {paths.native_source}"))
    elif parity:
        worst = ", ".join(f"{kind} {value:.1e}" for kind, value in parity["worst"].items())
        rows.append(("native", f"training parity {'PASSED' if parity['passed'] else 'FAILED'} — worst relative error {worst} "
                               f"(bound {parity['rtol']:g}); {paths.native_source}"))
    if evaluate and evaluate.get("applies") is False:
        rows.append(("evaluate", f"does not apply — {evaluate['reason']}"))
    elif evaluate:
        sub = "" if evaluate["subset_accuracy"] is None else f", subset {evaluate['subset_accuracy']:.3f}"
        others = ", ".join(f"{k} {v['correct']:,}" for k, v in evaluate["side_by_side"].items() if k != "torch")
        rows.append(("evaluate", f"{'PASSED' if evaluate['passed'] else 'FAILED'} — model.pt2 top-1 "
                                 f"{evaluate['accuracy']:.4f} ({evaluate['correct']:,}/{evaluate['total']:,}){sub}; {others}"))
    rows.append(("report", str(paths.report_md)))
    rows.extend(_stage_times(paths))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def verdict_line(out_dir: Path) -> str:
    """The verdict in one line, as `keras2torch convert` ends: PASSED and what was proven, or where it breaks."""
    verify = _load(ModelPaths(Path(out_dir)).verify_json)
    if not verify:
        return "no verdict (verify did not run)"
    if not verify["passed"]:
        divergence = verify.get("first_divergence")
        where = f"; first divergence at layer {divergence['keras_layer']} ({divergence['backend']})" if divergence else ""
        return f"NOT EQUAL{where}; see {ModelPaths(Path(out_dir)).report_md}"
    checked = ", ".join(b for b in verify["backends"] if b != "keras")
    proofs = [name for key, name in (("float64_proof", "ONNX path"), ("float64_proof_native", "native model"))
              if (verify.get(key) or {}).get("passed")]
    proven = (f"float64 proof passed ({', '.join(proofs)})" if proofs
              else f"no float64 proof ({verify.get('float64_note') or 'not run'})")
    inputs = verify["test_images"] + verify["random_images"] + (verify.get("user_inputs") or 0)
    lengths = (f"; native model equal at lengths {' and '.join(map(str, verify['other_lengths']))} too"
               if verify.get("length_pairs") else "")
    return f"PASSED — {checked} equal Keras on {inputs:,} inputs; {proven}{lengths}"
