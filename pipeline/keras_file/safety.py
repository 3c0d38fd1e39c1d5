"""Look at a user's model file before anything loads it: with h5py (or zipfile for `.keras`), never Keras.

A Keras file can carry Python code (a `Lambda` layer's marshalled function); Keras 2 runs it on load.
So the model's config is read as plain JSON first, and a Lambda is refused unless the user opts in with
`--allow-unsafe-code`. The other checks turn the usual wrong inputs — a missing path, a text file or
random bytes named .h5, a truncated download, a `save_weights` file — into one sentence saying what to do.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import h5py

from pipeline.common import json_tree
from pipeline.common.errors import BadInput

# What a .keras zip may declare, uncompressed: a Keras file's weights barely compress, so an archive
# that inflates past this many times its own size, and past ZIP_SMALL_BYTES, is a zip bomb — refused
# before anything (Keras extracts a .keras's assets to disk) inflates it.
ZIP_MAX_RATIO = 100
ZIP_SMALL_BYTES = 64 * 2**20
CONFIG_MAX_BYTES = 256 * 2**20  # the largest zoo config (NASNetMobile) is under 2 MB
CONFIG_MAX_DEPTH = 200  # JSON nesting: a Keras config nests a few dozen deep; thousands is an attack on the parser
KERAS_CONFIG, KERAS_WEIGHTS = "config.json", "model.weights.h5"


def read_config(path: Path) -> dict:
    """The model's config as JSON, from a legacy `.h5` (attribute `model_config`) or a `.keras` zip (`config.json`).

    Raises:
        BadInput: the file is missing, unreadable, not a Keras model file, or holds weights only.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"model file {path} does not exist; run `make fetch` or pass --model PATH/TO/model.h5")
    if zipfile.is_zipfile(path):
        return _read_keras_zip(path)
    # Keras 3's format is a zip archive; this one is not (or not whole) — unless it is a legacy HDF5 file given
    # the new name (Keras 2.13+ users rename them), read as the `.h5` it is (`tf_side.loading.load_keras_model`)
    if path.suffix == ".keras" and not h5py.is_hdf5(path):
        raise BadInput(f"{path} is not a readable .keras archive (truncated or not a Keras 3 file?); "
                       "save it again with model.save('model.keras') or copy it again")
    if not h5py.is_hdf5(path):
        raise BadInput(f"{path} is not an HDF5 file (a text file, random bytes or a different format?); "
                       "give a Keras model saved with model.save('model.h5') or model.save('model.keras')")
    try:
        with h5py.File(path, "r") as handle:
            check_hdf5(handle, path.name)
            raw = handle.attrs.get("model_config")
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise BadInput(f"{path} cannot be read as HDF5 ({' '.join(str(exc).split())[:200]}): "
                       "the file is probably truncated; download or copy it again") from exc
    if raw is None:
        raise BadInput(f"{path} holds weights but no model config (a save_weights file?); "
                       "save the whole model with model.save(...) and convert that")
    return _parse_config(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw), f"{path}: its model_config")


def _parse_config(text: str, what: str):
    """The config's JSON, refused in one line when it is not JSON or nested past CONFIG_MAX_DEPTH (the
    walkers after this one recurse: a config thousands deep would overflow them)."""
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadInput(f"{what} is not valid JSON ({type(exc).__name__}); the file is damaged") from exc
    stack = [(config, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > CONFIG_MAX_DEPTH:
            raise BadInput(f"{what} nests more than {CONFIG_MAX_DEPTH} levels deep; the file is damaged or hostile")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return config


def check_hdf5(handle: h5py.File, name: str) -> None:
    """Refuse what in an HDF5 file reaches outside it — external links, datasets stored in external files,
    virtual datasets (any of them can read any file on the machine) — and object or region references,
    which Keras would follow blindly. Nothing is followed here: links are read as links.

    Raises:
        BadInput: the first such object, by its path in the file.
    """
    found: list[str] = []

    def visit_link(path: bytes, info) -> None:  # h5py's low-level visit: link info without opening the object
        if info.type == h5py.h5l.TYPE_EXTERNAL and not found:
            found.append(f"{path.decode(errors='replace')} is an external link")

    handle.id.links.visit(visit_link, info=True)
    if not found:
        def visit(path: str, obj) -> None:
            if isinstance(obj, h5py.Dataset) and not found:
                plist = obj.id.get_create_plist()
                if plist.get_external_count():
                    found.append(f"dataset {path} is stored in an external file")
                elif plist.get_layout() == h5py.h5d.VIRTUAL:
                    found.append(f"dataset {path} is a virtual dataset (its data lives in other files)")
                elif h5py.check_dtype(ref=obj.dtype) is not None:
                    found.append(f"dataset {path} holds object references")

        handle.visititems(visit)
    if found:
        raise BadInput(f"{name}: {found[0]}, which no Keras file has; refused (it could read files outside the model)")


def _read_keras_zip(path: Path):
    """The config of a `.keras` zip, after checking its entries: no path leaving the archive, no zip bomb,
    a weights file with nothing reaching outside it (`check_hdf5`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            for entry in entries:
                parts = PurePosixPath(entry.filename.replace("\\", "/")).parts
                if entry.filename.startswith(("/", "\\")) or ".." in parts or ":" in entry.filename:
                    raise BadInput(f"{path.name} holds the entry {entry.filename[:60]!r}, a path outside the archive; refused")
            declared = sum(entry.file_size for entry in entries)
            if declared > max(ZIP_SMALL_BYTES, ZIP_MAX_RATIO * path.stat().st_size):
                raise BadInput(f"{path.name} declares {declared / 2**20:,.0f} MiB uncompressed in a {path.stat().st_size / 2**20:,.1f} MiB "
                               "file (a zip bomb?); refused")
            names = {entry.filename: entry for entry in entries}
            if KERAS_CONFIG not in names:
                raise BadInput(f"{path} is a zip file but not a Keras .keras model (no {KERAS_CONFIG})")
            if names[KERAS_CONFIG].file_size > CONFIG_MAX_BYTES:
                raise BadInput(f"{path.name}: its {KERAS_CONFIG} declares {names[KERAS_CONFIG].file_size / 2**20:,.0f} MiB; refused")
            if KERAS_WEIGHTS not in names:
                raise BadInput(f"{path.name} holds no {KERAS_WEIGHTS} (a .keras without its weights); save the model again")
            config = _parse_config(archive.read(KERAS_CONFIG).decode(errors="replace"), f"{path.name}: its {KERAS_CONFIG}")
            with h5py.File(io.BytesIO(archive.read(KERAS_WEIGHTS)), "r") as weights:
                check_hdf5(weights, f"{path.name}'s {KERAS_WEIGHTS}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, ValueError, RuntimeError) as exc:
        raise BadInput(f"{path} is a damaged zip ({type(exc).__name__}: {exc}); copy or save the .keras again") from exc
    return config


def layers_of_class(config, matches: Callable[[str], bool]) -> list[str]:
    """Names of the layers whose class name `matches`, anywhere in the config, nested models included
    ("?" for one without a readable name)."""
    found: list[str] = []
    for item in json_tree.dicts(config):
        cls = item.get("class_name")
        if isinstance(cls, str) and matches(cls):
            inner = item.get("config")
            found.append(str(inner.get("name", "?")) if isinstance(inner, dict) else "?")
    return found


def code_layers(config) -> list[str]:
    """Names of the layers that carry Python code (`Lambda`), anywhere in the config, nested models included."""
    return layers_of_class(config, lambda cls: cls == "Lambda")


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
