"""Run one fuzz case and judge its outcome.

Two depths. `front` runs, in this process, everything that reads the file before TensorFlow sees it
(`KerasModel.open` and its weight checks): milliseconds a case, so every case can take it. `through_cli`
runs the whole onnx stage as a user does (`python -m pipeline onnx`), in a child process with a time
limit, measuring its peak memory: seconds to a minute a case, for the cases the front lets through.

A case passes when it ends in one of two ways: the file is taken (front: no error; CLI: exit 0, which
the onnx stage gives only when ONNX Runtime agrees with Keras on the damaged model), or it is refused
with exactly one `error:` line of at most `ERROR_LINE_CHARS` characters, whole (not shortened), plain
(no escape codes) — and, through the CLI, nothing written. Anything else is a finding: a traceback, a
long or shortened line, a hang past the limit, a peak memory past `CLI_PEAK_MB`, files left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.common.errors import BadInput
from pipeline.common.messages import ERROR_LINE_CHARS, one_line, was_shortened
from pipeline.fuzz.mutations import Case

FRONT_LIMIT_S = 10  # reading a config and its weights takes milliseconds; a loop in a check would not end
CLI_LIMIT_S = 300  # the onnx stage on a fuzz base model takes under a minute on 2 cores
# A case's peak memory, the CLI's and its TensorFlow process's: the fuzz bases peak under 1 GB (853 MB
# measured); four times that means a damaged config made something allocate.
CLI_PEAK_MB = 4096
TAKEN, REFUSED = "taken", "refused"  # the two good outcomes (a hostile file must be refused)
HOSTILE = "hostile"
_ESCAPE = re.compile(r"\x1b")


@dataclass
class Outcome:
    case: str
    kind: str
    depth: str  # "front" or "cli"
    result: str  # TAKEN, REFUSED, or the finding: "traceback", "long line", "shortened", "hang", "wrote files", "exit N"
    line: str  # the error line, or the traceback's last line
    seconds: float
    peak_mb: float | None = None  # the child's peak resident memory (cli only)

    @property
    def ok(self) -> bool:
        return self.result in (TAKEN, REFUSED)

    def as_dict(self) -> dict:
        return asdict(self)


class _Hang(Exception):
    pass


def _judge_line(line: str) -> str:
    """REFUSED for a good error line, else what is wrong with it."""
    if _ESCAPE.search(line):
        return "escape codes"
    if was_shortened(line):
        return "shortened"
    if len(line) > ERROR_LINE_CHARS:
        return "long line"
    return REFUSED


def front(case: Case, intact: Path, scratch: Path) -> Outcome:
    """`case` written from `intact` into `scratch`, then read and checked in this process as the CLI does
    before TensorFlow: `KerasModel.open` and `check_weights`."""
    from pipeline.keras_file.model import KerasModel

    path = scratch / f"case{intact.suffix}"
    case.write(intact, path)
    started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _raise_hang)
    signal.alarm(FRONT_LIMIT_S)
    try:
        KerasModel.open(path).check_weights()
        result, line = (TAKEN, "") if case.kind != HOSTILE else ("hostile file taken", "")
    except BadInput as exc:
        line = one_line(f"error: {exc}")
        result = _judge_line(line)
    except _Hang:
        result, line = "hang", f"no answer in {FRONT_LIMIT_S} s"
    except Exception as exc:  # noqa: BLE001 — the finding: anything but BadInput is a traceback to a user
        result, line = "traceback", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        path.unlink(missing_ok=True)
    return Outcome(case.id, case.kind, "front", result, line, time.perf_counter() - started)


def _raise_hang(signum, frame):
    raise _Hang()


def through_cli(case: Case, intact: Path, scratch: Path, data: Path | None = None) -> Outcome:
    """`case` written from `intact` into `scratch`, then `python -m pipeline onnx` on it, judged as a user
    sees it: exit 0, or exit 2 with one good `error:` line and nothing written into its output folder."""
    model = scratch / f"case{intact.suffix}"
    case.write(intact, model)
    out = Path(tempfile.mkdtemp(dir=scratch, prefix="out."))
    # without `data`, run where the default data folder is absent: the stage then checks on random inputs
    command = [sys.executable, "-m", "pipeline", "onnx", "--model", str(model), "--out", str(out)] + (["--data", str(data)] if data else [])
    report = scratch / "peak.kb"
    report.unlink(missing_ok=True)
    started = time.perf_counter()
    # through `peak`, not straight from here: a child of this (perhaps large) process would report its peak as its own
    process = subprocess.Popen([sys.executable, "-m", "pipeline.fuzz.peak", str(report), "--", *command], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, start_new_session=True, cwd=scratch)
    hung = threading.Event()

    def stop():
        hung.set()
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: the TensorFlow process too

    timer = threading.Timer(CLI_LIMIT_S, stop)
    timer.start()
    stderr = process.stderr.read()
    process.wait()
    timer.cancel()
    process.stderr.close()
    seconds = time.perf_counter() - started
    peak_mb = int(report.read_text()) / 1024 if report.is_file() else None  # none when the group was killed
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    written = [p for p in out.rglob("*") if p.is_file()]
    if hung.is_set():
        result, line = "hang", f"no answer in {CLI_LIMIT_S} s"
    elif peak_mb is not None and peak_mb > CLI_PEAK_MB:
        result, line = "memory", f"peak {peak_mb:,.0f} MB > {CLI_PEAK_MB:,} MB"
    elif any(line.startswith("Traceback") for line in lines):
        result, line = "traceback", lines[-1] if lines else ""
    elif process.returncode == 0:
        result, line = (TAKEN, "") if case.kind != HOSTILE else ("hostile file taken", "")
    elif process.returncode == 2 and len(errors) == 1:
        line = errors[0]
        result = "wrote files" if written else _judge_line(line)
    else:
        result, line = f"exit {process.returncode}", " | ".join(lines[-2:])[:300]
    return Outcome(case.id, case.kind, "cli", result, line, seconds, peak_mb)
