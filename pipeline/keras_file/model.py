"""A user's Keras model file, read once into one object: its config, layer graph, input shape, whether
it is a classifier, and (on first use) its weights and checksum — all without Keras.

Every part of the torch side that needs to know about the model takes a `KerasModel` instead of the
path, so the file is checked and parsed once per process.
"""

from __future__ import annotations

import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.common import json_tree
from pipeline.common.checksums import sha256_of
from pipeline.data import checkset
from pipeline.keras_file import checks, graph, safety, weights
from pipeline.keras_file.graph import KerasLayer


class KerasModel:
    """The model at `path`, checked by `safety.check` (see `open`)."""

    def __init__(self, path: Path, config: dict):
        self.path = Path(path)
        self.config = config
        self.layers: list[KerasLayer] = graph.layers(config)

    @classmethod
    def open(cls, path: Path, allow_unsafe_code: bool = False) -> KerasModel:
        """Read and check `path` (a `.h5`, `.hdf5` or `.keras`).

        Raises:
            BadInput: the file is not a Keras model that is safe to load (`safety.check`), a layer entry
                or field is damaged (`checks.check_entries`), or its layer graph is not one Keras could
                build (`checks.check_graph`).
        """
        config = safety.check(path, allow_unsafe_code)
        checks.check_entries(config)  # before `graph.layers` reads them
        model = cls(path, config)
        checks.check_graph(model.config, model.layers)
        return model

    def check_weights(self) -> None:
        """BadInput naming the first weight that is NaN, infinite or of the wrong shape (`checks.check_weights`)."""
        checks.check_weights(self.layers, self.weights)

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def fixed_batch(self) -> str:
        """What in the config fixes the batch size or carries state between calls ("" where nothing does): the
        onnx stage says it, and converts the model with an open batch, stateless (`tf_side.loading`)."""
        found = set()
        for node in json_tree.dicts(self.config):
            for key in ("batch_input_shape", "batch_shape"):
                shape = node.get(key)
                if isinstance(shape, list) and shape and shape[0] is not None:
                    found.add(f"a batch size of {shape[0]}")
            if node.get("stateful") is True:
                found.add("stateful recurrent layers")
        return " and ".join(sorted(found))

    @property
    def legacy_under_new_name(self) -> bool:
        """Whether the file is a legacy HDF5 model named `.keras` (read as the `.h5` it is: `safety.read_config`)."""
        return self.path.suffix == ".keras" and not zipfile.is_zipfile(self.path)

    @cached_property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @cached_property
    def input_shape(self) -> tuple[int, ...] | None:
        """One sample's input shape as the config states it; None where it does not (`graph.input_shape`)."""
        return graph.input_shape(self.layers)

    @cached_property
    def inputs(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, one sample's shape) of each input, in the model's order (`graph.model_inputs`)."""
        return graph.model_inputs(self.config, self.layers)

    @cached_property
    def output_names(self) -> list[str]:
        """The output layers, in the model's order (`graph.output_names`)."""
        return graph.output_names(self.config, self.layers)

    @cached_property
    def output_classifiers(self) -> list[bool]:
        """Per output, in order, whether it is class probabilities (its layer ends in a softmax)."""
        by_name = {layer.name: layer for layer in self.layers}
        return [name in by_name and graph.is_classifier([by_name[name]]) for name in self.output_names]

    @cached_property
    def input_ranges(self) -> tuple[tuple[float, float], ...] | None:
        """The input range the model's first layer states (`graph.input_ranges`; its token ids' range where
        an Embedding reads the input); None where it states none."""
        tokens = self.token_ids
        return (tokens.range,) if tokens is not None else graph.input_ranges(self.layers)

    @property
    def open_dimensions(self) -> list[int]:
        """The input's dimensions left open (None) in the config, checked at `checkset.OPEN_DIMENSION_LENGTH`."""
        return graph.open_dimensions(self.layers)

    @cached_property
    def token_ids(self) -> checkset.TokenIds | None:
        """The token ids the (first such) input carries, where an Embedding reads it (`graph.token_ids`)."""
        return graph.token_ids(self.layers)

    @cached_property
    def input_tokens(self) -> dict[str, checkset.TokenIds]:
        """{input name: its token ids} for each input an Embedding reads (`graph.input_tokens`)."""
        return graph.input_tokens(self.layers)

    def packed_tokens(self) -> dict[str, tuple[int, bool]]:
        """`input_tokens` as a `KerasJob` carries them."""
        return {name: tokens.packed() for name, tokens in self.input_tokens.items()}

    @cached_property
    def classifier(self) -> bool:
        """Whether the outputs are class probabilities (`graph.is_classifier`): the one place this is decided."""
        return graph.is_classifier(self.layers)

    @cached_property
    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        """{layer name: {weight name: array}}, read with h5py on first use (`weights.read`)."""
        return weights.read(self.path, self.layers)

    @cached_property
    def sha256(self) -> str:
        return sha256_of(self.path)
