"""Shared builders for the tests: synthetic Keras models (built in a TensorFlow subprocess) and data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# CI sets PIPELINE_REQUIRE_DATA=1: a missing mirror is then a failure, never a skip.
REQUIRE_DATA = os.environ.get("PIPELINE_REQUIRE_DATA") == "1"
MIRROR = (ROOT / os.environ.get("PIPELINE_MIRROR", "../shared")).resolve()
REAL_MODEL = MIRROR / "models" / "pretrainedResnet.h5"
REAL_DATA = MIRROR / "data"
REAL_AD01 = MIRROR / "models" / "ad01.h5"  # MLPerf Tiny's Dense autoencoder: a second, different model

# A small CIFAR-shaped classifier with every trap of the real one: stride-2 'same' conv, BatchNorm
# with non-trivial statistics, a Flatten-Reshape, and softmax inside the last Dense.
TINY_MODEL_SCRIPT = """
import sys, numpy as np, keras
keras.utils.set_random_seed(0)
inputs = keras.Input((32, 32, 3))
x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
x = keras.layers.BatchNormalization()(x)
x = keras.layers.Activation("relu")(x)
x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
x = keras.layers.AveragePooling2D(8)(x)
x = keras.layers.Flatten()(x)
outputs = keras.layers.Dense(10, activation="softmax")(x)
model = keras.Model(inputs, outputs)
rng = np.random.default_rng(0)
bn = model.layers[2]
bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.1, 8), rng.normal(0, 20, 8), rng.uniform(100, 400, 8)])
model.layers[1].set_weights([w * 0.02 if w.ndim > 1 else w for w in model.layers[1].get_weights()])
model.save(sys.argv[1])
"""


# The tiny model with a layer the native generator does not know (GaussianNoise: the identity at inference,
# which tf2onnx drops): it converts to ONNX and torch, and has no native model.
NO_NATIVE_LAYER = "GaussianNoise"
NO_NATIVE_MODEL_SCRIPT = TINY_MODEL_SCRIPT.replace(
    "x = keras.layers.Flatten()(x)\n", f"x = keras.layers.Flatten()(x)\nx = keras.layers.{NO_NATIVE_LAYER}(0.1)(x)\n")
assert NO_NATIVE_MODEL_SCRIPT != TINY_MODEL_SCRIPT


def tf_env() -> dict[str, str]:
    """The environment for a TensorFlow subprocess: its C++ log chatter off."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run_tf_script(script: str, *args: str) -> None:
    """Run a TensorFlow snippet in its own process (TF and torch must not share one)."""
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=tf_env(), capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]


def build_tiny_model(path: Path, script: str = TINY_MODEL_SCRIPT) -> Path:
    run_tf_script(script, str(path))
    return path


def write_cifar_bin(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write a CIFAR-10 binary batch (label byte + planar RGB) into folder/cifar-10-batches-bin/."""
    target = folder / "cifar-10-batches-bin" / "test_batch.bin"
    target.parent.mkdir(parents=True, exist_ok=True)
    planar = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    np.concatenate([labels.astype(np.uint8)[:, None], planar], axis=1).astype(np.uint8).tofile(target)
    return target


def synthetic_test_set(n: int = 64, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def run_cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in a subprocess, as a user runs it (`env`: added to this process's environment)."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env} if env else None)


STAGES = ("onnx", "torch", "native", "verify")  # every stage of a model through verify, in order
NO_AOT = ("--no-aot",)  # the torch stage without its AOTInductor package (a compile tests/test_aoti.py makes)


def run_stages(model: Path, out: Path, stages: tuple[str, ...] = STAGES, torch_options: tuple[str, ...] = ()) -> list[str]:
    """The CLI's `stages` on `model` into `out`, the torch stage given `torch_options`, each required to exit 0;
    what each said (stdout, then stderr)."""
    said = []
    for stage in stages:
        extra = torch_options if stage == "torch" else ()
        completed = run_cli(stage, "--model", str(model), "--out", str(out), *extra)
        assert completed.returncode == 0, f"{stage}: {completed.stderr[-3000:]}"
        said.append(completed.stdout + completed.stderr)
    return said


def worker_running(parent: int) -> bool:
    """Whether the TensorFlow process started by the stage with pid `parent` is running (from /proc, no extra package)."""
    from pipeline.common.keras_job import WORKER_MODULE

    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines() if line.startswith("PPid:"))
        except (OSError, StopIteration, ValueError):
            continue
        if WORKER_MODULE.encode() in args and ppid == parent:
            return True
    return False


def perturb_onnx_kernel(onnx_in: Path, onnx_out: Path, keras_kernel: np.ndarray, delta: float = 2e-2) -> str:
    """Add `delta` to one element of the ONNX initializer holding `keras_kernel`; return its name.

    The initializer is found by value (Keras (kh, kw, in, out) is ONNX (out, in, kh, kw)), not by
    name: tf2onnx renames layers.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(onnx_in))
    wanted = keras_kernel.transpose(3, 2, 0, 1) if keras_kernel.ndim == 4 else keras_kernel
    for index, init in enumerate(proto.graph.initializer):
        value = numpy_helper.to_array(init)
        if value.shape == wanted.shape and np.array_equal(value, wanted):
            changed = value.copy()
            changed.flat[len(changed.flat) // 2] += delta
            proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(changed, init.name))
            onnx.save(proto, str(onnx_out))
            return init.name
    raise AssertionError("no initializer holds that kernel")


