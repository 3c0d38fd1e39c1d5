"""Keras's outputs as the TensorFlow process wrote them: on the check set (`KerasReference`) and at
every layer (`KerasLayers`), plain `.npz` files tied to the model's and data's SHA-256. Reading them
starts no TensorFlow process (`keras_outputs.for_model` does, where they are missing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.data import checkset, cifar, feeds
from pipeline.data.feeds import Layout
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

    @property
    def input_layout(self) -> Layout | None:
        """The model's inputs, where it has several (its check sets are packed: `feeds`); None for one."""
        return feeds.read_stored(self._arrays, feeds.INPUTS_KEY)

    @property
    def output_layout(self) -> Layout | None:
        """The model's outputs, where it has several (packed in each set's outputs); None for one."""
        return feeds.read_stored(self._arrays, feeds.OUTPUTS_KEY)

    def set_names(self) -> list[str]:
        """The check sets, at the length the model was converted at (the sets at other lengths: `length_sets`)."""
        return sorted(name for name in self._all_sets() if not checkset.is_length_set(name))

    def _all_sets(self) -> set[str]:
        return {key.split("/")[0] for key in self._arrays if key.endswith("/probs")}

    @property
    def lengths_unavailable(self) -> str:
        """Why Keras gave no outputs at an other length (`tf_side.outputs._at_other_lengths`); "" where it gave them all."""
        return str(self._arrays.get(checkset.LENGTHS_UNAVAILABLE_KEY, ""))

    def length_sets(self) -> dict[int, dict[str, np.ndarray]]:
        """{length: {set: inputs}} of the sets at `checkset.OTHER_LENGTHS` (a model that leaves a dimension open);
        {} for other models."""
        found: dict[int, dict[str, np.ndarray]] = {}
        for name in sorted(filter(checkset.is_length_set, self._all_sets())):
            found.setdefault(checkset.length_of(name), {})[name] = self._arrays[f"{name}/inputs"]
        return found

    def _outputs_of(self, names) -> dict[str, Outputs]:
        layout = self.output_layout
        return {name: Outputs(self._arrays[f"{name}/probs"], self._arrays.get(f"{name}/logits"), layout) for name in names}

    def length_outputs(self) -> dict[str, Outputs]:
        """Keras's outputs on the sets of `length_sets`, by set name."""
        return self._outputs_of(sorted(filter(checkset.is_length_set, self._all_sets())))

    def inputs(self, name: str) -> np.ndarray | None:
        """The inputs of check set `name`, where the file holds them (not for the test images: see `check_sets`)."""
        return self._arrays.get(f"{name}/inputs")

    def outputs(self) -> dict[str, Outputs]:
        return self._outputs_of(self.set_names())

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
                self.inputs = archive["inputs"]  # packed, for a model of several inputs (`input_layout`)
                self.input_layout = feeds.read_stored(archive, feeds.INPUTS_KEY)
                self.model_sha256 = str(archive["model_sha256"])
                self.data_sha256 = str(archive["data_sha256"])
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"{path} is not a readable Keras layer-output file ({exc}); rerun the onnx stage") from exc
