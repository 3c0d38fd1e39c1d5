"""Run a `KerasJob` in the TensorFlow process and turn its failure into a `PipelineError`.

TensorFlow never shares a process with torch here (importing both segfaults, ../shared/NOTES.md): the
job goes to `python -m pipeline.tf_side` as a JSON file and comes back as one (`common.keras_job`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.common.errors import BadInput, PipelineError, WorkerCrashed
from pipeline.common.keras_job import (BARE_TOOLS_MODULE, ERROR_PREFIX, REFUSAL_PREFIX, STEP_PREFIX, TRAINED_BUILDER_MODULE,
                                      WORKER_MEMORY_SHARE, WORKER_MODULE, WORKER_TIMEOUT_S, ZOO_BUILDER_MODULE, KerasJob, KerasJobResult)
from pipeline.common.paths import child_environment

# How often the TensorFlow process's resident memory is read against its cap (`_run_watched`): a process
# faults in at most a few GB a second, so it passes the cap by a fraction of the 10% left to the machine.
MEMORY_POLL_S = 0.05


def run(job: KerasJob) -> KerasJobResult:
    """Run `job` in a TensorFlow process; return what it reports.

    Raises:
        BadInput: the worker reported a problem with the model or data (its one-line message), ran
            past its time limit (`WORKER_TIMEOUT_S`, or `PIPELINE_WORKER_TIMEOUT` seconds) and was killed,
            or ran out of its memory cap (`memory_cap`).
        WorkerCrashed: the worker died by a signal (a crash inside TensorFlow, or killed): the message names
            the signal and the part of the job it was in, not TensorFlow's log lines.
        PipelineError: the worker exited non-zero without saying why.
    """
    limit = float(os.environ.get("PIPELINE_WORKER_TIMEOUT", WORKER_TIMEOUT_S))
    cap = memory_cap()
    with tempfile.TemporaryDirectory() as scratch:
        job_path, result_path = Path(scratch) / "job.json", Path(scratch) / "result.json"
        job_path.write_text(job.to_json())
        command = [sys.executable, "-m", WORKER_MODULE, str(job_path), str(result_path)]
        completed, ended = _run_watched(command, Path(scratch) / "stderr.txt", limit, cap)
        if ended == "time":
            raise BadInput(f"Keras/TensorFlow did not finish with {job.model} in {limit:g} s and was stopped; "
                           "a damaged model config can make Keras loop (set PIPELINE_WORKER_TIMEOUT for a larger model)")
        if completed.returncode == 0:
            return KerasJobResult.read(result_path)
        lines = completed.stderr.splitlines()
        if ended == "memory" or _out_of_memory(completed):
            raise BadInput(f"the TensorFlow process ran out of its memory cap ({cap / 2**30:.1f} GiB) on {Path(job.model).name}; "
                           "a config too large for this machine, or damaged (set PIPELINE_WORKER_MEMORY_GB to allow more)")
        refusals = [line[len(REFUSAL_PREFIX):] for line in lines if line.startswith(REFUSAL_PREFIX)]
        if refusals:
            raise BadInput(refusals[-1])
        errors = [line[len(ERROR_PREFIX):] for line in lines if line.startswith(ERROR_PREFIX)]
        steps = [line[len(STEP_PREFIX):] for line in lines if line.startswith(STEP_PREFIX)]
        if errors:
            during = f" (in {steps[-1]})" if steps else ""
            raise BadInput(f"Keras/TensorFlow could not process {Path(job.model).name}{during}: {errors[-1]}")
        step = steps[-1] if steps else ""
        where = f" in {step}" if step else ""
        if completed.returncode == -signal.SIGKILL:  # on a machine that kills no one else, the kernel's out-of-memory killer
            raise WorkerCrashed(f"the TensorFlow process was killed (SIGKILL, most likely out of memory){where} on {Path(job.model).name}; "
                                "free memory or run one large model at a time", "SIGKILL", step)
        if completed.returncode < 0:  # TensorFlow's own crash: its last log lines are noise, not the reason
            name = _signal_name(-completed.returncode)
            raise WorkerCrashed(f"the TensorFlow process crashed ({name}){where} on {Path(job.model).name}", name, step)
        said = [line for line in completed.stderr.strip().splitlines() if not line.startswith(STEP_PREFIX)]
        raise PipelineError(f"the TensorFlow process exited with code {completed.returncode}{where}: {' | '.join(said[-3:])}")


def memory_cap() -> int:
    """The TensorFlow process's memory cap in bytes, on its resident memory: `PIPELINE_WORKER_MEMORY_GB`,
    else `WORKER_MEMORY_SHARE` of the machine's memory."""
    if os.environ.get("PIPELINE_WORKER_MEMORY_GB"):
        return int(float(os.environ["PIPELINE_WORKER_MEMORY_GB"]) * 2**30)
    return int(WORKER_MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _run_watched(command: list[str], stderr_path: Path, limit: float, cap: int) -> tuple[subprocess.CompletedProcess, str]:
    """Run `command`, killing it past `limit` seconds or `cap` bytes resident; the finished process (its
    stderr as text) and how it ended: "exit", "time" or "memory".

    The cap is on resident memory, read every `MEMORY_POLL_S`, not on the address space (`RLIMIT_DATA`,
    `RLIMIT_AS`): TensorFlow reserves far more than it touches, so an address-space cap refuses models that
    fit (VGG16: docs/memory.md). The process is killed too where this one is interrupted (Ctrl-C, a test's
    time limit), as `subprocess.run` would.
    """
    started = time.monotonic()
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, env=child_environment(), stderr=stderr, text=True)
        ended = "exit"
        try:
            while True:
                try:
                    process.wait(timeout=MEMORY_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() - started > limit:
                    ended = "time"
                    break
                if _resident_bytes(process.pid) > cap:
                    ended = "memory"
                    break
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stderr=stderr_path.read_text(errors="replace")), ended


