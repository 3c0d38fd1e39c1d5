"""The inputs every backend is compared on: the test images and seeded random batches.

Numpy only: the TensorFlow worker and the torch side both import this, and must build the same inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.common.errors import BadInput

# Random inputs exercise batch-size-dependent code paths (batch 1 and an odd size) and the whole
# input range, which real images do not cover evenly.
RANDOM_BATCH_SIZES = (1, 7, 256)
RANDOM_SEED = 20261126
PIXEL_MAX = 255.0  # the model takes raw pixel values 0..255 (../shared/NOTES.md)
# Batch size for running real images through a backend: large enough to be fast, and the size
# MLPerf Tiny's own evaluation uses.
TEST_BATCH_SIZE = 256


def random_batches(input_shape: tuple[int, ...], sizes=RANDOM_BATCH_SIZES, seed: int = RANDOM_SEED) -> dict[str, np.ndarray]:
    """Seeded uniform float32 inputs over 0..255, one batch per size, keyed `random_<size>`.

    Args:
        input_shape: one sample's shape, without the batch dimension (e.g. (32, 32, 3)).
        sizes: the batch sizes.
        seed: numpy seed; the same seed gives the same batches in every process.
    """
    rng = np.random.default_rng(seed)
    return {
        f"random_{size}": rng.uniform(0.0, PIXEL_MAX, size=(size, *input_shape)).astype(np.float32)
        for size in sizes
    }


USER_SET = "user"  # the check set a user gives with --inputs


def load_user_inputs(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """A user's sample inputs from a `.npy` file, as float32 of shape (N, *input_shape).

    One sample without the batch dimension is accepted as a batch of one. Read with
    `allow_pickle=False`: a .npy holding Python objects is refused, never unpickled.

    Raises:
        BadInput: the file is missing, not a plain numeric .npy, of another shape, or not finite.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"--inputs {path} does not exist; give a .npy file of shape (N, {', '.join(map(str, input_shape))})")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BadInput(f"--inputs {path} is not a plain numeric .npy file ({' '.join(str(exc).split())[:200]}); "
                       "save it with numpy.save(path, array)") from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise BadInput(f"--inputs {path} holds {getattr(array, 'dtype', type(array))} data; numbers are needed")
    if tuple(array.shape) == tuple(input_shape):
        array = array[None]
    if tuple(array.shape[1:]) != tuple(input_shape) or len(array) == 0:
        raise BadInput(f"--inputs {path} has shape {tuple(array.shape)}; the model takes (N, {', '.join(map(str, input_shape))})")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise BadInput(f"--inputs {path} contains NaN or infinite values")
    return array


def batch_size_of(set_name: str) -> int:
    """The batch size a check set is run at: its own size for `random_<n>`, else TEST_BATCH_SIZE."""
    return int(set_name.split("_", 1)[1]) if set_name.startswith("random_") else TEST_BATCH_SIZE


def batches(array: np.ndarray, batch_size: int):
    """Consecutive slices of `array` of at most `batch_size` rows."""
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


# Layer-by-layer comparison keeps every layer's output of every backend in memory (~1 MB an image for
# ResNet8, ~110 MB on disk for 107 images), so it runs on the first test images plus 7 random inputs.
LAYER_TEST_IMAGES = 100


def layer_inputs(input_shape: tuple[int, ...], test_images: np.ndarray | None) -> np.ndarray:
    """The inputs of the layer-by-layer comparison: LAYER_TEST_IMAGES test images (if any) and 7 seeded random ones."""
    random = random_batches(input_shape, sizes=(7,))["random_7"]
    if test_images is None:
        return random
    return np.concatenate([test_images[:LAYER_TEST_IMAGES].astype(np.float32), random])
