"""The Python door: `pipeline.convert(...)` and `pipeline.load(...)`, the same program as `keras2torch convert`.

Importing it imports neither TensorFlow nor torch: the TensorFlow work runs in its own process, as from the command
line (TensorFlow and torch in one process segfault here). A refusal or a failed check is a `ConversionError` with
the one line the command prints; a conversion that ran and found the model not equal is a `Conversion` whose
`.passed` is false (its report says where it breaks).

    >>> import pipeline
    >>> result = pipeline.convert("my_model.keras", out="artifacts")   # doctest: +SKIP
    >>> result.passed, result.verdict.float64_proof.passed               # doctest: +SKIP
    (True, True)
    >>> model = pipeline.load("artifacts/my_model").native()            # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.common import paths as P
from pipeline.common.errors import BadInput, CheckFailed, PipelineError

# The exception family: a refusal (the file, an option or a layer cannot be taken) is `Refused`, a check that failed
# before a verdict (the ONNX file disagrees with Keras) is `NotEqual`; both are `ConversionError`s.
ConversionError = PipelineError
Refused = BadInput
NotEqual = CheckFailed


@dataclass(frozen=True)
class Proof:
    """The float64 proof on one path: the model rebuilt in float64 against its float64 conversion."""

    passed: bool
    max_abs_diff: float
    tolerance: float
    inputs: int


@dataclass(frozen=True)
class Verdict:
    """`verify.json`, typed: `passed`; the backends compared; each float64 proof (None where it did not run, and
    `float64_note` says why); the first layer that diverges (None when none); `raw`: the whole file."""

    passed: bool
    backends: tuple[str, ...]
    float64_proof: Proof | None
    float64_proof_native: Proof | None
    float64_note: str
    first_divergence: str | None
    raw: dict

    @classmethod
    def from_dict(cls, summary: dict) -> Verdict:
        def proof(entry: dict | None) -> Proof | None:
            if not entry:
                return None
            return Proof(bool(entry["passed"]), float(entry["max_abs_diff"]), float(entry["tolerance"]), int(entry["images"]))

        divergence = summary.get("first_divergence")
        return cls(bool(summary["passed"]), tuple(summary["backends"]), proof(summary.get("float64_proof")),
                   proof(summary.get("float64_proof_native")), summary.get("float64_note") or "",
                   divergence["keras_layer"] if isinstance(divergence, dict) else None, summary)


class Conversion:
    """A finished conversion's folder (`OUT/<model stem>/`): its verdict and its models as Python objects."""

    def __init__(self, folder: Path | str):
        self.paths = P.ModelPaths(Path(folder))
        if not self.paths.verify_json.is_file():
            raise Refused(f"{self.paths.dir} holds no verdict (verify.json); run `keras2torch convert MODEL` first")

    @property
    def dir(self) -> Path:
        """The folder of every artifact."""
        return self.paths.dir

    @property
    def onnx_path(self) -> Path:
        return self.paths.onnx

    @property
    def report_path(self) -> Path:
        return self.paths.report_md

    @property
    def inputs(self) -> list[tuple[str, tuple[int, ...], str]]:
        """The converted model's inputs, in order: (name, shape without the batch, dtype name) — what `native()` and
        `exported()` take, as the Keras model declares them (token ids as an integer type, or as float32 where the
        model's input is float32; images in Keras's channels-last layout)."""
        import onnx

        proto = onnx.load(str(self.paths.onnx), load_external_data=False)
        return [(value.name, tuple(d.dim_value for d in value.type.tensor_type.shape.dim[1:]),
                 onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name) for value in proto.graph.input]

    @property
    def verdict(self) -> Verdict:
        return Verdict.from_dict(json.loads(self.paths.verify_json.read_text()))

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def native(self):
        """The native PyTorch model (`native/model.py`), its weights loaded, in eval mode: a `torch.nn.Module` to run or
        fine-tune. Raises `Refused` where the conversion has no native model.

        >>> pipeline.load("artifacts/my_model").native()(x)   # doctest: +SKIP
        """
        from pipeline.native.load import load

        model, _ = load(self.paths.native_source, self.paths.native_weights)
        return model

    def exported(self):
        """`model.pt2` (the torch.export program, dynamic batch) as a callable module.

        >>> pipeline.load("artifacts/my_model").exported()(x)   # doctest: +SKIP
        """
        from pipeline.runtimes.pt2 import load_module

        return load_module(self.paths.pt2)

    def __repr__(self) -> str:
        return f"Conversion({str(self.dir)!r}, passed={self.passed})"


def convert(model: Path | str, out: Path | str = P.DEFAULT_OUT, *, inputs: Path | str | None = None, input_range: str | None = None,
            native: bool = True, evaluate: str | None = None, data: Path | str = P.DEFAULT_DATA, allow_unsafe_code: bool = False) -> Conversion:
    """Convert `model` (a Keras `.keras` or `.h5`) as `keras2torch convert` does — onnx, torch, native (unless `native` is
    false), verify, and evaluate on `evaluate` ("cifar10") where given — into `out/<model stem>/`; return the result.

    `inputs`: a `.npy` of your own sample inputs (a `.npz` of one array per input name for several), joined to every
    check; `input_range`: "LO,HI" for the random check inputs; `data`: a folder holding the CIFAR-10 test set, if any.

    Raises:
        ConversionError: the model was refused (`Refused`, the one line says why and what to do), or a check failed
            before a verdict (`NotEqual`). A verdict of "not equal" is returned, with `.passed` false.

    >>> pipeline.convert("my_model.keras").passed   # doctest: +SKIP
    True
    """
    from pipeline import cli

    if evaluate not in (None, *cli.EVALUATE_SETS):
        raise Refused(f"evaluate={evaluate!r}: the labelled test sets are {', '.join(cli.EVALUATE_SETS)}")
    argv = ["convert", "--out", str(out), "--data", str(data)]
    argv += ["--inputs", str(inputs)] if inputs is not None else []
    argv += [f"--input-range={input_range}"] if input_range is not None else []  # "=": a range may start with "-"
    argv += [] if native else ["--no-native"]
    argv += ["--evaluate", evaluate] if evaluate else []
    argv += ["--allow-unsafe-code"] if allow_unsafe_code else []
    argv += ["--", str(model)]  # a path may start with "-"
    verdict = P.ModelPaths.for_model(Path(model), Path(out)).verify_json
    try:
        cli.run(argv)  # clears the model's earlier verdict first: any verify.json after it is this run's
    except NotEqual:
        if not verdict.is_file() or json.loads(verdict.read_text())["passed"]:
            raise  # a check other than the verdict failed: the onnx stage's, or the accuracy gate
    except SystemExit as exc:  # argparse's: a value the command refuses
        raise Refused(f"keras2torch convert refused its arguments (exit {exc.code}); see `keras2torch convert --help`") from exc
    return Conversion(verdict.parent)


def load(folder: Path | str) -> Conversion:
    """A conversion made before (`OUT/<model stem>/`, where `verify.json` is), in any process.

    >>> pipeline.load("artifacts/my_model").passed   # doctest: +SKIP
    True
    """
    return Conversion(folder)