def _resident_bytes(pid: int) -> int:
    """Resident memory of process `pid` in bytes (Linux `/proc/PID/statm`); 0 where it cannot be read (the
    process just ended, or no `/proc`)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _out_of_memory(completed: subprocess.CompletedProcess) -> bool:
    """Whether the worker failed for want of memory before the cap stopped it: an allocation the kernel
    refused (Python's MemoryError, C++'s bad_alloc, TensorFlow's OOM — larger than the machine has), or a
    thread TensorFlow could not start — the C++ ones abort the process."""
    signs = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "OOM when allocating", "via pthread_create() failed")
    return any(sign in completed.stderr for sign in signs)


def _signal_name(number: int) -> str:
    """"SIGSEGV" for 11; "signal N" for a number without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def build_zoo(folder: Path, names: list[str]) -> list[dict]:
    """Build the zoo's Keras Applications models into `folder` (NAME.keras and NAME.h5) in a TensorFlow
    process; one summary dict per model (layers, input range, seconds, top-probability percentiles).

    Raises:
        PipelineError: the builder failed (its last lines).
    """
    return _build([sys.executable, "-m", ZOO_BUILDER_MODULE, str(folder), *names], "the zoo")


def build_trained(folder: Path, flavour: str, names: list[str] = ()) -> list[dict]:
    """Train the zoo's trained members (`tf_side.trained_build`; all where `names` is empty) into `folder`
    as `flavour` writes them (keras2: tf-keras .h5, keras3: .keras); one summary dict per model (its file,
    its training loss after each pass).

    Raises:
        PipelineError: the builder failed (its last lines).
    """
    return _build([sys.executable, "-m", TRAINED_BUILDER_MODULE, str(folder), flavour, *names], "the trained models")


def bare_tools(model: Path, folder: Path, opset: int) -> dict:
    """The bare tools on `model` in a TensorFlow process of their own (`tf_side.bare`): how far they got
    ({"loaded", "converted", "error", "keras"}), their files in `folder`. A crash or a hang is their error too."""
    command = [sys.executable, "-m", BARE_TOOLS_MODULE, str(model), str(folder), str(opset)]
    try:
        completed = subprocess.run(command, env=child_environment(), capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"loaded": False, "converted": False, "error": f"no result in {WORKER_TIMEOUT_S} s", "keras": ""}
    found = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    if found:
        return found[-1]
    tail = " | ".join(completed.stderr.strip().splitlines()[-2:])
    return {"loaded": False, "converted": False, "error": f"exit {completed.returncode}: {tail}"[:300], "keras": ""}


def _build(command: list[str], what: str) -> list[dict]:
    """Run a builder in a TensorFlow process; its JSON lines."""
    completed = subprocess.run(command, env=child_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        tail = " | ".join(completed.stderr.strip().splitlines()[-3:])
        raise PipelineError(f"building {what} failed (exit {completed.returncode}): {tail}")
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
