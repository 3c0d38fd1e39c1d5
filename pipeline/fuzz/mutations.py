"""Every damaged copy of a Keras model file that the fuzz suite tries, enumerated from the file itself.

A case is one mutation of one part of the file — a layer's config key deleted, set to null, to a wrong
type or to an extreme value; a layer entry's own fields; a weight dataset reshaped, retyped, filled with
NaN or Inf, or removed; the file truncated, zeroed in a block, its zip directory broken; a hostile
container (an HDF5 external link, a `../` zip entry, a zip bomb). The list is a pure function of the
file: the same file gives the same cases in the same order, and `sample` draws a seeded subset.

Only h5py, zipfile and json touch the files here: nothing is loaded by Keras.
"""

from __future__ import annotations

import io
import json
import math
import random
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.keras_file.safety import KERAS_CONFIG, KERAS_WEIGHTS

TRUNCATE_AT = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)  # fractions of the file kept
ZERO_BLOCK = 4096  # bytes zeroed at each of ZERO_AT
ZERO_AT = (0.0, 0.1, 0.5, 0.9)
HUGE = 10**12  # an extreme integer: a layer this wide would need terabytes


@dataclass(frozen=True)
class Case:
    """One damaged copy: `id` names it uniquely and reproducibly (`<kind>:<where>`); `write(src, dst)`
    writes it from the intact file."""

    id: str
    kind: str  # config-delete, config-null, config-type, config-extreme, entry, weight-*, file-*, model, hostile
    write: Callable[[Path, Path], None]

    @property
    def family(self) -> str:
        """The case with its layer left out (`config-null:strides`, `weight-nan:kernel`): cases of one family
        damage the same field of different layers, and mostly end alike."""
        where = self.id.split(":", 1)[1] if ":" in self.id else ""
        if self.kind.startswith("config"):
            where = where.split(".", 1)[-1].split("=")[0].split("#")[0]
        elif self.kind.startswith("weight"):
            where = where.rsplit("/", 1)[-1].split(":")[0]
        elif self.kind == "entry":
            where = self.id.split(":")[0]
        return f"{self.kind}:{where}"


# --- reading and writing the config and the weights of either format --------------------------------

def _is_keras_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def read_config(path: Path) -> dict:
    """The model config of an intact `.h5` or `.keras`."""
    if _is_keras_zip(path):
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(KERAS_CONFIG))
    with h5py.File(path, "r") as handle:
        raw = handle.attrs["model_config"]
    return json.loads(raw if isinstance(raw, str) else raw.decode())


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes | None]) -> None:
    """Copy the zip `src` to `dst` with the entries in `replace` given new bytes (None: left out)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename in replace:
                if replace[info.filename] is not None:
                    new.writestr(info.filename, replace[info.filename])
            else:
                new.writestr(info, old.read(info.filename))


def write_config(src: Path, dst: Path, config) -> None:
    """`src` copied to `dst` with its model config replaced by `config` (any JSON value)."""
    text = json.dumps(config)
    if _is_keras_zip(src):
        _rewrite_zip(src, dst, {KERAS_CONFIG: text.encode()})
        return
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as handle:
        handle.attrs["model_config"] = text


def _weight_datasets(path: Path) -> list[str]:
    """The paths of every weight dataset in the file (inside `model.weights.h5` for a `.keras`)."""
    names: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            names.append(name)

    if _is_keras_zip(path):
        with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read(KERAS_WEIGHTS)), "r") as handle:
            handle.visititems(visit)
    else:
        with h5py.File(path, "r") as handle:
            handle.visititems(visit)
    return names


def _edit_weights(src: Path, dst: Path, edit: Callable[[h5py.File], None]) -> None:
    """`src` copied to `dst` with `edit` applied to its weights file opened for writing."""
    if _is_keras_zip(src):
        with zipfile.ZipFile(src) as archive:
            buffer = io.BytesIO(archive.read(KERAS_WEIGHTS))
        with h5py.File(buffer, "r+") as handle:
            edit(handle)
        _rewrite_zip(src, dst, {KERAS_WEIGHTS: buffer.getvalue()})
        return
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as handle:
        edit(handle)


# --- the config: every key of every layer ---------------------------------------------------------

def _layer_entries(config) -> Iterator[tuple[str, dict]]:
    """(path, entry) for every layer entry in the config, nested models' layers included; the path is a
    JSON-pointer-like tuple rendered as text (`layers/3`, `layers/1/config/layers/0`)."""

    def walk(node, where):
        layers = node.get("layers") if isinstance(node, dict) else None
        if isinstance(layers, list):
            for index, entry in enumerate(layers):
                if isinstance(entry, dict):
                    yield f"{where}layers/{index}", entry
                    yield from walk(entry.get("config"), f"{where}layers/{index}/config/")

    yield from walk(config.get("config") if isinstance(config, dict) else None, "")


def _wrong_type(value):
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, int | float):
        return "seven"
    if isinstance(value, str):
        return 7
    if isinstance(value, list):
        return "a list"
    return [1]  # a dict (or null) where a list is not expected


def _extremes(value) -> list:
    """Values of `value`'s type at or past the edge of anything sensible."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [-1, 0, HUGE]
    if isinstance(value, float):
        return [-1.0, 1e308, math.nan]
    if isinstance(value, str):
        return ["", "no-such-" + value[:20], "x" * 10_000]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [[-1] * len(value), [0] * len(value), [HUGE] * len(value), value + value]
    if isinstance(value, list):
        return [[], value * 50]
    return []


