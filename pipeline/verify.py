"""Stage 3: prove the conversion equal — every backend against every other, on the whole check set.

Backends: `keras` (reference, from the onnx stage's file or recomputed in a TensorFlow process),
`onnxruntime` (model.onnx), `fx` (onnx2torch's GraphModule as converted), `torch` (model.pt2) and
`manual` (the hand-written ResNet8, where it applies). Check set: all test images (for 32×32×3 models)
and seeded random inputs over 0..255 at batch sizes 1, 7 and 256. For a classifier a pair passes when
its max |Δprob| ≤ ATOL_PROB and no argmax disagrees (other models: see `compare.output_tolerance`).
Where an ONNX file is given, every layer is compared too (`layers`). Verification passes when every
pair and every layer does.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import backends, checkset, cifar, keras_graph, layers
from pipeline.atomic import write_text
from pipeline.backends import Artifacts, KerasReference, Outputs
from pipeline.layers import KerasLayers, LayerReport
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
    user_inputs: int = 0  # the user's own samples (--inputs at the onnx stage)
    layers: LayerReport | None = None  # layer by layer, where an ONNX file is given

    @property
    def outputs_passed(self) -> bool:
        return all(pair.passed for pair in self.pairs)

    @property
    def passed(self) -> bool:
        return self.outputs_passed and (self.layers is None or self.layers.passed)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "atol_prob": ATOL_PROB,
            "classifier": bool(self.pairs and self.pairs[0].classifier),
            "backends": self.backends,
            "not_applicable": self.not_applicable,
            "test_images": self.test_images,
            "random_images": self.random_images,
            "user_inputs": self.user_inputs,
            "pairs": [pair.as_dict() for pair in self.pairs],
            "outputs_passed": self.outputs_passed,
            "first_divergence": self.layers.first_divergence if self.layers else None,
            "layers": self.layers.as_dict() if self.layers else None,
        }

    def raise_if_failed(self) -> None:
        """One CheckFailed listing every failing pair."""
        failures = [
            f"{p.a} vs {p.b}: max |Δ| {p.max_abs_diff:.3g} (tolerance {p.tolerance:.3g}), {p.argmax_disagreements} argmax disagreements"
            for p in self.pairs if not p.passed
        ]
        divergence = self.layers.first_divergence if self.layers else None
        if divergence:
            failures.insert(0, f"first divergent layer: {divergence['keras_layer']} in {divergence['backend']} "
                               f"(max |Δ| {divergence['max_abs_diff']:.3g} > tolerance {divergence['tolerance']:.3g})")
        if failures:
            raise CheckFailed("verification failed — " + "; ".join(failures))


def keras_outputs(model: Path, out_dir: Path, data: Path | None, with_layers: bool,
                  allow_unsafe_code: bool = False) -> tuple[KerasReference, KerasLayers | None]:
    """Keras's outputs (and per-layer outputs if asked) for `model`: the stored files if they were made
    from this model and data, else recomputed — both in one TensorFlow process."""
    paths = ModelPaths(Path(out_dir))
    model_sha, data_sha = sha256_of(model), (sha256_of(cifar.locate(data)) if data is not None else None)

    def load_if_fresh(path: Path, kind):
        if not path.is_file():
            return None
        loaded = kind(path)
        fresh = loaded.model_sha256 == model_sha and (data_sha is None or loaded.data_sha256 == data_sha)
        return loaded if fresh else None

    reference = load_if_fresh(paths.keras_reference, KerasReference)
    keras_layers = load_if_fresh(paths.keras_layers, KerasLayers) if with_layers else None
    if reference is None or (with_layers and keras_layers is None):
        run_worker(model, reference=paths.keras_reference if reference is None else None,
                   layers=paths.keras_layers if with_layers and keras_layers is None else None, data=data,
                   allow_unsafe_code=allow_unsafe_code)
        reference = reference or KerasReference(paths.keras_reference)
        keras_layers = (keras_layers or KerasLayers(paths.keras_layers)) if with_layers else None
    return reference, keras_layers


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


def run(artifacts: Artifacts, data: Path | None, out_dir: Path, progress: bool = True, manual_model=None,
        allow_unsafe_code: bool = False) -> VerifyResult:
    """Compare every available backend pair and write `verify.json` into `out_dir`.

    Args:
        artifacts: the Keras model (required) and whichever of model.onnx / model.pt2 are to be checked.
        data: the CIFAR-10 folder, or None to compare on random inputs only.
        out_dir: where `verify.json` (and the Keras reference, if recomputed) go.
        progress: show a progress bar per backend.
        manual_model: a hand-written model to use in the layer-by-layer comparison instead of the one
            built from the .h5 (the tests pass a deliberately broken one).
        allow_unsafe_code: let Keras deserialize Lambda layers if it must recompute its outputs.

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
    with_layers = artifacts.onnx is not None
    reference, keras_layers = keras_outputs(Path(artifacts.model), out_dir, data, with_layers, allow_unsafe_code)
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
    classifier = keras_graph.is_classifier(keras_graph.layers(keras_graph.read_model_config(artifacts.model)))
    pairs = [compare(b, outputs[b], a, outputs[a], classifier) for a, b in itertools.combinations(names, 2)]
    layer_report = None
    if keras_layers is not None:
        layer_report = layers.run(Path(artifacts.model), Path(artifacts.onnx), keras_layers.outputs, keras_layers.inputs,
                                  manual_model=manual_model)
    result = VerifyResult(
        pairs, names, not_applicable,
        test_images=len(sets.get("test", ())),
        random_images=sum(len(v) for k, v in sets.items() if k.startswith("random_")),
        user_inputs=len(sets.get(checkset.USER_SET, ())),
        layers=layer_report,
    )
    write_text(ModelPaths(Path(out_dir)).verify_json, json.dumps(result.as_dict(), indent=2) + "\n")
    return result

