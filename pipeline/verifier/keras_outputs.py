"""Keras's outputs as the TensorFlow process wrote them: on the check set (`KerasReference`) and at
every layer (`KerasLayers`), in float32 and from the float64 rebuild, all plain `.npz` files tied to
the model's and data's SHA-256. `for_model` reuses them when they are fresh and recomputes them (one
TensorFlow process) when not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.checksums import sha256_of
from pipeline.common.errors import BadInput
from pipeline.common.keras_job import KerasJob
from pipeline.common.paths import ModelPaths
from pipeline.data import checkset, cifar
from pipeline.keras_file.model import KerasModel
from pipeline.runtimes import keras as keras_runtime
from pipeline.verifier.backends import Outputs


class KerasReference:
    """Keras's outputs on the check set, as the onnx stage wrote them (`keras_reference.npz`)."""

    def __init__(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                self._arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path} is not a readable Keras reference file ({exc}); rerun the onnx stage") from exc
        self.path = path

    @property
    def model_sha256(self) -> str:
        return str(self._arrays.get("model_sha256", ""))

    @property
    def data_sha256(self) -> str:
        return str(self._arrays.get("data_sha256", ""))

    @property
    def unavailable(self) -> str:
        """Why the file holds no outputs (a float64 rebuild that failed); "" where it holds them."""
        return str(self._arrays.get("float64_unavailable", ""))

    def set_names(self) -> list[str]:
        return sorted({key.split("/")[0] for key in self._arrays if key.endswith("/probs")})

    def inputs(self, name: str) -> np.ndarray | None:
        """The inputs of check set `name`, where the file holds them (not for the test images: see `check_sets`)."""
        return self._arrays.get(f"{name}/inputs")

    def outputs(self) -> dict[str, Outputs]:
        return {name: Outputs(self._arrays[f"{name}/probs"], self._arrays.get(f"{name}/logits")) for name in self.set_names()}

    def check_sets(self, data: Path | None) -> dict[str, np.ndarray]:
        """The inputs behind every set: random batches and the user's from the file, test images from `data`."""
        sets = {}
        for name in self.set_names():
            inputs = self.inputs(name)
            if inputs is None and name == "test":
                if data is None:
                    raise BadInput("the Keras reference includes the test set; pass --data with the CIFAR-10 folder")
                inputs = cifar.load(data).images.astype(np.float32)
            sets[name] = inputs
        return sets


class KerasLayers:
    """Every Keras layer's output on the layer check set, as the TensorFlow process wrote them."""

    def __init__(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                self.outputs = {key.split("/", 1)[1]: archive[key] for key in archive.files if key.startswith("layer/")}
                self.inputs = archive["inputs"]
                self.model_sha256 = str(archive["model_sha256"])
                self.data_sha256 = str(archive["data_sha256"])
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"{path} is not a readable Keras layer-output file ({exc}); rerun the onnx stage") from exc


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
        keras_runtime.run(KerasJob(model.path, allow_unsafe_code=allow_unsafe_code, data=data, input_ranges=ranges, **missing))
        for name in missing:
            path, kind = files[name]
            found[name] = kind(path) if path.is_file() else None
    reference_f64 = found["reference_f64"]
    note = reference_f64.unavailable if reference_f64 is not None else "the float64 outputs were not written"
    usable_f64 = reference_f64 if reference_f64 is not None and not note else None
    return KerasOutputs(found["reference"], found.get("layers"), usable_f64,
                        found.get("layers_f64") if usable_f64 is not None else None, note)
