"""Stage 0: put the model and the CIFAR-10 test set under the data folder, checksum-verified.

Each file is taken from an offline mirror folder if it holds it (layout as in ../shared/README.md:
`models/...`, `data/...`), otherwise downloaded from its canonical source. A file that fails its
SHA-256 is never used or kept: it is written to a temporary name, checked, then renamed into place.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.checksums import sha256_of
from pipeline.common.errors import BadInput, ChecksumMismatch
from pipeline.data import cifar

MLPERF_TINY = "https://raw.githubusercontent.com/mlcommons/tiny/1bbcf37fac1b0c4be0bada2d7ddfb1e0bb4cb6a0"
CIFAR10_BINARY_TARBALL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


@dataclass(frozen=True)
class Asset:
    """One file of the data folder: where it lies in a mirror and in `data/`, and how to get it."""

    mirror_path: str  # relative to the mirror root
    local_path: str  # relative to the data folder
    sha256: str
    url: str
    tar_member: str | None = None  # set when `url` is a tarball holding the file


ASSETS = (
    Asset(
        "models/pretrainedResnet.h5",
        "models/pretrainedResnet.h5",
        "5f938a8eea605438cc7360aa13c987bc6d7bd0c8d931b2917361ae7ae4eeda2f",
        f"{MLPERF_TINY}/benchmark/training/image_classification/trained_models/pretrainedResnet.h5",
    ),
    Asset(
        "models/ad01.h5",
        "models/ad01.h5",
        "651a62de1b7facd68d1269373992a2d09ffd28e6a816935d4834fcc558bde512",
        f"{MLPERF_TINY}/benchmark/training/anomaly_detection/trained_models/ad01.h5",
    ),
    Asset(
        f"data/{cifar.BINARY_TEST_BATCH}",
        cifar.BINARY_TEST_BATCH,
        "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
        CIFAR10_BINARY_TARBALL,
        tar_member=cifar.BINARY_TEST_BATCH,  # the tarball holds the folder as the data folder does
    ),
    Asset(
        f"data/{cifar.BINARY_META}",
        cifar.BINARY_META,
        "558e74b5e208382e186da55784b4bac2cd52e558448e1b5800990fdb28ed8033",
        CIFAR10_BINARY_TARBALL,
        tar_member=cifar.BINARY_META,
    ),
    Asset(
        f"data/{cifar.PERF_SUBSET_FILE}",
        cifar.PERF_SUBSET_FILE,
        "3bd4a88eeb4c50fad652d0f24c8af13bc9219ba2878aea47c6536bfbeb43024d",
        f"{MLPERF_TINY}/benchmark/training/image_classification/perf_samples_idxs.npy",
    ),
)


@dataclass
class FetchResult:
    """What `run` did for each file: 'present', 'mirror' or 'download'."""

    sources: dict[str, str] = field(default_factory=dict)


def run(data: Path, mirror: Path | None, allow_download: bool = True, progress: bool = True) -> FetchResult:
    """Make every file of `ASSETS` present and verified under `data`.

    Args:
        data: the data folder to fill (created if missing).
        mirror: an offline mirror folder, or None; used first wherever it holds the file.
        allow_download: when False, a file missing from `data` and the mirror is an error
            (tests run offline this way).
        progress: show a progress bar while downloading.

    Raises:
        ChecksumMismatch: a mirror or downloaded file is not the published one (it is not kept).
        BadInput: a file is nowhere to be had.
    """
    result = FetchResult()
    tarball_cache: dict[str, bytes] = {}
    for asset in ASSETS:
        target = Path(data) / asset.local_path
        if target.is_file() and sha256_of(target) == asset.sha256:
            result.sources[asset.local_path] = "present"
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = Path(mirror) / asset.mirror_path if mirror else None
        if source is not None and source.is_file():
            _install(target, asset, lambda tmp, s=source: shutil.copyfile(s, tmp), origin=str(source))
            result.sources[asset.local_path] = "mirror"
        elif allow_download:
            _install(target, asset, lambda tmp, a=asset: _download_to(a, tmp, tarball_cache, progress), origin=asset.url)
            result.sources[asset.local_path] = "download"
        else:
            raise BadInput(
                f"{asset.mirror_path} is neither in {data} nor in the mirror {mirror}; "
                "point MIRROR at a folder laid out like ../shared, or allow downloads"
            )
    return result


def _install(target: Path, asset: Asset, write, origin: str) -> None:
    """Write through `write(tmp_path)`, check the SHA-256, then rename into place (or delete)."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb"):
            pass
        write(tmp)
        actual = sha256_of(tmp)
        if actual != asset.sha256:
            raise ChecksumMismatch(
                f"{origin} has SHA-256 {actual[:16]}…, expected {asset.sha256[:16]}…: the file is corrupt or not "
                "the published one; it was not kept — replace it with the original"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _download_to(asset: Asset, tmp: Path, tarball_cache: dict[str, bytes], progress: bool) -> None:
    payload = tarball_cache.get(asset.url)
    if payload is None:
        payload = _download(asset.url, progress)
        if asset.tar_member:
            tarball_cache[asset.url] = payload
    if asset.tar_member:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
            member = archive.extractfile(asset.tar_member)
            if member is None:
                raise BadInput(f"{asset.url} does not hold {asset.tar_member}")
            payload = member.read()
    tmp.write_bytes(payload)


def _download(url: str, progress: bool) -> bytes:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks = []
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    chunks.append(chunk)
                    bar.update(len(chunk))
            return b"".join(chunks)
    except OSError as exc:
        raise BadInput(f"could not download {url} ({exc}); without internet, set MIRROR to a local mirror folder") from exc
