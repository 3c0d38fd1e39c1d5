"""Provenance: `manifest.json` in each model folder says what was built from what, with which stack.

It records the SHA-256 of the input model and data, of every artifact a stage wrote, the versions of
the conversion stack, the ONNX opset, the command and the times. A stage that builds on earlier
artifacts refuses to do so when they were made from a different model than the one it is given.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from pipeline.common.atomic import write_text
from pipeline.common.checksums import sha256_of
from pipeline.common.errors import BadInput
from pipeline.common.paths import ModelPaths

STACK = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnx2torch", "torch", "numpy", "h5py")


def versions() -> dict[str, str]:
    """Installed versions of the conversion stack (read from package metadata: nothing is imported)."""
    found = {"python": platform.python_version()}
    for name in STACK:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def load(out_dir: Path) -> dict:
    """The manifest of the artifacts folder `out_dir`, or {} if there is none yet."""
    path = ModelPaths(Path(out_dir)).manifest_json
    return json.loads(path.read_text()) if path.is_file() else {}


def require_same_model(out_dir: Path, model: Path) -> None:
    """BadInput if the artifacts in `out_dir` were built from another model than `model`."""
    recorded = load(out_dir).get("model", {}).get("sha256")
    if recorded and Path(model).is_file() and recorded != sha256_of(model):
        raise BadInput(f"the artifacts in {out_dir} were made from a different model (SHA-256 {recorded[:12]}…) than "
                       f"{model}; rerun `make onnx` for this model or use another --out")


def record(out_dir: Path, stage: str, model: Path | None, artifacts: list[Path], started: float,
           data_file: Path | None = None, **facts) -> None:
    """Add `stage` to the manifest: the artifacts' SHA-256, the command, the times, and `facts`."""
    manifest = load(out_dir)
    if model is not None and Path(model).is_file():
        manifest["model"] = {"path": str(model), "sha256": sha256_of(model)}
    if data_file is not None:
        manifest["data"] = {"path": str(data_file), "sha256": sha256_of(data_file)}
    manifest["versions"] = versions()
    manifest.setdefault("stages", {})[stage] = {
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 2),
        "artifacts": {Path(a).name: sha256_of(a) for a in artifacts if Path(a).is_file()},
        **facts,
    }
    write_text(ModelPaths(Path(out_dir)).manifest_json, json.dumps(manifest, indent=2) + "\n")