def _set(entry_path: str, key: str, make: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    """A writer that applies `make` to the entry at `entry_path` of a fresh copy of the config."""

    def write(src: Path, dst: Path) -> None:
        config = read_config(src)
        node = config["config"]
        for part in entry_path.split("/"):
            node = node[int(part)] if part.isdigit() else node[part]
        make(node)
        write_config(src, dst, config)

    return write


def config_cases(path: Path) -> list[Case]:
    """Every key of every layer entry and of its config: deleted, null, of a wrong type, extreme."""
    cases: list[Case] = []
    config = read_config(path)
    for where, entry in _layer_entries(config):
        name = entry.get("config", {}).get("name", where) if isinstance(entry.get("config"), dict) else where
        targets = [(None, key, entry[key]) for key in entry] + (
            [("config", key, value) for key, value in entry["config"].items()] if isinstance(entry.get("config"), dict) else [])
        for parent, key, value in targets:
            label = f"{name}.{parent + '.' if parent else ''}{key}"

            def at(node, parent=parent):
                return node[parent] if parent else node

            cases.append(Case(f"config-delete:{label}", "config-delete", _set(where, key, lambda n, k=key, a=at: a(n).pop(k))))
            if value is not None:
                cases.append(Case(f"config-null:{label}", "config-null", _set(where, key, lambda n, k=key, a=at: a(n).__setitem__(k, None))))
            wrong = _wrong_type(value)
            cases.append(Case(f"config-type:{label}={json.dumps(wrong)}", "config-type",
                              _set(where, key, lambda n, k=key, a=at, w=wrong: a(n).__setitem__(k, w))))
            for index, extreme in enumerate(_extremes(value)):
                cases.append(Case(f"config-extreme:{label}#{index}", "config-extreme",
                                  _set(where, key, lambda n, k=key, a=at, x=extreme: a(n).__setitem__(k, x))))
    for where, entry in _layer_entries(config):  # graph-level damage: names and wiring
        name = entry.get("config", {}).get("name", where) if isinstance(entry.get("config"), dict) else where
        cases.append(Case(f"entry-unknown-class:{name}", "entry", _set(where, "class_name",
                                                                      lambda n: n.__setitem__("class_name", "FancyLayer"))))
        cases.append(Case(f"entry-duplicate-name:{name}", "entry", _duplicate_name(where)))
    return cases


def _duplicate_name(entry_path: str) -> Callable[[Path, Path], None]:
    """The entry renamed after the first layer of its model (two layers, one name)."""

    def write(src: Path, dst: Path) -> None:
        config = read_config(src)
        siblings_path, _, index = entry_path.rpartition("/")
        node = config["config"]
        for part in siblings_path.split("/"):
            node = node[int(part)] if part.isdigit() else node[part]
        first = node[0].get("config", {}).get("name") if isinstance(node[0].get("config"), dict) else None
        target = node[int(index)]
        if first and isinstance(target.get("config"), dict):
            target["config"]["name"] = first
            target["name"] = first
        write_config(src, dst, config)

    return write


def model_cases(path: Path) -> list[Case]:
    """The model's own fields: no layers, no inputs or outputs, a config that is not a mapping."""

    def edit(change):
        def write(src: Path, dst: Path) -> None:
            config = read_config(src)
            write_config(src, dst, change(config))
        return write

    def without(key):
        def change(config):
            config["config"].pop(key, None)
            return config
        return change

    def emptied(key):
        def change(config):
            config["config"][key] = []
            return config
        return change

    return [Case("model-no-layers", "model", edit(emptied("layers"))),
            Case("model-no-outputs", "model", edit(emptied("output_layers"))),
            Case("model-no-inputs", "model", edit(without("input_layers"))),
            Case("model-config-null", "model", edit(lambda c: {**c, "config": None})),
            Case("model-config-list", "model", edit(lambda c: [c])),
            Case("model-class-unknown", "model", edit(lambda c: {**c, "class_name": "MyModel"}))]


# --- the weights: every dataset -----------------------------------------------------------------

def weight_cases(path: Path) -> list[Case]:
    """Every weight dataset: of a wrong shape, of a wrong dtype, NaN, Inf, removed."""
    cases: list[Case] = []
    for name in _weight_datasets(path):
        def replace(make, name=name):
            def edit(handle):
                old = handle[name][()]
                del handle[name]
                handle.create_dataset(name, data=make(np.asarray(old)))
            return lambda src, dst: _edit_weights(src, dst, edit)

        cases += [
            Case(f"weight-shape:{name}", "weight-shape", replace(lambda a: np.zeros(a.shape + (2,), a.dtype))),
            Case(f"weight-dtype:{name}", "weight-dtype", replace(lambda a: np.full(a.shape, b"w", dtype="S1"))),
            Case(f"weight-nan:{name}", "weight-nan", replace(lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a)
                                                             if a.dtype.kind == "f" and a.size else np.full(a.shape, np.nan))),
            Case(f"weight-inf:{name}", "weight-inf", replace(lambda a: np.full(a.shape, np.inf, dtype=np.float32))),
            Case(f"weight-removed:{name}", "weight-removed",
                 lambda src, dst, name=name: _edit_weights(src, dst, lambda handle: handle.__delitem__(name))),
        ]
    return cases


