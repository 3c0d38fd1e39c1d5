"""The door for one's own model: `keras2torch convert MODEL` (every stage it needs, one summary, exit 0/1/2) and, from
Python, `pipeline.convert(...)` / `pipeline.load(DIR)` — importable without TensorFlow, its results loaded in a clean
process, the native model and the exported program run on an input of the model's shape and agreeing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import helpers

KERAS2TORCH = helpers.ROOT / ".venv" / "bin" / "keras2torch"  # the console script `make install` puts there

# In a process of its own, as a user's script: load a finished conversion, run its native model and its exported
# program on one random input of the model's shape (each input, for several), and compare them.
LOAD_SCRIPT = """
import sys, numpy as np, torch, pipeline
from pipeline.common.tolerances import output_tolerance, with_noise
result = pipeline.load(sys.argv[1])
assert result.passed and result.verdict.float64_proof.passed, result.verdict
rng = np.random.default_rng(0)
# small whole numbers in the input's own dtype: valid token ids for an Embedding (float32 ids too), and image values
inputs = [torch.from_numpy(rng.integers(0, 3, (2, *shape)).astype(dtype)) for _, shape, dtype in result.inputs]
with torch.no_grad():
    native, exported = result.native()(*inputs), result.exported()(*inputs)
native = native if isinstance(native, (tuple, list)) else (native,)
exported = exported if isinstance(exported, (tuple, list)) else (exported,)
assert len(native) == len(exported)
worst = max(float((a - b).abs().max()) for a, b in zip(native, exported))
scale = max(float(a.abs().max()) for a in exported)
bound = 2 * with_noise(output_tolerance(result.verdict.raw["classifier"], scale), result.verdict.raw["keras_float32_noise"])
assert worst <= bound, (worst, bound)  # each within verify's bound of Keras, so within twice it of each other
print("agree", worst, "tensorflow" in sys.modules)
"""


def _load_in_a_clean_process(folder, python=sys.executable) -> str:
    completed = subprocess.run([str(python), "-c", textwrap.dedent(LOAD_SCRIPT), str(folder)], capture_output=True, text=True, cwd=folder)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def _convert(model, out, command=KERAS2TORCH, cwd=helpers.ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(command), "convert", str(model), "--out", str(out)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory) -> Path:
    """The wheel built from the project, `pip install`ed into a fresh virtualenv; its bin/ folder. The pinned
    dependencies come from this environment (a `.pth` line: installing TensorFlow and torch again would take
    minutes), the project from the wheel alone."""
    import sysconfig

    root = tmp_path_factory.mktemp("wheel")
    wheels, venv, source = root / "wheels", root / "venv", root / "src"  # a copy: setuptools writes build/ beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(helpers.ROOT / name, source / name)
    shutil.copytree(helpers.ROOT / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("keras2torch_pipeline-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    # a plain path line: the .pth files in that folder (this checkout's editable install) are not read
    (site / "pinned_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pipeline; print(pipeline.__file__)"], capture_output=True, text=True,
                           cwd=root)
    assert where.returncode == 0 and where.stdout.startswith(str(site)), (where.stdout, where.stderr[-2000:])
    assert list(site.glob("pipeline/runtimes/kernels/*.cpp"))  # the C++ kernel's source ships in the wheel
    return venv / "bin"


@pytest.mark.zoo  # `make zoo-test` (a wheel build and a whole conversion: CI's 30 minutes); CI runs the README's convert block
def test_the_installed_command_converts_a_model_to_one_verdict_that_loads_in_python(wheel_install, tmp_path):
    """From a folder outside the checkout, the wheel's `keras2torch convert` on a trained Embedding → LSTM model (the
    README's example: its AOTInductor package then comes from the compile cache for one of the two): every stage, one
    numbered line each, exit 0 on PASSED with the float64 proof on both paths; then `pipeline.load` in a clean process
    (no TensorFlow there) gives a native model and an exported program that agree. Several inputs: `make zoo-test`."""
    model = tmp_path / "recurrent_text.keras"
    shutil.copy(helpers.ROOT / "tests" / "data" / "fuzz_bases" / model.name, model)
    completed = _convert(model.name, "out", wheel_install / "keras2torch", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    steps = [line for line in completed.stderr.splitlines() if line.startswith("[")]
    assert steps == ["[1/4] onnx", "[2/4] torch", "[3/4] native", "[4/4] verify"], steps
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("keras2torch: PASSED — ") and "float64 proof passed (ONNX path, native model)" in last, last
    assert "report" in completed.stdout and "verify     PASSED" in completed.stdout
    said = _load_in_a_clean_process(tmp_path / "out" / "recurrent_text", wheel_install / "python")
    assert said.startswith("agree") and said.strip().endswith("False")  # TensorFlow never loaded in the user's process


def test_errors_are_one_line_and_the_api_raises_them(tmp_path):
    """A missing file: exit 2 on one line; from Python, `pipeline.Refused` (a `ConversionError`) with that line; a
    folder with no verdict cannot be loaded."""
    import pipeline

    completed = _convert(tmp_path / "nowhere.keras", tmp_path / "out")
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1 and completed.stderr.startswith("error: "), completed.stderr
    with pytest.raises(pipeline.Refused) as raised:
        pipeline.convert(tmp_path / "nowhere.keras", out=tmp_path / "out")
    assert isinstance(raised.value, pipeline.ConversionError)
    # the same words; the command shortens the path to fit its line, the exception keeps it whole
    assert str(raised.value).split()[1:] == completed.stderr[len("error: "):].split()[1:]
    assert str(raised.value).split()[0] == str(tmp_path / "nowhere.keras")
    with pytest.raises(pipeline.Refused, match="holds no verdict"):
        pipeline.load(tmp_path)
    model = tmp_path / "recurrent_text.keras"
    shutil.copy(helpers.ROOT / "tests" / "data" / "fuzz_bases" / model.name, model)
    with pytest.raises(pipeline.Refused, match="labelled test sets are cifar10"):  # not argparse's exit, which would end the caller
        pipeline.convert(model, out=tmp_path / "out", evaluate="imagenet")
    # a test set that is not there: refused before any stage runs, not after them all
    completed = subprocess.run([str(KERAS2TORCH), "convert", str(model), "--out", str(tmp_path / "out"), "--evaluate", "cifar10",
                                "--data", str(tmp_path / "no_data")], capture_output=True, text=True, cwd=helpers.ROOT)
    assert completed.returncode == 2 and completed.stderr.startswith("error: data folder") and "[1/" not in completed.stderr, completed.stderr


def test_importing_the_api_imports_neither_tensorflow_nor_torch():
    completed = subprocess.run([sys.executable, "-c", "import sys, pipeline; pipeline.convert, pipeline.load, pipeline.Conversion; "
                                "print(sorted(m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules))"],
                               capture_output=True, text=True, cwd=helpers.ROOT)
    assert completed.stdout.strip() == "[]", completed.stderr


@pytest.mark.zoo  # `make zoo-test`: four trained models of the kinds users bring, each converted whole (minutes)
@pytest.mark.parametrize("kind", ["transformer_block", "two_inputs", "recurrent_text", "nested_transfer"])
def test_convert_and_load_models_of_every_kind(kind, tmp_path):
    from pipeline.runtimes import keras as keras_runtime

    (built,) = keras_runtime.build_trained(tmp_path / "models", "keras3", [kind])
    completed = _convert(built["file"], tmp_path / "out")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stderr.strip().splitlines()[-1].startswith("keras2torch: PASSED — ")
    assert _load_in_a_clean_process(tmp_path / "out" / kind).startswith("agree")
