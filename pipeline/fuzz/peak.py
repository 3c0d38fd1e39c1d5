"""Run a command and write its peak resident memory: `python -m pipeline.fuzz.peak REPORT -- COMMAND...`.

Why a process between the fuzz runner and the command: Linux carries a process's memory high-water
mark across `fork` and `exec`, so a command started straight from a large process (a test session
that has loaded TensorFlow's outputs, torch and a few models: 4.5 GB in CI) reports that process's
peak as its own. Started from this small interpreter, the command's `ru_maxrss` is its own — the
largest of it and the children it waited for (the TensorFlow process).

The command inherits stdin, stdout and stderr and its exit status is this process's (128 + N when a
signal N ended it). REPORT gets the peak in kB, written when the command has ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m pipeline.fuzz.peak REPORT -- COMMAND...", file=sys.stderr)
        return 2
    report, command = Path(argv[0]), argv[2:]
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    report.write_text(f"{usage.ru_maxrss}\n")
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