# --- the file: its bytes, and hostile containers -----------------------------------------------------

def _bytes_case(case_id: str, kind: str, change: Callable[[bytes], bytes]) -> Case:
    return Case(case_id, kind, lambda src, dst: Path(dst).write_bytes(change(Path(src).read_bytes())))


def _zeroed(data: bytes, at: float) -> bytes:
    start = min(int(len(data) * at), max(len(data) - ZERO_BLOCK, 0))
    return data[:start] + bytes(min(ZERO_BLOCK, len(data) - start)) + data[start + ZERO_BLOCK:]


def file_cases(path: Path) -> list[Case]:
    """Truncations, zeroed blocks, and (for a `.keras`) a broken zip directory; hostile containers."""
    cases = [_bytes_case(f"file-truncated:{at}", "file-truncated", lambda d, at=at: d[: int(len(d) * at)]) for at in TRUNCATE_AT]
    cases += [_bytes_case(f"file-zeroed:{at}", "file-zeroed", lambda d, at=at: _zeroed(d, at)) for at in ZERO_AT]
    if _is_keras_zip(path):
        cases.append(_bytes_case("file-zip-directory", "file-zip", lambda d: d[: d.rfind(b"PK\x05\x06")] + bytes(22)))
        cases += hostile_zip_cases()
    else:
        cases += hostile_hdf5_cases()
    return cases


def hostile_hdf5_cases() -> list[Case]:
    """An external link and an external-storage dataset that reach outside the model file."""

    def external_link(src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)
        with h5py.File(dst, "r+") as handle:
            root = handle["model_weights"] if "model_weights" in handle else handle
            first = next(iter(root))
            root[f"{first}/stolen"] = h5py.ExternalLink("/etc/passwd", "/")

    def external_storage(src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)
        with h5py.File(dst, "r+") as handle:
            root = handle["model_weights"] if "model_weights" in handle else handle
            first = next(iter(root))
            root[first].create_dataset("outside", shape=(16,), dtype="u1", external=[("/etc/hostname", 0, 16)])

    return [Case("hostile-hdf5-external-link", "hostile", external_link),
            Case("hostile-hdf5-external-dataset", "hostile", external_storage)]


def hostile_zip_cases() -> list[Case]:
    """A `../` entry, an absolute entry, a zip bomb, config.json that is not JSON or nested absurdly
    deep, and no weights."""

    def add_entry(name: str, data: bytes):
        def write(src: Path, dst: Path) -> None:
            shutil.copyfile(src, dst)
            with zipfile.ZipFile(dst, "a", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(name, data)
        return write

    def replace(entry: str, data: bytes | None):
        return lambda src, dst: _rewrite_zip(src, dst, {entry: data})

    bomb = bytes(256 * 2**20)  # 256 MiB of zeros deflate to ~250 kB: declared far beyond what the file holds
    return [Case("hostile-zip-parent-entry", "hostile", add_entry("../../evil.txt", b"owned")),
            Case("hostile-zip-absolute-entry", "hostile", add_entry("/tmp/evil.txt", b"owned")),
            Case("hostile-zip-bomb", "hostile", add_entry("assets/bomb.bin", bomb)),
            Case("hostile-zip-config-not-json", "hostile", replace(KERAS_CONFIG, b"{not json")),
            Case("hostile-zip-config-deep", "hostile", replace(KERAS_CONFIG, b"[" * 100_000 + b"]" * 100_000)),
            Case("hostile-zip-no-weights", "hostile", replace(KERAS_WEIGHTS, None))]


def all_cases(path: Path) -> list[Case]:
    """Every case for the model file at `path`, in a fixed order."""
    return config_cases(path) + model_cases(path) + weight_cases(path) + file_cases(path)


def sample(cases: list[Case], count: int, seed: int) -> list[Case]:
    """`count` of `cases` drawn with `seed` (all of them where there are fewer), every kind represented."""
    if count >= len(cases):
        return list(cases)
    rng = random.Random(seed)
    by_kind: dict[str, list[Case]] = {}
    for case in cases:
        by_kind.setdefault(case.kind, []).append(case)
    chosen = {rng.choice(group).id for group in by_kind.values()}  # one of each kind first
    rest = [case for case in cases if case.id not in chosen]
    chosen |= {case.id for case in rng.sample(rest, max(count - len(chosen), 0))}
    return [case for case in cases if case.id in chosen]
