"""Models of several inputs or several outputs, carried through the checks as one array.

A check set, a reference and a backend's result are arrays of one row a sample (`checkset`,
`verifier.backends.Outputs`): batched, sliced, joined and stored as such by every stage. A model with
several inputs (an image and its metadata) or several outputs (a class head and a box head) keeps that
form: each input (or output) flattened and joined along the row, in the model's order — `Layout.pack` —
and split back into the model's own arrays only where a model is called — `Layout.unpack`. One input
(or output) is kept as it is: a single-input model's files and arrays are unchanged.

Numpy only: the TensorFlow process and the torch side both read it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    """The names and one-sample shapes (no batch dimension) of a model's inputs or outputs, in its order."""

    names: tuple[str, ...]
    shapes: tuple[Shape, ...]

    @classmethod
    def of(cls, names: Sequence[str], shapes: Sequence[Sequence[int]]) -> Layout:
        return cls(tuple(str(name) for name in names), tuple(tuple(int(d) for d in shape) for shape in shapes))

    @property
    def several(self) -> bool:
        return len(self.names) > 1

    def sizes(self) -> list[int]:
        return [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]

    def pack(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """The model's arrays (one per entry, batch first) as one: the one array itself, or each flattened
        and joined along the row — in float64 where one of them is (the float64 proof's outputs: rounding them
        to float32 would leave the proof nothing to see), else float32 (integer ids are whole numbers: exact
        in float32 below 2²⁴)."""
        arrays = [np.asarray(a) for a in arrays]
        if len(arrays) != len(self.names):
            raise ValueError(f"{len(arrays)} arrays for the {len(self.names)} of {', '.join(self.names)}")
        if not self.several:
            return arrays[0]
        rows = len(arrays[0])
        dtype = np.float64 if any(a.dtype == np.float64 for a in arrays) else np.float32
        return np.concatenate([a.astype(dtype, copy=False).reshape(rows, -1) for a in arrays], axis=1)

    def unpack(self, batch: np.ndarray) -> list[np.ndarray]:
        """`pack` undone: the model's arrays, each of its own shape (views of `batch`)."""
        if not self.several:
            return [batch]
        rows = len(batch)
        flat = batch.reshape(rows, -1)
        ends = np.cumsum(self.sizes())
        return [flat[:, end - size:end].reshape(rows, *shape) for end, size, shape in zip(ends, self.sizes(), self.shapes, strict=True)]

    def parts(self) -> list[tuple[str, slice]]:
        """(name, columns of a packed row) of each entry: where each output's values lie in a packed result."""
        ends = np.cumsum(self.sizes())
        return [(name, slice(int(end - size), int(end))) for name, end, size in zip(self.names, ends, self.sizes(), strict=True)]

    def describe(self) -> str:
        """`image (16, 16, 3), meta (5,)`: for the stages' lines and the report."""
        return ", ".join(f"{name} {shape}" for name, shape in zip(self.names, self.shapes, strict=True))


# What a converted model is traced, exported and compiled for: one input's shape, or the Layout of several.
Sample = "Shape | Layout"


def split(batch: np.ndarray, layout: Layout | None) -> list[np.ndarray]:
    """A batch as the model's arguments: `layout.unpack`, or the batch alone where `layout` is None (one input)."""
    return layout.unpack(batch) if layout is not None else [batch]


# Where a stored reference keeps its layouts (JSON), for a model of several inputs or outputs only.
INPUTS_KEY, OUTPUTS_KEY = "layout/inputs", "layout/outputs"


def stored(inputs: Layout, outputs: Layout | None) -> dict[str, np.ndarray]:
    """The arrays under which a reference file keeps `inputs` and `outputs` (those of several entries)."""
    arrays = {}
    for key, layout in ((INPUTS_KEY, inputs), (OUTPUTS_KEY, outputs)):
        if layout is not None and layout.several:
            arrays[key] = np.array(sample_json(layout))
    return arrays


def read_stored(arrays, key: str) -> Layout | None:
    """The layout a reference file keeps under `key` (`stored`); None where it keeps none (one entry)."""
    return sample_from_json(str(arrays[key])) if key in arrays else None


def sample_json(sample) -> str:
    """`sample` (one input's shape, or a `Layout` of several) as JSON, for a child process or a cache key:
    one input's shape is the list it always was."""
    if isinstance(sample, Layout):
        return json.dumps({"names": list(sample.names), "shapes": [list(s) for s in sample.shapes]})
    return json.dumps(list(sample))


def sample_from_json(text: str):
    """`sample_json` undone."""
    raw = json.loads(text)
    return Layout.of(raw["names"], raw["shapes"]) if isinstance(raw, dict) else tuple(raw)


def shapes_of(sample) -> tuple[Shape, ...]:
    """The one-sample shapes of every input, from one input's shape or a `Layout` of several."""
    return sample.shapes if isinstance(sample, Layout) else (tuple(sample),)
