"""Run `pipeline.keras_worker` in its own process and turn its failure into a `PipelineError`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.errors import BadInput, PipelineError
from pipeline.keras_worker import ERROR_PREFIX

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def run_worker(model: Path, *, onnx: Path | None = None, opset: int = 15, reference: Path | None = None,
               layers: Path | None = None, data: Path | None = None, bench: dict | None = None,
               allow_unsafe_code: bool = False, inputs: Path | None = None) -> dict:
    """Convert, compute Keras references and/or time Keras in a TensorFlow subprocess; return its JSON summary.

    Raises:
        BadInput: the worker reported a problem with the model or data (its one-line message).
        PipelineError: the worker died without saying why (e.g. killed, out of memory).
    """
    with tempfile.TemporaryDirectory() as scratch:
        result_path = Path(scratch) / "result.json"
        command = [sys.executable, "-m", "pipeline.keras_worker", "--model", str(model), "--result", str(result_path)]
        if onnx is not None:
            command += ["--onnx", str(onnx), "--opset", str(opset)]
        if reference is not None:
            command += ["--reference", str(reference)]
        if layers is not None:
            command += ["--layers", str(layers)]
        if data is not None:
            command += ["--data", str(data)]
        if inputs is not None:
            command += ["--inputs", str(inputs)]
        if allow_unsafe_code:
            command.append("--allow-unsafe-code")
        if bench is not None:  # {"sizes": [..], "images": n, "repeats": r, "threads": t}
            command += ["--bench-sizes", ",".join(map(str, bench["sizes"])), "--bench-images", str(bench["images"]),
                        "--bench-repeats", str(bench["repeats"]), "--threads", str(bench["threads"])]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        completed = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
        if completed.returncode == 0:
            return json.loads(result_path.read_text())
        errors = [line[len(ERROR_PREFIX):] for line in completed.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
        if errors:
            raise BadInput(f"Keras/TensorFlow could not process {model}: {errors[-1]}")
        tail = " | ".join(completed.stderr.strip().splitlines()[-3:])
        raise PipelineError(f"the TensorFlow process exited with code {completed.returncode}: {tail}")
