"""Stage 3: prove the conversion equal — every backend against every other, on the whole check set.

Backends: `keras` (reference, from the onnx stage's file or recomputed in a TensorFlow process),
`onnxruntime` (model.onnx), `fx` (onnx2torch's GraphModule as converted), `torch` (model.pt2) and
`manual` (the hand-written ResNet8, where it applies). Check set: all test images (for 32×32×3 models)
and seeded random inputs over 0..255 at batch sizes 1, 7 and 256. A pair passes when its max
|Δprob| ≤ ATOL_PROB and no argmax disagrees; verification passes when every pair does.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import backends, cifar
from pipeline.atomic import write_text
from pipeline.backends import Artifacts, KerasReference, Outputs
from pipeline.compare import PairResult, compare
from pipeline.errors import BadInput, CheckFailed, NotApplicable
from pipeline.fetch import sha256_of
from pipeline.keras_process import run_worker
from pipeline.paths import ModelPaths
from pipeline.tolerances import ATOL_PROB


@dataclass
class VerifyResult:
    pairs: list[PairResult]
    backends: list[str]
    not_applicable: dict[str, str] = field(default_factory=dict)  # backend -> why it was left out
    test_images: int = 0
    random_images: int = 0

    @property
    def passed(self) -> bool:
        return all(pair.passed for pair in self.pairs)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "atol_prob": ATOL_PROB,
            "backends": self.backends,
            "not_applicable": self.not_applicable,
            "test_images": self.test_images,
            "random_images": self.random_images,
            "pairs": [pair.as_dict() for pair in self.pairs],
        }

    def raise_if_failed(self) -> None:
        """One CheckFailed listing every failing pair."""
        failures = [
            f"{p.a} vs {p.b}: max |Δprob| {p.max_abs_diff:.3g} (tolerance {p.atol:g}), {p.argmax_disagreements} argmax disagreements"
            for p in self.pairs if not p.passed
        ]
        if failures:
            raise CheckFailed("verification failed — " + "; ".join(failures))


def keras_reference(model: Path, out_dir: Path, data: Path | None) -> KerasReference:
    """Keras's outputs for `model`: the stored file if it was made from this model and data, else recomputed."""
    path = ModelPaths(Path(out_dir)).keras_reference
    if path.is_file():
        reference = KerasReference(path)
        data_matches = data is None or reference.data_sha256 == sha256_of(cifar.locate(data))
        if reference.model_sha256 == sha256_of(model) and data_matches:
            return reference
    run_worker(model, reference=path, data=data)
    return KerasReference(path)


def check_sets(reference: KerasReference, data: Path | None) -> dict[str, np.ndarray]:
    """The inputs behind every set of the reference: random batches from the file, test images from `data`."""
    sets = {}
    for name in reference.set_names():
        inputs = reference.inputs(name)
        if inputs is None and name == "test":
            if data is None:
                raise BadInput("the Keras reference includes the test set; pass --data with the CIFAR-10 folder")
            inputs = cifar.load(data).images.astype(np.float32)
        sets[name] = inputs
    return sets


def run(artifacts: Artifacts, data: Path | None, out_dir: Path, progress: bool = True) -> VerifyResult:
    """Compare every available backend pair and write `verify.json` into `out_dir`.

    Args:
        artifacts: the Keras model (required) and whichever of model.onnx / model.pt2 are to be checked.
        data: the CIFAR-10 folder, or None to compare on random inputs only.
        out_dir: where `verify.json` (and the Keras reference, if recomputed) go.
        progress: show a progress bar per backend.

    Returns:
        The result; the caller decides how to report and calls `raise_if_failed`.
    """
    from tqdm import tqdm

    if artifacts.model is None or not Path(artifacts.model).is_file():
        raise BadInput(f"Keras model {artifacts.model} does not exist; verify needs the .h5 as reference (--model)")
    for name in ("onnx", "pt2"):
        path = getattr(artifacts, name)
        if path is not None and not Path(path).is_file():
            raise BadInput(f"{path} does not exist; run the stage that makes it or fix the path")
    reference = keras_reference(Path(artifacts.model), out_dir, data)
    sets = check_sets(reference, data)
    outputs: dict[str, dict[str, Outputs]] = {"keras": reference.outputs()}
    not_applicable = {}
    total = sum(len(v) for v in sets.values())
    for name in backends.available(artifacts):
        try:
            predict = backends.load(name, artifacts)
        except NotApplicable as exc:
            not_applicable[name] = str(exc)
            continue
        with tqdm(total=total, desc=f"verify {name}", unit="img", disable=not progress, leave=False) as bar:
            outputs[name] = backends.run_sets(predict, sets, bar)
    names = list(outputs)
    pairs = [compare(b, outputs[b], a, outputs[a]) for a, b in itertools.combinations(names, 2)]
    result = VerifyResult(
        pairs, names, not_applicable,
        test_images=len(sets.get("test", ())),
        random_images=sum(len(v) for k, v in sets.items() if k != "test"),
    )
    write_text(ModelPaths(Path(out_dir)).verify_json, json.dumps(result.as_dict(), indent=2) + "\n")
    return result

