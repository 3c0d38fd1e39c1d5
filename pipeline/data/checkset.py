"""The inputs every backend is compared on: the test images and seeded random batches.

Numpy only: the TensorFlow worker and the torch side both import this, and must build the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.data.feeds import Layout

# Random inputs exercise batch-size-dependent code paths (batch 1 and an odd size) and the whole
# input range, which real images do not cover evenly.
RANDOM_BATCH_SIZES = (1, 7, 256)
RANDOM_SEED = 20261126
# The ranges random inputs are drawn from where the model does not state its own (a Rescaling or
# Normalization layer, `keras_file.graph.input_ranges`) and the user gives none (--input-range): the
# three that image models are trained on. A model driven far outside its range is checked there too,
# but judged against its own float32 noise (`verifier.precision`), which grows with the range.
DEFAULT_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))

Range = tuple[float, float]

# The length at which an input dimension the model leaves open (`None`: token ids or steps of any
# length) is checked, converted and exported. A fixed choice, said in the onnx stage's line: the
# converted models take that length. Long enough for a recurrence to carry state over many steps.
OPEN_DIMENSION_LENGTH = 32
# The lengths at which such a model is checked besides, on the backends that take any length (the native
# model; `verify._other_lengths`): one shorter (odd, so a padded tail falls differently) and one longer.
OTHER_LENGTHS = (9, 50)
# A set at another length: one batch of this size per range, named `length_set_name`.
OTHER_LENGTH_BATCH = 7
# The key of a Keras reference file saying why it holds no sets at an other length (Keras refused to run there).
LENGTHS_UNAVAILABLE_KEY = "lengths_unavailable"


def fill_open(shape, length: int = OPEN_DIMENSION_LENGTH) -> tuple[int, ...]:
    """One sample's shape with every dimension left open (None) set to `length`."""
    return tuple(length if dim is None else int(dim) for dim in shape)


def length_set_name(length: int, name: str) -> str:
    """`length<L>_<name>`: check set `name` drawn with the open dimensions at `length` (`OTHER_LENGTHS`). Kept
    apart from the check sets (`is_length_set`): the artifacts converted at `OPEN_DIMENSION_LENGTH` take no other."""
    return f"length{length}_{name}"


def is_length_set(name: str) -> bool:
    return name.startswith("length")


def length_of(name: str) -> int:
    """The length of a set named by `length_set_name`."""
    return int(name.split("_", 1)[0].removeprefix("length"))


def checks_other_lengths(input_shapes, outputs: int) -> bool:
    """Whether a model is checked at `OTHER_LENGTHS` too: one input leaving a dimension open (one-sample `input_shapes`,
    None where open) and one output. Several are packed by a layout of one length (`feeds`): those are checked at
    `OPEN_DIMENSION_LENGTH` only."""
    shapes = [tuple(shape) for shape in input_shapes]
    return len(shapes) == 1 and None in shapes[0] and outputs == 1


def length_sets(open_shape, length: int, ranges: tuple[Range, ...] = DEFAULT_RANGES,
                tokens: dict[str, TokenIds] | None = None) -> dict[str, np.ndarray]:
    """The sets of a model whose one input's one-sample `open_shape` leaves dimensions open (None), at `length`: one
    batch of `OTHER_LENGTH_BATCH` per range, drawn as `random_sets` draws them, named `length_set_name`."""
    layout = Layout.of(["input"], [fill_open(open_shape, length)])
    return {length_set_name(length, name): inputs for name, inputs in random_sets(layout, ranges, (OTHER_LENGTH_BATCH,), tokens=tokens).items()}


# The most memory one copy of the check inputs and outputs may take (float32): verify holds Keras's float32
# and float64 outputs and every backend's at once, and the layer comparison every layer's output of each,
# about ten copies in all. A model of large inputs is checked on fewer samples (`random_sizes`,
# `layer_inputs`; the report names the sizes): a 896×896 autoencoder takes 19 MB a sample, in and out.
# ResNet8 (12 KB a sample) and the zoo's models (0.6 MB at 224 px) keep every size.
CHECK_COPY_BYTES = 1 << 30


