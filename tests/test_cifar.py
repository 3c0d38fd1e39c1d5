import pickle

import numpy as np
import pytest

import helpers
from pipeline.data import cifar
from pipeline.common.errors import BadInput


def test_binary_round_trip(tmp_path):
    images, labels = helpers.synthetic_test_set(5)
    helpers.write_cifar_bin(tmp_path, images, labels)
    test = cifar.load(tmp_path)
    np.testing.assert_array_equal(test.images, images)
    np.testing.assert_array_equal(test.labels, labels)
    assert test.perf_subset is None and len(test) == 5


def test_python_version_reads_the_same_images(tmp_path):
    images, labels = helpers.synthetic_test_set(5)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": images.transpose(0, 3, 1, 2).reshape(5, -1), b"labels": labels.tolist(), b"batch_label": b"testing"}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    test = cifar.load(tmp_path)
    np.testing.assert_array_equal(test.images, images)
    np.testing.assert_array_equal(test.labels, labels)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_python_version_refuses_code(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Payload(), b"labels": [0]}))
    with pytest.raises(BadInput, match="refusing to load builtins.print"):
        cifar.load(tmp_path)
    assert "never run" not in capsys.readouterr().out


def test_truncated_binary_is_bad_input(tmp_path):
    images, labels = helpers.synthetic_test_set(3)
    path = helpers.write_cifar_bin(tmp_path, images, labels)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BadInput, match="truncated"):
        cifar.load(tmp_path)


@pytest.mark.parametrize("make", [lambda p: p / "absent", lambda p: p])
def test_missing_data_is_bad_input(tmp_path, make):
    with pytest.raises(BadInput, match="make fetch"):
        cifar.load(make(tmp_path))


def test_perf_subset_found_beside_the_batches(tiny_data):
    test = cifar.load(tiny_data)
    np.testing.assert_array_equal(test.perf_subset, np.arange(0, 64, 7))


@pytest.mark.real_data
def test_real_test_set(real_paths):
    test = cifar.load(real_paths[1])
    assert test.images.shape == (10_000, 32, 32, 3) and test.images.dtype == np.uint8
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert len(test.perf_subset) == 200
    assert test.class_names[0] == "airplane"
