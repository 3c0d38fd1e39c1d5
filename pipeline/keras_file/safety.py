"""Look at a user's model file before anything loads it: with h5py (or zipfile for `.keras`), never Keras.

A Keras file can carry Python code (a `Lambda` layer's marshalled function); Keras 2 runs it on load.
So the model's config is read as plain JSON first, and a Lambda is refused unless the user opts in with
`--allow-unsafe-code`. The other checks turn the usual wrong inputs — a missing path, a text file or
random bytes named .h5, a truncated download, a `save_weights` file — into one sentence saying what to do.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py

from pipeline.common.errors import BadInput


def read_config(path: Path) -> dict:
    """The model's config as JSON, from a legacy `.h5` (attribute `model_config`) or a `.keras` zip (`config.json`).

    Raises:
        BadInput: the file is missing, unreadable, not a Keras model file, or holds weights only.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"model file {path} does not exist; run `make fetch` or pass --model PATH/TO/model.h5")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        except (KeyError, zipfile.BadZipFile, ValueError) as exc:
            raise BadInput(f"{path} is a zip file but not a Keras .keras model (no readable config.json)") from exc
    if path.suffix == ".keras":  # Keras 3's format is a zip archive; this one is not (or not whole)
        raise BadInput(f"{path} is not a readable .keras archive (truncated or not a Keras 3 file?); "
                       "save it again with model.save('model.keras') or copy it again")
    if not h5py.is_hdf5(path):
        raise BadInput(f"{path} is not an HDF5 file (a text file, random bytes or a different format?); "
                       "give a Keras model saved with model.save('model.h5') or model.save('model.keras')")
    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
    except OSError as exc:
        raise BadInput(f"{path} cannot be read as HDF5 ({' '.join(str(exc).split())[:200]}): "
                       "the file is probably truncated; download or copy it again") from exc
    if raw is None:
        raise BadInput(f"{path} holds weights but no model config (a save_weights file?); "
                       "save the whole model with model.save(...) and convert that")
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError as exc:
        raise BadInput(f"{path}: its model_config is not valid JSON ({exc})") from exc


def code_layers(config) -> list[str]:
    """Names of the layers that carry Python code (`Lambda`), anywhere in the config, nested models included."""
    found: list[str] = []

    def walk(item):
        if isinstance(item, dict):
            if item.get("class_name") == "Lambda":
                found.append(str(item.get("config", {}).get("name", "?")))
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(config)
    return found


def check(path: Path, allow_unsafe_code: bool = False) -> dict:
    """Check `path` is a Keras model that is safe to load; return its config.

    Raises:
        BadInput: see `read_config`; or the model holds a Lambda layer and `allow_unsafe_code` is False.
    """
    config = read_config(path)
    lambdas = code_layers(config)
    if lambdas and not allow_unsafe_code:
        raise BadInput(f"{path} contains Lambda layer(s) {', '.join(lambdas)} holding Python code, which loading would run; "
                       "refused — rebuild the model without Lambda, or pass --allow-unsafe-code if you trust the file")
    return config