def sample_bytes(shapes) -> int:
    """The float32 bytes of one sample of tensors of one-sample `shapes` (open dimensions at their check
    length, `fill_open`): the same for a float64 twin, which checks the same sets."""
    return 4 * sum(int(np.prod(fill_open(shape), dtype=np.int64)) for shape in shapes)


def random_sizes(per_sample: int, n_ranges: int) -> tuple[int, ...]:
    """The random sets' batch sizes for a model of `per_sample` bytes a sample (inputs and outputs,
    `sample_bytes`) drawn over `n_ranges` ranges: `RANDOM_BATCH_SIZES` while they fit `CHECK_COPY_BYTES`,
    the last cut to what fits (at least a batch of 1)."""
    room = CHECK_COPY_BYTES // max(per_sample, 1) // max(n_ranges, 1)
    sizes: list[int] = []
    for size in RANDOM_BATCH_SIZES:
        take = min(size, room - sum(sizes))
        if take < 1 or (sizes and take <= sizes[-1]):  # each size once: the sets are named by it
            break
        sizes.append(take)
    return tuple(sizes) or (1,)


def set_name(size: int, value_range: Range) -> str:
    """`random_<size>_<lo>_<hi>`: the name of the random check set of one batch size and range."""
    return f"random_{size}_{value_range[0]:g}_{value_range[1]:g}"
# Batch size for running real images through a backend: large enough to be fast, and the size
# MLPerf Tiny's own evaluation uses.
TEST_BATCH_SIZE = 256


