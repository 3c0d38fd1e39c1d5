"""Where every file lives. Paths are declared here once and passed down as arguments."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import PipelineError

DEFAULT_MIRROR = Path("../shared")
DEFAULT_DATA = Path("data")
DEFAULT_OUT = Path("artifacts")
# `make fetch` puts the model here, under the data folder, as the mirror lays it out.
DEFAULT_MODEL = DEFAULT_DATA / "models" / "pretrainedResnet.h5"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `pipeline/`


def cache_dir(kind: str) -> Path:
    """This user's cache of things built here and reused across runs (our kernel's builds, compiled packages),
    one folder a `kind`: under `PIPELINE_CACHE` where it is set, else the user's cache folder. What is kept
    there is loaded into the process, so the folder must be this user's and writable by no one else.

    Raises:
        PipelineError: the folder exists and is someone else's, or others may write in it; the message says
            what to do.
    """
    root = Path(os.environ.get("PIPELINE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "keras2torch")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        root.mkdir(mode=0o700, exist_ok=True)  # this user's alone whatever the umask (0o700 loses no bit to it)
        status = root.stat()
    except OSError:
        return root / kind  # cannot be made or read: those who use it find it unusable and go without
    if status.st_uid != os.getuid() or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PipelineError(f"the cache folder {root} is not this user's alone (owner {status.st_uid}, mode {oct(status.st_mode & 0o777)}): "
                            "what is kept there is loaded and run; set PIPELINE_CACHE to a folder only you can write")
    return root / kind


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with `extra` set, and the package importable in a child `python -m
    pipeline...` wherever it is installed (an editable install, or a checkout on PYTHONPATH)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class NativePaths:
    """The native model's files in one folder: `native/`, or the native stage's temporary folder before it
    is renamed into place (`stages.native`)."""

    dir: Path

    @property
    def source(self) -> Path:
        return self.dir / "model.py"

    @property
    def weights(self) -> Path:
        """The native model's state_dict (safetensors: no pickle)."""
        return self.dir / "model.safetensors"

    @property
    def weights_map(self) -> Path:
        """Every Keras weight's state_dict key and layout transform."""
        return self.dir / "weights_map.json"

    @property
    def parity(self) -> Path:
        """One training step of the native model against Keras's (`verifier.training`)."""
        return self.dir / "parity.json"


@dataclass(frozen=True)
class ModelPaths:
    """The artifacts of one model: `<out>/<model file stem>/...`."""

    dir: Path

    @classmethod
    def for_model(cls, model: Path, out: Path) -> "ModelPaths":
        return cls(Path(out) / Path(model).stem)

    @property
    def onnx(self) -> Path:
        return self.dir / "model.onnx"

    @property
    def keras_reference(self) -> Path:
        """Keras's outputs on the check set, written by the onnx stage (plain .npz, no pickle)."""
        return self.dir / "keras_reference.npz"

    @property
    def keras_layers(self) -> Path:
        """Every Keras layer's output on the layer check set, written by the onnx stage (plain .npz)."""
        return self.dir / "keras_layers.npz"

    @property
    def keras_training_step(self) -> Path:
        """Keras's training step on the parity batch, taken by the onnx stage's TensorFlow process where
        the batch is known before conversion (`verifier.training_batch`); the native stage reuses it."""
        return self.dir / "keras_training_step.npz"

    @property
    def onnx_f64(self) -> Path:
        """The float64 rebuild of the Keras model, converted the same way: the float64 proof's artifact."""
        return self.dir / "model_f64.onnx"

    @property
    def keras_reference_f64(self) -> Path:
        """The float64 rebuild's outputs on the check set: the ground truth float32 is judged against."""
        return self.dir / "keras_reference_f64.npz"

    @property
    def keras_layers_f64(self) -> Path:
        """The float64 rebuild's every layer output on the layer check set."""
        return self.dir / "keras_layers_f64.npz"

    @property
    def layers_png(self) -> Path:
        return self.dir / "layers.png"

    @property
    def pt2(self) -> Path:
        return self.dir / "model.pt2"

    @property
    def pt2_opt(self) -> Path:
        """The optimized program (`fx_optimize`), same interface as model.pt2."""
        return self.dir / "model_opt.pt2"

    @property
    def pt2_aoti(self) -> Path:
        """The optimized program compiled ahead of time (AOTInductor package), same interface as model.pt2."""
        return self.dir / "model_aoti.pt2"

    @property
    def aoti_kernels(self) -> Path:
        """The library of our convolution kernel (`runtimes.direct_conv`), beside a package whose batch-1 model
        calls it: load it (globally) before that model, from Python or C++."""
        return self.dir / "model_aoti_kernels.so"

    @property
    def pt2_aoti_cuda(self) -> Path:
        """The same, compiled for a CUDA GPU (any-batch model alone): `make bench` with `--device cuda` writes it."""
        return self.dir / "model_aoti_cuda.pt2"

    @property
    def fx_opt_code(self) -> Path:
        return self.dir / "model_opt_fx.py"

    @property
    def native_dir(self) -> Path:
        """The native PyTorch model generated from the Keras file alone (`native.generate`)."""
        return self.dir / "native"

    @property
    def native(self) -> NativePaths:
        return NativePaths(self.native_dir)

    @property
    def native_source(self) -> Path:
        return self.native.source

    @property
    def native_weights(self) -> Path:
        return self.native.weights

    @property
    def native_weights_map(self) -> Path:
        return self.native.weights_map

    @property
    def native_parity(self) -> Path:
        return self.native.parity

    @property
    def native_status(self) -> Path:
        """The native stage's last outcome for this model: built, or why not (`common.stage_status`). Beside
        `native/`, not in it: it is written when there is no native model, and it is the Make target `verify`
        waits on (the native stage tried, whatever came of it)."""
        return self.dir / "native_status.json"

    @property
    def manifest_json(self) -> Path:
        """Provenance of every artifact in the folder (`common.manifest`)."""
        return self.dir / "manifest.json"

    @property
    def bench_json(self) -> Path:
        return self.dir / "bench.json"

    @property
    def bench_png(self) -> Path:
        return self.dir / "bench.png"

    @property
    def aot_options_json(self) -> Path:
        """`make aot-options`: each AOTInductor setting's figures (`stages/aot_options`)."""
        return self.dir / "aot_options.json"

    @property
    def aot_options_md(self) -> Path:
        return self.dir / "aot_options.md"

    @property
    def fx_code(self) -> Path:
        return self.dir / "model_fx.py"

    @property
    def verify_json(self) -> Path:
        return self.dir / "verify.json"

    @property
    def test_predictions(self) -> Path:
        """The class model.pt2 and ONNX Runtime gave every test image in `verify`, tied to those files and the test
        set (`verifier.test_predictions`): `evaluate` scores them instead of running the two over it again."""
        return self.dir / "test_predictions.npz"

    @property
    def evaluate_json(self) -> Path:
        return self.dir / "evaluate.json"

    @property
    def report_md(self) -> Path:
        return self.dir / "report.md"

    @property
    def confusion_png(self) -> Path:
        return self.dir / "confusion.png"