def h5_tensor(path: Path, suffix: str) -> np.ndarray:
    """The one weight tensor in a Keras .h5 whose dataset path ends with `suffix` (e.g. "conv2d_4/kernel"; a ":0" is ignored)."""
    import h5py

    found = []
    with h5py.File(path, "r") as handle:
        handle["model_weights"].visititems(lambda n, o: found.append(o[()]) if n.split(":")[0].endswith(suffix) else None)
    assert len(found) == 1, f"{suffix}: {len(found)} matches"
    return found[0]


def assert_one_line_error(completed: subprocess.CompletedProcess, *phrases: str, code: int = 2) -> str:
    """Assert what every bad input must end in: exit `code`, exactly one line on stderr, starting
    `error:` and holding each of `phrases`, no traceback. Returns the line."""
    assert completed.returncode == code, (completed.returncode, completed.stderr[-2000:])
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def tamper_keras_file(source: Path, target: Path, weight: np.ndarray, delta: float = 2e-2, at: int | None = None) -> None:
    """A copy of the `.keras` file `source` in which one element (flat index `at`, default the middle one)
    of the stored array equal to `weight` is changed by `delta` (found by value: a `.keras` file stores
    weights unnamed, as vars/0, vars/1, ...)."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO(members["model.weights.h5"])
    found = []
    with h5py.File(buffer, "r+") as handle:
        handle.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.shape == weight.shape
                          and np.array_equal(obj[()], weight) else None)
        assert len(found) == 1, f"{len(found)} stored arrays hold that weight"
        value = handle[found[0]][()]
        value.flat[value.size // 2 if at is None else at] += delta
        handle[found[0]][...] = value
    members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def plant_kernel_fault(source: Path, target: Path, layer: str, relative: float = 0.05) -> None:
    """A copy of the Keras file `source` (.h5 or .keras) in which `layer`'s kernel element of the largest
    magnitude is made `relative` larger (5%: a fault of the size a bad export or a wrong cast leaves)."""
    import shutil

    import h5py

    from pipeline.keras_file.model import KerasModel

    kernel = next(value for name, value in KerasModel.open(source).weights[layer].items() if "kernel" in name)
    at = int(np.abs(kernel).argmax())
    if Path(source).suffix == ".keras":
        tamper_keras_file(source, target, kernel, delta=float(kernel.flat[at]) * relative, at=at)
        return
    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as handle:
        found = []
        handle["model_weights"].visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.shape == kernel.shape
                                           and np.array_equal(o[()], kernel) else None)
        assert len(found) == 1, found
        dataset = handle["model_weights"][found[0]]
        value = dataset[()]
        value.flat[at] *= 1 + relative
        dataset[...] = value


def assert_fault_named(good: Path, tampered: Path, out: Path, scratch: Path, layer: str) -> dict:
    """The onnx stage run on `tampered` (a copy of `good` with a fault planted) into `scratch`, and `good`'s
    verify (its Keras outputs already in `out`) on that ONNX file: it must fail, naming `layer` as the first
    divergent layer. Returns verify.json."""
    assert run_cli("onnx", "--model", str(tampered), "--out", str(scratch)).returncode == 0
    completed = run_cli("verify", "--model", str(good), "--onnx", str(scratch / good.stem / "model.onnx"), "--out", str(out))
    assert completed.returncode == 1, completed.stderr[-2000:]
    line = completed.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: verification failed — first divergent layer: {layer} "), line
    return json.loads((out / good.stem / "verify.json").read_text())


def run_readme_block(block: str, folder: Path) -> subprocess.CompletedProcess:
    """A README shell block run word for word in `folder` (laid out as the repository after `make`), its
    `.venv/bin/python` this test's interpreter."""
    python = folder / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return subprocess.run(["bash", "-c", block], cwd=folder, capture_output=True, text=True)
