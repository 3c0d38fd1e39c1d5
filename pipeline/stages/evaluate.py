"""Stage 4: top-1 accuracy of the converted model (`model.pt2`) on CIFAR-10, gated.

Also per-class accuracy, a confusion matrix (PNG), accuracy on MLPerf Tiny's 200-image subset, and
Keras's and ONNX Runtime's accuracy side by side: equality with Keras is the point.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.common import manifest
from pipeline.common.atomic import write_text
from pipeline.common.checksums import sha256_of
from pipeline.common.errors import BadInput, CheckFailed
from pipeline.common.paths import ModelPaths
from pipeline.common.tolerances import ACCURACY_GATE
from pipeline.data import checkset, cifar
from pipeline.runtimes import pt2 as pt2_runtime
from pipeline.verifier import backends, test_predictions
from pipeline.verifier.keras_reference import KerasReference


@dataclass(frozen=True)
class EvaluateOptions:
    # Multiplies the pixels before the model sees them. The model takes raw 0..255; anything but 1.0
    # scores it on wrongly normalised inputs (the tests use 1/255 to show the gate catches that).
    input_scale: float = 1.0
    gate: float = ACCURACY_GATE
    device: str = "cpu"  # "cuda" runs model.pt2 on the GPU (TF32 off unless allow_tf32)
    allow_tf32: bool = False


@dataclass
class EvaluateResult:
    accuracy: float  # top-1 fraction
    correct: int
    total: int
    subset_accuracy: float | None
    subset_correct: int | None
    subset_total: int | None
    per_class_accuracy: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    gate: float
    input_scale: float
    side_by_side: dict[str, dict] = field(default_factory=dict)  # backend -> {accuracy, correct, total}
    from_verify: list[str] = field(default_factory=list)  # the backends whose classes verify computed (`test_predictions`)

    @property
    def passed(self) -> bool:
        return self.accuracy >= self.gate

    def as_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise CheckFailed(f"accuracy {self.accuracy:.4f} ({self.correct}/{self.total}) is below the gate {self.gate}")


@dataclass
class NotEvaluated:
    """The CIFAR-10 gate does not apply to this model (another input shape or class count), and why."""

    reason: str
    passed: bool = True

    def as_dict(self) -> dict:
        return {"applies": False, "reason": self.reason, "passed": self.passed}

    def raise_if_failed(self) -> None:
        """Nothing to gate."""


def predictions(predict, images: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    """argmax class of every image, run in batches of 256 with a progress bar."""
    from tqdm import tqdm

    preds = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in checkset.batches(images, checkset.TEST_BATCH_SIZE):
            preds.append(predict(batch.astype(np.float32)).probs.argmax(axis=1))
            bar.update(len(batch))
    result = np.concatenate(preds)
    if len(result) != len(images):
        raise RuntimeError(f"{desc}: scored {len(result)} images of {len(images)}")
    return result


def _torch_on(module, options: EvaluateOptions):
    """The loaded program as a backend on the chosen device (`runtimes.device`: TF32 off unless asked)."""
    from pipeline.runtimes import device as devices

    target = devices.select(options.device, options.allow_tf32)
    return backends.torch_predict(module.to(target), device=target)


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> dict:
    correct = int((pred == labels).sum())
    return {"accuracy": correct / len(labels), "correct": correct, "total": len(labels)}


def applicability(program) -> str | None:
    """None if the ExportedProgram takes CIFAR-10 images and gives one score per class (the gate applies); else why not."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    output = next(n for n in program.graph.nodes if n.op == "output").args[0][0]
    shape_in = tuple(placeholders[0].meta["val"].shape[1:]) if placeholders else ()
    shape_out = tuple(output.meta["val"].shape[1:]) if hasattr(output, "meta") and "val" in output.meta else ()
    if tuple(int(d) for d in shape_in) != cifar.INPUT_SHAPE or tuple(int(d) for d in shape_out) != (cifar.NUM_CLASSES,):
        return (f"the CIFAR-10 accuracy gate is for {'×'.join(map(str, cifar.INPUT_SHAPE))} inputs and "
                f"{cifar.NUM_CLASSES} classes; this model takes "
                f"{tuple(int(d) for d in shape_in)} and gives {tuple(int(d) for d in shape_out)}")
    return None


