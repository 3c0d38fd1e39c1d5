"""Session fixtures: one synthetic model converted once, and the real model through the whole CLI once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import families
import helpers


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """The session's own cache folder (`common.paths.cache_dir`, children included): no package compiled by
    an earlier run, or by the user, stands in for a compile a test expects."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PIPELINE_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


def _need_real_data() -> None:
    if not (helpers.REAL_MODEL.is_file() and (helpers.REAL_DATA / "cifar-10-batches-bin" / "test_batch.bin").is_file()):
        message = f"real model/data not found under the mirror {helpers.MIRROR} (set PIPELINE_MIRROR)"
        if helpers.REQUIRE_DATA:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """64 random CIFAR-shaped images in the binary format, plus a 10-image 'perf subset'."""
    import numpy as np

    folder = tmp_path_factory.mktemp("tiny_data")
    images, labels = helpers.synthetic_test_set()
    helpers.write_cifar_bin(folder, images, labels)
    np.save(folder / "perf_samples_idxs.npy", np.arange(0, 64, 7))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return helpers.build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "tiny.h5")


@pytest.fixture(scope="session")
def no_native_model(tmp_path_factory) -> Path:
    """The tiny model with a layer the native generator does not know (`helpers.NO_NATIVE_LAYER`)."""
    return helpers.build_tiny_model(tmp_path_factory.mktemp("no_native_model") / "noisy.h5", helpers.NO_NATIVE_MODEL_SCRIPT)


@pytest.fixture(scope="session")
def tiny_converted(tiny_model, tiny_data, tmp_path_factory):
    """The tiny model through the onnx and torch stages: (model, out root, ModelPaths, onnx result, torch result)."""
    from pipeline.stages import to_onnx, to_torch
    from pipeline.common.paths import ModelPaths

    out = tmp_path_factory.mktemp("tiny_out")
    onnx_result = to_onnx.run(tiny_model, out, tiny_data)
    paths = ModelPaths.for_model(tiny_model, out)
    torch_result = to_torch.run(paths.onnx, paths.dir)
    return tiny_model, out, paths, onnx_result, torch_result


@pytest.fixture(scope="session")
def real_paths():
    """(model, data folder) of the real ResNet8 in the mirror; fails in CI if absent."""
    _need_real_data()
    return helpers.REAL_MODEL, helpers.REAL_DATA


@pytest.fixture(scope="session")
def real_run(real_paths, tmp_path_factory):
    """`python -m pipeline all` on the real model, fetching from the mirror into a fresh data folder."""
    from pipeline.common.paths import ModelPaths

    work = tmp_path_factory.mktemp("real")
    data, out = work / "data", work / "artifacts"
    completed = helpers.run_cli("all", "--mirror", str(helpers.MIRROR), "--data", str(data), "--out", str(out),
                                "--model", str(data / "models" / "pretrainedResnet.h5"))
    return completed, ModelPaths(out / "pretrainedResnet"), data


@pytest.fixture
def real_reference_copy(real_run, tmp_path) -> Path:
    """A fresh artifacts folder for the real model holding only Keras's outputs, float32 and float64, on
    the check set and per layer (saves a TensorFlow process recomputing them: ~40 s a test)."""
    _, paths, _ = real_run
    target = tmp_path / "pretrainedResnet"
    target.mkdir()
    for stored in (paths.keras_reference, paths.keras_reference_f64, paths.keras_layers, paths.keras_layers_f64):
        shutil.copy(stored, target / stored.name)
    return target


@pytest.fixture(scope="session")
def family_models(tmp_path_factory) -> dict[tuple[str, str], tuple]:
    """{(family, flavour): (model file, artifacts folder)}, each converted by the worker."""
    from concurrent.futures import ThreadPoolExecutor

    folder, out = tmp_path_factory.mktemp("families"), tmp_path_factory.mktemp("families_out")

    def flavour_jobs(flavour: str) -> dict[tuple[str, str], tuple]:
        jobs = {(name, flavour): (path, out / f"{name}_{flavour}") for name, path in families.build(folder, flavour).items()}
        families.convert_all(list(jobs.values()))
        return jobs

    # One TensorFlow process per flavour, both at once: tf2onnx converts on one core, and CI has two.
    with ThreadPoolExecutor(len(families.FLAVOURS)) as pool:
        return {key: job for jobs in pool.map(flavour_jobs, families.FLAVOURS) for key, job in jobs.items()}


@pytest.fixture(scope="session")
def zoo_member(tmp_path_factory):
    """`zoo_member(NAME, FORMAT)`: the zoo architecture NAME built with calibrated random weights, as
    `.keras` (or FORMAT, "h5"), through onnx, torch, native and verify — once per session: (its ZooRow,
    the model file, the artifacts root)."""
    from pipeline.stages import zoo

    done = {}

    def member(name: str, fmt: str = "keras"):
        if (name, fmt) not in done:
            root = tmp_path_factory.mktemp(f"zoo_{name}_{fmt}")
            (row,) = zoo.run(root, (name,), (fmt,), progress=False)
            done[name, fmt] = row, root / "zoo" / "models" / f"{name}.{fmt}", root / "zoo" / fmt
        return done[name, fmt]

    return member


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory) -> dict[tuple[str, str], tuple]:
    """{(member, flavour): (model file, artifacts folder)}: the zoo's trained members (`tf_side.trained_build`),
    written by tf-keras (.h5) and Keras 3 (.keras), each converted by the worker (onnx, float64 rebuild, layers)."""
    from concurrent.futures import ThreadPoolExecutor

    import families

    from pipeline.runtimes import keras as keras_runtime

    folder, out = tmp_path_factory.mktemp("trained"), tmp_path_factory.mktemp("trained_out")

    def flavour_jobs(flavour: str) -> dict[tuple[str, str], tuple]:
        built = keras_runtime.build_trained(folder / flavour, flavour)
        jobs = {(row["model"], flavour): (Path(row["file"]), out / f"{row['model']}_{flavour}") for row in built}
        families.convert_all(list(jobs.values()))
        return jobs

    # One TensorFlow process per flavour, both at once (CI has two cores).
    with ThreadPoolExecutor(len(families.FLAVOURS)) as pool:
        return {key: job for jobs in pool.map(flavour_jobs, families.FLAVOURS) for key, job in jobs.items()}
