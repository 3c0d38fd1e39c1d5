"""The fuzz suite, sampled: damaged and hostile copies of ResNet8 and of base models of other kinds (a
nested transfer model, Embedding + LSTM, two inputs; tf-keras .h5 and Keras 3 .keras) each end as a
user should meet them — taken, or refused in one whole line — never a traceback, a hang, files left
behind or a hostile file taken. `make fuzz` runs every case; this runs a seeded sample in a few minutes.
And the suite has teeth: with one of the checks taken out, it finds the damage that check stopped.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.fuzz import mutations, runner
from pipeline.stages import fuzz

FRONT_SAMPLE = 45  # cases of each of the seven bases through the front: 315, under a minute
TEETH_SAMPLE = 100  # cases of each of two bases, with a check taken out


# The kinds' bases, committed (330 kB) to spare CI two TensorFlow processes; made by `make fuzz` itself, as
# `python -m pipeline.tf_side.trained_build tests/data/fuzz_bases keras2|keras3 nested_transfer recurrent_text two_inputs`.
COMMITTED_BASES = Path(__file__).parent / "data" / "fuzz_bases"


@pytest.fixture(scope="module")
def bases(real_paths, tmp_path_factory) -> list[Path]:
    model, _ = real_paths
    folder = tmp_path_factory.mktemp("fuzz_bases")
    for base in COMMITTED_BASES.iterdir():
        shutil.copy(base, folder / base.name)
    return [model, *fuzz.build_bases(folder)]  # builds none where all are there


def _front(bases: list[Path], scratch: Path, count: int = FRONT_SAMPLE) -> list[runner.Outcome]:
    return [runner.front(case, base, scratch) for base in bases
            for case in mutations.sample(mutations.all_cases(base), count, fuzz.FUZZ_SEED)]


def test_every_sampled_case_is_taken_or_refused_in_one_line(bases, tmp_path):
    outcomes = _front(bases, tmp_path)
    findings = [(o.case, o.result, o.line) for o in outcomes if not o.ok]
    assert not findings, findings[:5]
    kinds = {o.kind for o in outcomes}
    assert {"config-delete", "config-null", "config-type", "config-extreme", "entry", "weight-shape", "weight-nan",
            "weight-removed", "file-truncated", "hostile"} <= kinds
    assert sum(o.result == runner.REFUSED for o in outcomes) > len(outcomes) // 4  # damage is found, not waved through


def test_the_hostile_files_are_each_refused_in_one_line(bases, tmp_path):
    hostile = [(case, base) for base in bases[:3] for case in mutations.all_cases(base) if case.kind == "hostile"]
    outcomes = {case.id: runner.front(case, base, tmp_path) for case, base in hostile}
    expected = {"hostile-hdf5-external-link": "external link", "hostile-hdf5-external-dataset": "external file",
                "hostile-zip-parent-entry": "outside the archive", "hostile-zip-absolute-entry": "outside the archive",
                "hostile-zip-bomb": "zip bomb", "hostile-zip-config-not-json": "not valid JSON",
                "hostile-zip-config-deep": "the file is damaged", "hostile-zip-no-weights": "no model.weights.h5"}
    assert set(outcomes) == set(expected)
    for case, phrase in expected.items():
        assert outcomes[case].result == runner.REFUSED and phrase in outcomes[case].line, outcomes[case]


def test_cases_through_the_onnx_stage_end_in_a_verdict_or_one_line_writing_nothing(bases, tmp_path):
    """A damaged nested transfer model (Keras 3) that gets past the front, and one it refused: what Keras
    and the CLI then make of them."""
    rng, base = random.Random(fuzz.FUZZ_SEED), bases[2]
    outcomes = [(case, runner.front(case, base, tmp_path)) for case in mutations.all_cases(base)]
    taken = [case for case, o in outcomes if o.result == runner.TAKEN and case.kind.startswith("config")]
    refused = [case for case, o in outcomes if o.result == runner.REFUSED]
    for case in (rng.choice(taken), rng.choice(refused)):
        outcome = runner.through_cli(case, base, tmp_path)
        assert outcome.ok, outcome
        assert outcome.seconds < runner.CLI_LIMIT_S


@pytest.mark.parametrize("removed", ["checks.check_entries", "safety.check_hdf5"])
def test_the_suite_finds_the_damage_a_removed_check_stopped(bases, tmp_path, monkeypatch, removed):
    from pipeline.keras_file import checks, safety

    module, name = removed.split(".")
    monkeypatch.setattr({"checks": checks, "safety": safety}[module], name, lambda *args, **kwargs: None)
    outcomes = _front(bases[:2], tmp_path, count=TEETH_SAMPLE)
    findings = {o.result for o in outcomes if not o.ok}
    assert findings & {"traceback", "hostile file taken"}, f"with {removed} removed the suite found nothing"


@pytest.mark.parametrize("case_id", ["hostile-hdf5-external-link", "hostile-zip-parent-entry", "hostile-zip-bomb"])
def test_a_hostile_file_is_refused_by_the_cli_in_one_line_writing_nothing(bases, tmp_path, case_id):
    base = bases[1] if "hdf5" in case_id else bases[2]  # the nested transfer model: tf-keras .h5, Keras 3 .keras
    case = next(case for case in mutations.all_cases(base) if case.id == case_id)
    outcome = runner.through_cli(case, base, tmp_path)
    assert outcome.result == runner.REFUSED and "refused" in outcome.line, outcome


def test_code_in_a_module_path_never_runs(bases, tmp_path):
    """A `.keras` whose layer names `__import__('os').system(...)` as the module Keras imports its class
    from: refused in one line before Keras sees it; the command never runs."""
    base, sentinel = bases[2], tmp_path / "ran"

    def plant(config):
        entry = config["config"]["layers"][-1]
        entry["module"] = f"__import__('os').system('touch {sentinel}')"
        return config

    case = mutations.Case("hostile-module-path", "hostile",
                          lambda src, dst: mutations.write_config(src, dst, plant(mutations.read_config(src))))
    outcome = runner.through_cli(case, base, tmp_path)
    assert outcome.result == runner.REFUSED and "module" in outcome.line, outcome
    assert not sentinel.exists()


def _peak_mb(tmp_path: Path, code: str) -> float:
    report = tmp_path / "peak.kb"
    subprocess.run([sys.executable, "-m", "pipeline.fuzz.peak", str(report), "--", sys.executable, "-c", code], check=True)
    return int(report.read_text()) / 1024


def test_a_case_peak_memory_is_its_own_not_the_test_session(tmp_path):
    """A command started from a large process reported that process's peak as its own (a 4.5 GB test session
    made every hostile case a 'memory' finding); through `fuzz.peak` it reports its own, and still sees an
    allocation of its own."""
    ballast = bytearray(1 << 30)  # this process: 1 GiB resident
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    assert _peak_mb(tmp_path, "pass") < 200
    assert _peak_mb(tmp_path, "x = bytearray(600 << 20); x[::4096] = b'1' * len(x[::4096])") > 600
    del ballast
