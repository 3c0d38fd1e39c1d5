"""Read the CIFAR-10 test set in either on-disk form users have, without running code from it.

- binary version: `cifar-10-batches-bin/test_batch.bin`, records of 1 label byte + 3072 pixel bytes
  (1024 R, 1024 G, 1024 B, row-major);
- python version: `cifar-10-batches-py/test_batch`, a pickle (as torchvision and Keras download it),
  read with an unpickler that resolves nothing but numpy's array reconstruction — a pickle from an
  unknown place cannot run code through it.

Images come back as NHWC uint8 (N, 32, 32, 3), the model's own layout; labels as int64 (N,).
"""

from __future__ import annotations

import codecs
import functools
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.common.paths import DEFAULT_DATA

INPUT_SHAPE = (32, 32, 3)  # one image, NHWC: what a model must take for the test images to join its check set
HEIGHT, WIDTH, CHANNELS = INPUT_SHAPE
IMAGE_BYTES = HEIGHT * WIDTH * CHANNELS  # stored planar: all of R, then G, then B, each row-major
RECORD_BYTES = 1 + IMAGE_BYTES  # a label byte, then the image
NUM_CLASSES = 10
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The layout of a data folder (as the mirror's data/ lays it out, and as `fetch` fills it).
BINARY_TEST_BATCH = "cifar-10-batches-bin/test_batch.bin"
BINARY_META = "cifar-10-batches-bin/batches.meta.txt"
PYTHON_TEST_BATCH = "cifar-10-batches-py/test_batch"
PERF_SUBSET_FILE = "perf_samples_idxs.npy"


@dataclass(frozen=True)
class TestSet:
    """The test images, their labels, class names, and the MLPerf Tiny subset indices if found."""

    images: np.ndarray  # (N, 32, 32, 3) uint8, NHWC
    labels: np.ndarray  # (N,) int64
    class_names: tuple[str, ...]
    source: Path  # the file the images came from
    perf_subset: np.ndarray | None = None  # int indices into images

    def __len__(self) -> int:
        return len(self.labels)


def locate(data: Path) -> Path:
    """Find the test-set file under `data`: the data folder, or a batches folder itself.

    Raises:
        BadInput: neither form is there.
    """
    data = Path(data)
    if not data.is_dir():
        raise BadInput(f"data folder {data} does not exist; run `make fetch` or pass --data DIR holding cifar-10-batches-bin/")
    candidates = [
        data / BINARY_TEST_BATCH,
        data / Path(BINARY_TEST_BATCH).name,
        data / PYTHON_TEST_BATCH,
        data / Path(PYTHON_TEST_BATCH).name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BadInput(
        f"no CIFAR-10 test set in {data}: expected {BINARY_TEST_BATCH} or "
        f"{PYTHON_TEST_BATCH}; run `make fetch` or pass --data"
    )


def resolve(data: Path | None) -> tuple[Path | None, str | None]:
    """The data folder if it holds a readable test set, with no note; (None, note) when `data` is the
    default folder and holds none: the stages then compare on random inputs only. None stays None.

    The whole test set is read here (a fraction of a second, kept for the process), so that a
    truncated file stops a stage before it writes anything.

    Raises:
        BadInput: a folder the user named holds no readable test set.
    """
    if data is None:
        return None, None
    try:
        locate(data)
    except BadInput:
        if Path(data) != DEFAULT_DATA:
            raise
        return None, f"no CIFAR-10 test set under {data}; comparing on random inputs only (run `make fetch`)"
    load(data)
    return data, None


def load(data: Path) -> TestSet:
    """Load the CIFAR-10 test set found under `data` (see `locate`); read once per file and process."""
    path = locate(data)
    stat = path.stat()
    return _load(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _load(path: Path, _mtime_ns: int, _size: int) -> TestSet:
    """The test set in `path`; the file's time and size are part of the cache key, so a changed file is read again."""
    if path.suffix == ".bin":
        images, labels = _read_binary(path)
        names = _read_meta(path.parent / Path(BINARY_META).name)
    else:
        images, labels = _read_python(path)
        names = CLASS_NAMES
    return TestSet(images, labels, names, path, _find_perf_subset(path, len(labels)))


def _read_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise BadInput(
            f"{path} has {raw.size} bytes, not a whole number of {RECORD_BYTES}-byte CIFAR-10 records: "
            "it is truncated or not a CIFAR-10 batch; fetch it again (`make fetch`)"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    images = _planar_to_nhwc(records[:, 1:])
    _check_labels(labels, path)
    return np.ascontiguousarray(images), labels


def _read_meta(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return CLASS_NAMES
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    return names if len(names) == NUM_CLASSES else CLASS_NAMES


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only what a pickled numpy array needs; anything else is refused, so no code runs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles of bytes (protocol 2) rebuild them with codecs.encode(str, 'latin1'): a pure function.
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file") from None


def _read_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path} is not a readable CIFAR-10 python batch ({exc}); fetch it again") from exc
    if data.ndim != 2 or data.shape != (len(labels), IMAGE_BYTES):
        raise BadInput(f"{path} holds data of shape {data.shape} for {len(labels)} labels; expected (N, {IMAGE_BYTES})")
    _check_labels(labels, path)
    return np.ascontiguousarray(_planar_to_nhwc(data)), labels


def _planar_to_nhwc(rows: np.ndarray) -> np.ndarray:
    """(N, IMAGE_BYTES) planar RGB rows as (N, H, W, C) images."""
    return rows.reshape(-1, CHANNELS, HEIGHT, WIDTH).transpose(0, 2, 3, 1)


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise BadInput(f"{path} has labels outside 0..9: not a CIFAR-10 batch")


def _find_perf_subset(path: Path, n_images: int) -> np.ndarray | None:
    """MLPerf Tiny's subset file, next to the batches folder or in it; None if absent."""
    for folder in (path.parent.parent, path.parent):
        candidate = folder / PERF_SUBSET_FILE
        if candidate.is_file():
            indices = np.load(candidate, allow_pickle=False).astype(np.int64).ravel()
            if indices.size and (indices.min() < 0 or indices.max() >= n_images):
                raise BadInput(f"{candidate} indexes past the {n_images} test images")
            return indices
    return None
