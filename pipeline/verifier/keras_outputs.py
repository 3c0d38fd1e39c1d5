"""Keras's outputs for one model, in float32 and from the float64 rebuild, on the check set and at
every layer (`keras_reference`): `for_model` reuses the files when they are fresh and recomputes them
(one TensorFlow process) when not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.common.checksums import sha256_of
from pipeline.common.keras_job import KerasJob
from pipeline.common.paths import ModelPaths
from pipeline.data import checkset, cifar
from pipeline.keras_file.model import KerasModel
from pipeline.runtimes import keras as keras_runtime
from pipeline.verifier.keras_reference import KerasLayers, KerasReference


@dataclass
class KerasOutputs:
    """Keras's outputs for one model: float32 (the reference) and float64 (the ground truth)."""

    reference: KerasReference
    layers: KerasLayers | None  # where asked for
    reference_f64: KerasReference | None  # None where the model cannot be rebuilt in float64
    layers_f64: KerasLayers | None
    float64_note: str = ""  # why the float64 outputs are missing


def for_model(model: KerasModel, out_dir: Path, data: Path | None, with_layers: bool,
              allow_unsafe_code: bool = False) -> KerasOutputs:
    """Keras's outputs in float32 and float64 (and per layer, if asked) for `model`: the stored files if
    they were made from this model and data, else recomputed — all in one TensorFlow process."""
    paths = ModelPaths(Path(out_dir))
    data_sha = sha256_of(cifar.locate(data)) if data is not None else None

    def load_if_fresh(path: Path, kind):
        if not path.is_file():
            return None
        loaded = kind(path)
        fresh = loaded.model_sha256 == model.sha256 and (data_sha is None or loaded.data_sha256 == data_sha)
        return loaded if fresh else None

    files = {"reference": (paths.keras_reference, KerasReference), "reference_f64": (paths.keras_reference_f64, KerasReference)}
    if with_layers:
        files |= {"layers": (paths.keras_layers, KerasLayers), "layers_f64": (paths.keras_layers_f64, KerasLayers)}
    found = {name: load_if_fresh(path, kind) for name, (path, kind) in files.items()}
    if found["reference_f64"] is not None and found["reference_f64"].unavailable:
        found.pop("layers_f64", None)  # no float64 rebuild: no float64 layers either
    missing = {name: files[name][0] for name, value in found.items() if value is None}
    if missing:
        ranges = checkset.choose_ranges(model.input_ranges, None)
        tokens = model.packed_tokens()
        keras_runtime.run(KerasJob(model.path, allow_unsafe_code=allow_unsafe_code, data=data, input_ranges=ranges, tokens=tokens,
                                   **missing))
        for name in missing:
            path, kind = files[name]
            found[name] = kind(path) if path.is_file() else None
    reference_f64 = found["reference_f64"]
    note = reference_f64.unavailable if reference_f64 is not None else "the float64 outputs were not written"
    usable_f64 = reference_f64 if reference_f64 is not None and not note else None
    return KerasOutputs(found["reference"], found.get("layers"), usable_f64,
                        found.get("layers_f64") if usable_f64 is not None else None, note)


def own_conversion(model: KerasModel, folder: Path, allow_unsafe_code: bool = False) -> Path:
    """`model` converted to ONNX as the onnx stage converts it, into `folder/model.onnx` (one TensorFlow
    process): where another ONNX file is verified, its layers are placed in this one (`placement`)."""
    onnx_path = Path(folder) / "model.onnx"
    keras_runtime.run(KerasJob(model.path, allow_unsafe_code=allow_unsafe_code, onnx=onnx_path))
    return onnx_path