@dataclass(frozen=True)
class TokenIds:
    """An input of token ids (it feeds an `Embedding`): random floats there would index out of its table.
    Drawn as whole numbers in [0, vocabulary); with `mask_zero`, 0 is padding: ids from 1 and a zero tail."""
    vocabulary: int
    mask_zero: bool = False

    def packed(self) -> tuple[int, bool]:
        """As a `KerasJob` carries it (`common` cannot import this module): `unpack` reverses it."""
        return (self.vocabulary, self.mask_zero)

    @classmethod
    def unpack(cls, packed: tuple[int, bool] | None) -> TokenIds | None:
        return cls(*packed) if packed is not None else None

    @property
    def range(self) -> Range:
        return (0.0, float(self.vocabulary - 1))

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Token ids of `shape` (batch first), as float32 whole numbers: the model's input is converted as float."""
        ids = rng.integers(1 if self.mask_zero else 0, self.vocabulary, size=shape)
        if self.mask_zero and len(shape) == 2:  # a padded tail of 0 … half the length, none on the first row
            tails = rng.integers(0, shape[1] // 2 + 1, size=shape[0])
            tails[0] = 0
            ids[np.arange(shape[1]) >= shape[1] - tails[:, None]] = 0
        return ids.astype(np.float32)


def random_batches(input_shape: tuple[int, ...], ranges: tuple[Range, ...] = DEFAULT_RANGES, sizes=RANDOM_BATCH_SIZES,
                   seed: int = RANDOM_SEED, tokens: TokenIds | None = None) -> dict[str, np.ndarray]:
    """Seeded uniform float32 inputs, one batch per range and size, keyed `set_name(size, range)`.

    Args:
        input_shape: one sample's shape, without the batch dimension (e.g. (32, 32, 3)).
        ranges: the (low, high) ranges to draw from.
        sizes: the batch sizes.
        seed: numpy seed; the same seed gives the same batches in every process.
        tokens: the input is token ids: `ranges` give way to the ids' own (`TokenIds.draw`).
    """
    rng = np.random.default_rng(seed)
    if tokens is not None:
        return {set_name(size, tokens.range): tokens.draw(rng, (size, *input_shape)) for size in sizes}
    return {
        set_name(size, (lo, hi)): rng.uniform(lo, hi, size=(size, *input_shape)).astype(np.float32)
        for lo, hi in ranges for size in sizes
    }


def random_sets(layout: Layout, ranges: tuple[Range, ...] = DEFAULT_RANGES, sizes=RANDOM_BATCH_SIZES, seed: int = RANDOM_SEED,
                tokens: dict[str, TokenIds] | None = None) -> dict[str, np.ndarray]:
    """`random_batches` for every input of `layout`, packed (`feeds.Layout.pack`), keyed as `random_batches`
    keys them. One input is drawn exactly as `random_batches` draws it (its token ids: the one entry of
    `tokens`, whatever its name). Of several, each is drawn with its own seed — from `ranges`, or as the
    token ids `tokens` names it by — and a set of (size, range) joins each input's set of that size and
    range (a token input's of that size)."""
    tokens = tokens or {}
    if not layout.several:
        return random_batches(layout.shapes[0], ranges, sizes, seed, next(iter(tokens.values()), None))
    drawn = [random_batches(shape, ranges, sizes, seed + i, tokens.get(name))
             for i, (name, shape) in enumerate(zip(layout.names, layout.shapes, strict=True))]
    own = [tokens.get(name) for name in layout.names]
    if all(own):
        ranges = (own[0].range,)
    sets = {}
    for lo, hi in ranges:
        for size in sizes:
            parts = [sets_of[set_name(size, kind.range if kind else (lo, hi))] for sets_of, kind in zip(drawn, own, strict=True)]
            sets[set_name(size, (lo, hi))] = layout.pack(parts)
    return sets


def choose_ranges(stated: tuple[Range, ...] | None, given: Range | None) -> tuple[Range, ...]:
    """The ranges to draw random inputs from: the user's (--input-range), else the model's own, else DEFAULT_RANGES."""
    return (given,) if given is not None else (stated or DEFAULT_RANGES)


def ranges_of(set_names) -> list[Range]:
    """The ranges behind the random check sets named `set_names` (see `set_name`), lowest first."""
    found: list[Range] = []
    for name in set_names:
        parts = name.split("_")
        if name.startswith("random_") and len(parts) == 4 and (float(parts[2]), float(parts[3])) not in found:
            found.append((float(parts[2]), float(parts[3])))
    return sorted(found)


def parse_range(text: str) -> Range:
    """`LO,HI` (as --input-range and INPUT_RANGE= take it) as a range.

    Raises:
        BadInput: not two numbers with LO < HI.
    """
    try:
        lo, hi = (float(part) for part in text.split(","))
    except ValueError:
        raise BadInput(f"--input-range {text!r} is not LO,HI (two numbers, e.g. 0,1)") from None
    if not lo < hi or not np.isfinite([lo, hi]).all():
        raise BadInput(f"--input-range {text!r}: LO must be below HI, both finite")
    return lo, hi


USER_SET = "user"  # the check set a user gives with --inputs


def load_user_inputs(path: Path, layout: Layout | tuple[int, ...]) -> np.ndarray:
    """A user's sample inputs, as float32 of shape (N, *shape) — packed (`feeds.Layout.pack`) for a model of
    several inputs: a `.npy` file for one input, a `.npz` of one array per input name for several.

    One sample without the batch dimension is accepted as a batch of one. Read with `allow_pickle=False`:
    a file holding Python objects is refused, never unpickled.

    Raises:
        BadInput: the file is missing, not plain numeric arrays, of another shape, or not finite.
    """
    layout = layout if isinstance(layout, Layout) else Layout.of(["input"], [layout])
    path = Path(path)
    wanted = "; ".join(f"{name}: (N, {', '.join(map(str, shape))})" for name, shape in zip(layout.names, layout.shapes, strict=True))
    kind = f"a .npz of one array per input ({wanted})" if layout.several else f"a .npy file of shape (N, {', '.join(map(str, layout.shapes[0]))})"
    if not path.is_file():
        raise BadInput(f"--inputs {path} does not exist; give {kind}")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {key: loaded[key] for key in loaded.files} if isinstance(loaded, np.lib.npyio.NpzFile) else {None: loaded}
    except (ValueError, OSError) as exc:
        raise BadInput(f"--inputs {path} is not a plain numeric .npy/.npz file ({' '.join(str(exc).split())[:200]}); "
                       "save it with numpy.save(path, array) or numpy.savez(path, name=array, ...)") from exc
    if layout.several:
        missing = [name for name in layout.names if name not in arrays]
        if missing:
            raise BadInput(f"--inputs {path} has no array for input {', '.join(missing)}; give {kind}")
        parts = [_user_array(path, arrays[name], shape, name) for name, shape in zip(layout.names, layout.shapes, strict=True)]
        if len({len(part) for part in parts}) > 1:
            raise BadInput(f"--inputs {path}: the inputs have different numbers of samples ({', '.join(str(len(p)) for p in parts)})")
        return layout.pack(parts)
    if len(arrays) != 1:
        raise BadInput(f"--inputs {path} holds {len(arrays)} arrays; the model has one input: give {kind}")
    return _user_array(path, next(iter(arrays.values())), layout.shapes[0])


def _user_array(path: Path, array, shape: tuple[int, ...], name: str | None = None) -> np.ndarray:
    """One input's array of a user's file as float32 (N, *shape); BadInput where it is not that."""
    which = f" ({name})" if name else ""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise BadInput(f"--inputs {path}{which} holds {getattr(array, 'dtype', type(array))} data; numbers are needed")
    if tuple(array.shape) == tuple(shape):
        array = array[None]
    if tuple(array.shape[1:]) != tuple(shape) or len(array) == 0:
        raise BadInput(f"--inputs {path}{which} has shape {tuple(array.shape)}; the model takes (N, {', '.join(map(str, shape))})")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise BadInput(f"--inputs {path}{which} contains NaN or infinite values")
    return array


def batch_size_of(name: str) -> int:
    """The batch size a check set is run at: its own size for a random set (`set_name`), else TEST_BATCH_SIZE."""
    return int(name.split("_")[1]) if name.startswith("random_") else TEST_BATCH_SIZE


def batches(array: np.ndarray, batch_size: int):
    """Consecutive slices of `array` of at most `batch_size` rows."""
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


# The float64 proof runs on the first PROOF_SAMPLES of each check set. A different function shows on
# (almost) any input at 1e-4 or more, eleven orders of magnitude above float64 rounding, so these find it
# as surely as the whole set does; and float64 runs on the CPU without oneDNN, 10× float32's time or more
# (77 of the 115 s MobileNetV3Small's verify took on 792 inputs). The float32 checks keep every input.
PROOF_SAMPLES = 64


def proof_subset(sets: dict):
    """The first PROOF_SAMPLES rows of every check set in `sets` (arrays, or anything that slices like one)."""
    return {name: value[:PROOF_SAMPLES] for name, value in sets.items()}


# Layer-by-layer comparison keeps every layer's output of every backend in memory (~1 MB an image for
# ResNet8, ~110 MB on disk for 107 images), so it runs on the first test images plus 7 random inputs.
LAYER_TEST_IMAGES = 100


LAYER_RANDOM_PER_RANGE = 7


def layer_inputs(layout: Layout, test_images: np.ndarray | None, ranges: tuple[Range, ...] = DEFAULT_RANGES,
                 tokens: dict[str, TokenIds] | None = None, per_sample: int = 0) -> np.ndarray:
    """The inputs of the layer-by-layer comparison: LAYER_TEST_IMAGES test images (if any) and
    LAYER_RANDOM_PER_RANGE seeded random ones per range (`tokens`: see `random_sets`), packed as
    `random_sets` packs them; fewer of each where every layer's outputs take `per_sample` bytes a sample
    and all would pass `CHECK_COPY_BYTES` (half the room to the test images, at least one random input per range)."""
    room = CHECK_COPY_BYTES // max(per_sample, 1)
    tests = 0 if test_images is None else min(LAYER_TEST_IMAGES, len(test_images))
    per_range = LAYER_RANDOM_PER_RANGE
    if tests + per_range * len(ranges) > room:
        tests = min(tests, room // 2)
        per_range = max(1, min(per_range, (room - tests) // max(len(ranges), 1)))
    random = np.concatenate(list(random_sets(layout, ranges, sizes=(per_range,), tokens=tokens).values()))
    if not tests:
        return random
    return np.concatenate([test_images[:tests].astype(np.float32), random])
