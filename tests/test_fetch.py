import dataclasses
import hashlib

import pytest

from pipeline.common.checksums import sha256_of
from pipeline.data import fetch
from pipeline.common.errors import BadInput, ChecksumMismatch


@pytest.fixture
def fake_assets(tmp_path, monkeypatch):
    """Two small files in a mirror laid out like ../shared, with ASSETS pointing at them."""
    mirror = tmp_path / "mirror"
    (mirror / "models").mkdir(parents=True)
    (mirror / "data").mkdir()
    contents = {"models/m.h5": b"model bytes", "data/x.bin": b"data bytes"}
    assets = []
    for rel, payload in contents.items():
        (mirror / rel).write_bytes(payload)
        local = rel.split("/", 1)[1] if rel.startswith("data/") else rel
        assets.append(fetch.Asset(rel, local, hashlib.sha256(payload).hexdigest(), "http://invalid.example/" + rel))
    monkeypatch.setattr(fetch, "ASSETS", tuple(assets))
    return mirror, assets


def test_copies_from_mirror_then_keeps(fake_assets, tmp_path):
    mirror, assets = fake_assets
    data = tmp_path / "data"
    assert set(fetch.run(data, mirror, allow_download=False).sources.values()) == {"mirror"}
    assert (data / "models/m.h5").read_bytes() == b"model bytes"
    assert set(fetch.run(data, mirror, allow_download=False).sources.values()) == {"present"}


def test_checksum_mismatch_is_refused_and_not_kept(fake_assets, tmp_path):
    mirror, _ = fake_assets
    (mirror / "models/m.h5").write_bytes(b"tampered")
    data = tmp_path / "data"
    with pytest.raises(ChecksumMismatch, match="SHA-256"):
        fetch.run(data, mirror, allow_download=False)
    assert not (data / "models/m.h5").exists()
    assert list((data / "models").iterdir()) == []  # no temporary debris either


def test_corrupt_local_copy_is_replaced(fake_assets, tmp_path):
    mirror, _ = fake_assets
    data = tmp_path / "data"
    fetch.run(data, mirror, allow_download=False)
    (data / "models/m.h5").write_bytes(b"half a downl")
    assert fetch.run(data, mirror, allow_download=False).sources["models/m.h5"] == "mirror"
    assert (data / "models/m.h5").read_bytes() == b"model bytes"


def test_missing_everywhere_offline_is_bad_input(fake_assets, tmp_path):
    with pytest.raises(BadInput, match="MIRROR"):
        fetch.run(tmp_path / "data", tmp_path / "no-mirror", allow_download=False)


def test_download_failure_says_what_to_do(fake_assets, tmp_path, monkeypatch):
    _, assets = fake_assets
    monkeypatch.setattr(fetch, "ASSETS", (dataclasses.replace(assets[0], url="http://127.0.0.1:9/none"),))
    with pytest.raises(BadInput, match="MIRROR"):
        fetch.run(tmp_path / "data", None, allow_download=True, progress=False)


@pytest.mark.real_data
def test_real_mirror_matches_published_checksums(real_run):
    completed, _, data = real_run
    for asset in fetch.ASSETS:
        assert sha256_of(data / asset.local_path) == asset.sha256