def run(pt2: Path, data: Path, out_dir: Path, onnx: Path | None = None,
        options: EvaluateOptions = EvaluateOptions(), progress: bool = True, model: Path | None = None) -> EvaluateResult | NotEvaluated:
    """Score `pt2` on the CIFAR-10 test set under `data`; write `evaluate.json` and `confusion.png`, and
    record them in the manifest. A model that is not a CIFAR-10 classifier is not scored: `NotEvaluated`
    (also written to `evaluate.json`) says why.

    Keras's accuracy comes from the onnx stage's reference file in `out_dir` when it was made on the
    same test set; ONNX Runtime's is computed when `onnx` is given. `model` (the Keras file) titles
    `report.md`; without it, the model the manifest names does.
    """
    started = time.time()
    paths = ModelPaths(Path(out_dir))
    if not Path(pt2).is_file():
        raise BadInput(f"{pt2} does not exist; run `make torch` first")
    program = pt2_runtime.load_program(pt2)
    why_not = applicability(program)
    if why_not:
        skipped = NotEvaluated(why_not)
        write_text(paths.evaluate_json, json.dumps(skipped.as_dict()) + "\n")
        return skipped
    test = cifar.load(data)
    images = test.images.astype(np.float32) * np.float32(options.input_scale)
    # Where verify ran this very model.pt2 (and model.onnx) over this test set as it is (CPU, pixels unscaled),
    # their classes are those it kept.
    plain = options.input_scale == 1.0 and options.device == "cpu"
    ran = {name: file for name, file in (("torch", pt2), ("onnxruntime", onnx)) if file is not None}
    test_sha256 = sha256_of(test.source)  # what verify's classes and the Keras reference are tied to
    kept = test_predictions.lookup(paths.test_predictions, ran, test_sha256) if plain else {}
    pred = kept["torch"] if "torch" in kept else predictions(_torch_on(program.module(), options), images, "evaluate torch", progress)
    if pred.max() >= len(test.class_names):
        raise BadInput(f"{pt2} predicts class {pred.max()}: it is not a {len(test.class_names)}-class CIFAR-10 model")
    scored = _accuracy(pred, test.labels)
    confusion = np.zeros((len(test.class_names),) * 2, dtype=np.int64)
    np.add.at(confusion, (test.labels, pred), 1)
    per_class = {name: float(confusion[i, i] / confusion[i].sum()) for i, name in enumerate(test.class_names)}
    subset = test.perf_subset
    sub = _accuracy(pred[subset], test.labels[subset]) if subset is not None else {"accuracy": None, "correct": None, "total": None}
    side = {"torch": scored}
    if paths.keras_reference.is_file():
        reference = KerasReference(paths.keras_reference)
        if "test" in reference.set_names() and reference.data_sha256 == test_sha256:
            side["keras"] = _accuracy(reference.outputs()["test"].probs.argmax(1), test.labels)
    if "onnxruntime" in kept:
        side["onnxruntime"] = _accuracy(kept["onnxruntime"], test.labels)
    elif onnx is not None:
        ort = backends.load("onnxruntime", backends.Sources(backends.Artifacts(onnx=onnx)))
        side["onnxruntime"] = _accuracy(predictions(ort, test.images, "evaluate onnxruntime", progress), test.labels)
    result = EvaluateResult(
        scored["accuracy"], scored["correct"], scored["total"],
        sub["accuracy"], sub["correct"], sub["total"],
        per_class, confusion.tolist(), options.gate, options.input_scale, side, list(kept),
    )
    write_text(paths.evaluate_json, json.dumps(result.as_dict(), indent=2) + "\n")
    plot_confusion(confusion, test.class_names, paths.confusion_png, f"model.pt2 — top-1 {scored['accuracy']:.2%}")
    from pipeline.stages import report

    report.write_report(paths.dir, model)
    manifest.record(paths.dir, "evaluate", None, [paths.evaluate_json, paths.confusion_png], started, passed=result.passed)
    return result


def plot_confusion(confusion: np.ndarray, names, path: Path, title: str) -> None:
    """Row-normalised confusion matrix with counts in each cell."""
    from pipeline.common import figures

    plt = figures.pyplot()

    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    figures.save(fig, path, dpi=120)

