"""`make fuzz`: damaged and hostile copies of several base models, each judged as a user would meet it
(`fuzz.runner`) — and `fuzz/summary.md`: the cases, their outcomes by kind, the slowest, the peak memory,
and every finding.

The bases: the model the pipeline is run on (ResNet8 by default), and models of the kinds users bring
beyond image classifiers — a base model nested in a Sequential, Embedding + LSTM over token ids, a
model of two inputs — trained a few steps (`tf_side.trained_build.KINDS`) and written by tf-keras as
`.h5` and by Keras 3 as `.keras`. Every case of every base takes the front (`runner.front`); the cases
it lets through, one of each family (`Case.family`), and a few it refused, go on through the whole onnx
stage (`runner.through_cli`), up to `cli_cases` — a case there takes 10 s to a minute.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.atomic import write_text
from pipeline.fuzz import mutations, runner

FUZZ_SEED = 20261207
BASE_KINDS = ("nested_transfer", "recurrent_text", "two_inputs")
REFUSED_THROUGH_CLI = 0.1  # the share of `cli_cases` given to cases the front refused: the CLI must say the same


@dataclass
class FuzzSummary:
    bases: list[str]
    outcomes: list[runner.Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def findings(self) -> list[runner.Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    def as_dict(self) -> dict:
        return {"bases": self.bases, "seconds": round(self.seconds, 1), "cases": len(self.outcomes),
                "findings": [o.as_dict() for o in self.findings], "outcomes": [o.as_dict() for o in self.outcomes]}


def build_bases(folder: Path) -> list[Path]:
    """The kinds' base models in `folder` (built in a TensorFlow process where missing): .h5 and .keras each."""
    from pipeline.common.keras_job import TRAINED_FLAVOURS
    from pipeline.runtimes import keras as keras_runtime

    for flavour, suffix in TRAINED_FLAVOURS.items():
        missing = [kind for kind in BASE_KINDS if not (folder / f"{kind}{suffix}").is_file()]
        if missing:
            keras_runtime.build_trained(folder, flavour, missing)
    return [folder / f"{kind}{suffix}" for kind in BASE_KINDS for suffix in TRAINED_FLAVOURS.values()]


def run(out: Path, model: Path, data: Path | None, sample: int | None = None, cli_cases: int = 40, seed: int = FUZZ_SEED,
        progress: bool = True) -> FuzzSummary:
    """Fuzz `model` and the kinds' bases; write `<out>/fuzz/summary.md` and `summary.json`.

    Args:
        out: the artifacts root.
        model: a base of the user's (ResNet8 by default).
        data: the CIFAR-10 folder for the CLI cases (None: random inputs).
        sample: how many cases of each base take the front, drawn with `seed` (None: all).
        cli_cases: how many cases in all go through the whole onnx stage.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    folder = Path(out) / "fuzz"
    bases = [Path(model), *build_bases(folder / "bases")]
    summary = FuzzSummary([base.name for base in bases])
    rng = random.Random(seed)
    through: list[tuple[mutations.Case, Path]] = []
    refused: list[tuple[mutations.Case, Path]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for base in bases:
            cases = mutations.all_cases(base)
            cases = mutations.sample(cases, sample, seed) if sample else cases
            families: set[str] = set()
            for case in tqdm(cases, desc=f"fuzz {base.name}", unit="case", disable=not progress, leave=False):
                outcome = runner.front(case, base, Path(scratch))
                summary.outcomes.append(outcome)
                if outcome.result == runner.TAKEN and case.family not in families:
                    families.add(case.family)
                    through.append((case, base))
                elif outcome.result == runner.REFUSED:
                    refused.append((case, base))
        share = int(cli_cases * REFUSED_THROUGH_CLI)
        chosen = rng.sample(through, min(cli_cases - share, len(through))) + rng.sample(refused, min(share, len(refused)))
        for case, base in tqdm(chosen, desc="fuzz through the onnx stage", unit="case", disable=not progress, leave=False):
            summary.outcomes.append(runner.through_cli(case, base, Path(scratch), data if base == Path(model) else None))
    summary.seconds = time.perf_counter() - started
    write_text(folder / "summary.json", json.dumps(summary.as_dict(), indent=1) + "\n")
    write_text(folder / "summary.md", _markdown(summary))
    return summary


def _markdown(summary: FuzzSummary) -> str:
    by_kind: dict[tuple[str, str], dict[str, int]] = {}
    for outcome in summary.outcomes:
        counts = by_kind.setdefault((outcome.depth, outcome.kind), {})
        counts[outcome.result] = counts.get(outcome.result, 0) + 1
    lines = [f"# Fuzz: {len(summary.outcomes)} cases over {len(summary.bases)} base models ({', '.join(summary.bases)})", "",
             f"{len(summary.findings)} finding(s); {summary.seconds / 60:.1f} min in all.", "",
             "| depth | kind | cases | taken | refused in one line | findings |", "|---|---|---|---|---|---|"]
    for (depth, kind), counts in sorted(by_kind.items()):
        bad = {result: n for result, n in counts.items() if result not in (runner.TAKEN, runner.REFUSED)}
        lines.append(f"| {depth} | {kind} | {sum(counts.values())} | {counts.get(runner.TAKEN, 0)} | {counts.get(runner.REFUSED, 0)} | "
                     f"{', '.join(f'{n} {r}' for r, n in bad.items()) or '—'} |")
    cli = [o for o in summary.outcomes if o.depth == "cli"]
    if cli:
        slowest = max(cli, key=lambda o: o.seconds)
        peak = max(cli, key=lambda o: o.peak_mb or 0)
        lines += ["", f"Slowest case through the onnx stage: `{slowest.case}`, {slowest.seconds:.1f} s ({slowest.result})."]
        if peak.peak_mb is not None:  # none where every case was killed before its end
            lines.append(f"Peak memory of a case (the largest of the CLI and its TensorFlow process): {peak.peak_mb:,.0f} MB (`{peak.case}`).")
    front = [o for o in summary.outcomes if o.depth == "front"]
    if front:
        slowest = max(front, key=lambda o: o.seconds)
        lines.append(f"Slowest case through the front: `{slowest.case}`, {slowest.seconds:.2f} s.")
    if summary.findings:
        lines += ["", "## Findings", "", "| depth | case | result | line |", "|---|---|---|---|"]
        lines += [f"| {o.depth} | `{o.case}` | {o.result} | {o.line.replace('|', '/')} |" for o in summary.findings]
    return "\n".join(lines) + "\n"
