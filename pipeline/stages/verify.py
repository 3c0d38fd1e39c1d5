"""Stage 3: prove the conversion equal — every backend against every other, on the whole check set.

Backends (`verifier.backends`): `keras` (reference, from the onnx stage's file or recomputed in a
TensorFlow process), `onnxruntime` (model.onnx), `fx` (onnx2torch's GraphModule as converted), `torch`
(model.pt2), `torch_opt` (model_opt.pt2), `native` (the model generated from the Keras file alone,
`native/model.py`) and `manual` (the hand-written ResNet8, where it applies).
Check set: all test images (for CIFAR-10-shaped models) and seeded random inputs at the batch sizes of
`checkset.RANDOM_BATCH_SIZES`. For a classifier a pair passes when its max |Δprob| ≤ ATOL_PROB and no
argmax disagrees (other models: `tolerances.output_tolerance`). Where an ONNX file is given, every
layer is compared too (`verifier.layer_compare`): that locates a failure, it does not decide one.

The float64 proof: the Keras model rebuilt in float64 and converted the same way (`model_f64.onnx`),
run in float64 on the first `checkset.PROOF_SAMPLES` inputs of each check set, must agree with Keras
float64 to `tolerances.proof_tolerance` — the same function, with no float32 noise in the way; the
native model, run in float64, is a second, independent path held to the same bound. Float32 artifacts
are then judged against the model's own float32 noise (`verifier.precision`), and each one's error
against Keras float64 is reported as a multiple of Keras float32's own. Verification passes when the
proof and every pair do; a layer out of tolerance while they pass is a warning (`layer_warning`).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.common import manifest
from pipeline.common.atomic import staged_files
from pipeline.common.errors import BadInput, CheckFailed, NotApplicable
from pipeline.common.paths import ModelPaths
from pipeline.common.tolerances import ATOL_PROB, NOISE_FACTOR
from pipeline.data import checkset, cifar
from pipeline.keras_file.model import KerasModel
from pipeline.stages import report
from pipeline.verifier import backends, keras_outputs, layer_compare, precision, test_predictions
from pipeline.verifier.backends import Artifacts, Outputs, Sources
from pipeline.verifier.compare import PairResult, compare
from pipeline.verifier.keras_outputs import KerasOutputs
from pipeline.verifier.layer_compare import LayerReport
from pipeline.verifier.precision import Float32Noise


@dataclass
class VerifyResult:
    pairs: list[PairResult]
    backends: list[str]
    not_applicable: dict[str, str] = field(default_factory=dict)  # backend -> why it was left out
    test_images: int = 0
    random_images: int = 0
    user_inputs: int = 0  # the user's own samples (--inputs at the onnx stage)
    layers: LayerReport | None = None  # layer by layer, where an ONNX file is given
    proof: PairResult | None = None  # float64 conversion vs Keras float64, where both exist
    native_proof: PairResult | None = None  # the native model in float64 vs Keras float64: the second path
    float64_note: str = ""  # why there is no float64 proof or noise measurement
    keras_noise: float | None = None  # Keras float32 vs Keras float64, max |Δ| over the pooled check set
    noise_ratios: dict[str, float] = field(default_factory=dict)  # backend -> its error vs float64 / Keras float32's
    saturation: dict[str, dict] = field(default_factory=dict)  # check set -> saturated / collapsed samples (Keras)
    input_ranges: list[tuple[float, float]] = field(default_factory=list)  # the ranges random inputs came from
    random_batch_sizes: list[int] = field(default_factory=lambda: list(checkset.RANDOM_BATCH_SIZES))  # as the check sets were drawn (their names say)
    inputs: str = ""  # a model of several inputs: each one's name and shape (`feeds.Layout.describe`); "" for one
    outputs: str = ""  # the same of its several outputs, each compared on its own (`compare`)
    # A model that leaves a dimension open: the backends that take any length against Keras at `checkset.OTHER_LENGTHS`
    # (float32 within the model's own noise at that length, and the native model's float64 proof), `_other_lengths`
    other_lengths: list[int] = field(default_factory=list)  # the lengths Keras's reference holds sets at, besides the converted one
    length_pairs: list[PairResult] = field(default_factory=list)
    length_proofs: list[PairResult] = field(default_factory=list)  # the native model's float64 proof at each
    fixed_length: list[str] = field(default_factory=list)  # the backends that take the converted length only
    lengths_note: str = ""  # a length not checked, and why

    @property
    def outputs_passed(self) -> bool:
        return all(pair.passed for pair in (*self.pairs, *self.length_pairs))

    @property
    def no_evidence(self) -> bool:
        """Every check sample saturated or collapsed: agreement on them proves nothing."""
        return precision.no_evidence(self.saturation)

    @property
    def passed(self) -> bool:
        """The outputs and the float64 proof decide; the layer map locates, it does not overrule them."""
        return self.outputs_passed and all(proof.passed for proof in self.proofs)

    @property
    def layer_warning(self) -> str | None:
        """A layer out of tolerance while every output and proof agree: a difference the outputs do not
        see (a channel a later ReLU or pooling discards), reported, not a failure."""
        divergence = self.layers.first_divergence if self.layers else None
        if divergence is None or not self.passed:
            return None
        return (f"layer {divergence['label']} differs in {divergence['backend']} (max |Δ| {divergence['max_abs_diff']:.3g} > "
                f"{divergence['tolerance']:.3g}) while every output and the float64 proof agree: a difference the outputs do not see")

    @property
    def proofs(self) -> list[PairResult]:
        return [proof for proof in (self.proof, self.native_proof, *self.length_proofs) if proof is not None]

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "atol_prob": ATOL_PROB,
            "classifier": bool(self.pairs and self.pairs[0].classifier),
            "backends": self.backends,
            "not_applicable": self.not_applicable,
            "test_images": self.test_images,
            "random_images": self.random_images,
            "random_batch_sizes": self.random_batch_sizes,
            "input_ranges": [list(pair) for pair in self.input_ranges],
            "inputs": self.inputs,
            "outputs": self.outputs,
            "user_inputs": self.user_inputs,
            "pairs": [pair.as_dict() for pair in self.pairs],
            "other_lengths": self.other_lengths,
            "length_pairs": [pair.as_dict() for pair in self.length_pairs],
            "length_proofs": [proof.as_dict() for proof in self.length_proofs],
            "fixed_length": self.fixed_length,
            "lengths_note": self.lengths_note,
            "outputs_passed": self.outputs_passed,
            "float64_proof": self.proof.as_dict() if self.proof else None,
            "float64_proof_native": self.native_proof.as_dict() if self.native_proof else None,
            "float64_note": self.float64_note,
            "keras_float32_noise": self.keras_noise,
            "noise_ratios": self.noise_ratios,
            "noise_factor": NOISE_FACTOR,
            "saturation": self.saturation,
            "no_evidence": self.no_evidence,
            "first_divergence": self.layers.first_divergence if self.layers else None,
            "layer_warning": self.layer_warning,
            "layers": self.layers.as_dict() if self.layers else None,
        }

    def raise_if_failed(self) -> None:
        """One CheckFailed naming the first failure (the first divergent layer where there is one) and how many
        more there are: the line must fit a terminal; verify.json and report.md list every one."""
        failures = [f"{p.a} vs {p.b}: {p.breach()}, {p.decisive_disagreements} argmax disagreements"
                    for p in (*self.pairs, *self.length_pairs) if not p.passed]
        for proof in reversed(self.proofs):
            if not proof.passed:
                failures.insert(0, f"float64 proof ({proof.a} vs {proof.b}): {proof.breach()}")
        divergence = self.layers.first_divergence if self.layers else None
        unplaced = self.layers.first_unplaced if self.layers and failures and not divergence else None
        if unplaced:
            failures.insert(0, f"no layer compared out of tolerance, but from layer {unplaced} on no tensor of the conversion holds "
                               "the model's values: it parts from Keras there")
        if divergence and failures:
            failures.insert(0, f"first divergent layer: {divergence['label']} in {divergence['backend']} "
                               f"(max |Δ| {divergence['max_abs_diff']:.3g} > tolerance {divergence['tolerance']:.3g})")
        if failures:
            more = f"; {len(failures) - 1} more failure(s) in verify.json and report.md" if len(failures) > 1 else ""
            raise CheckFailed(f"verification failed — {failures[0]}{more}")


def run(artifacts: Artifacts, data: Path | None, out_dir: Path, progress: bool = True, manual_model=None,
        allow_unsafe_code: bool = False, plots: bool = True, keras: KerasModel | None = None) -> VerifyResult:
    """Compare every available backend pair (and every layer, where an ONNX file is given); write
    `verify.json`, `layers.png` and `report.md` into `out_dir`, and record `verify.json` in the manifest.

    Args:
        artifacts: the Keras model (required) and whichever of model.onnx / model.pt2 / model_opt.pt2 are to be checked.
        data: the CIFAR-10 folder, or None to compare on random inputs only (`cifar.resolve` tells which).
        out_dir: where the results (and the Keras reference, if recomputed) go.
        progress: show a progress bar per backend.
        manual_model: a hand-written model to use instead of the one built from the Keras file (the
            tests pass a deliberately broken one).
        allow_unsafe_code: let Keras deserialize Lambda layers if it must recompute its outputs.
        plots: draw `layers.png` (the tests that only read the result leave it out).
        keras: `artifacts.model` already read (else it is read here).

    Returns:
        The result; the caller decides how to report and calls `raise_if_failed`.
    """
    started = time.time()
    keras = _checked(artifacts, allow_unsafe_code, keras)
    paths = ModelPaths(Path(out_dir))
    # verify.json, layers.png and test_predictions appear together, on a clean end only: a kill midway
    # leaves the previous ones (or none), and Make runs the stage again
    with staged_files(paths.dir, [paths.verify_json]) as staging:
        result = _verify(artifacts, data, out_dir, progress, manual_model, allow_unsafe_code, keras, ModelPaths(staging), plots)
        kept = ModelPaths(staging).test_predictions.is_file()
    if not kept:  # an older one belongs to other files or another test set: gone with this verdict, not before it
        paths.test_predictions.unlink(missing_ok=True)
    report.write_report(paths.dir, keras.path)
    manifest.record(paths.dir, "verify", None, [paths.verify_json], started, passed=result.passed)
    return result


def _verify(artifacts: Artifacts, data: Path | None, out_dir: Path, progress: bool, manual_model, allow_unsafe_code: bool,
            keras: KerasModel, staged: ModelPaths, plots: bool) -> VerifyResult:
    """`run`'s work: every comparison, its records written into `staged` (Keras's outputs, a cache, into `out_dir`)."""
    found = keras_outputs.for_model(keras, out_dir, data, artifacts.onnx is not None, allow_unsafe_code)
    sets = found.reference.check_sets(data)
    sources = Sources(artifacts, keras, manual_model, inputs=found.reference.input_layout)
    outputs, not_applicable = _run_backends(sources, sets, {"keras": found.reference.outputs()}, progress)
    output_layout = found.reference.output_layout
    for result in outputs.values():  # several outputs named as Keras names them, in every backend
        for out in result.values():
            out.layout = output_layout
    _keep_test_predictions(staged, outputs, artifacts, data)
    keras64 = found.reference_f64.outputs() if found.reference_f64 is not None else None
    noise = precision.measure(outputs["keras"], keras64) if keras64 is not None else None
    pairs = [compare(b, outputs[b], a, outputs[a], keras.classifier, noise) for a, b in itertools.combinations(list(outputs), 2)]
    layer_report = (layer_compare.run(keras, sources, found.layers.outputs, found.layers.inputs,
                                      layers_f64=found.layers_f64.outputs if found.layers_f64 is not None else None)
                    if found.layers is not None else None)
    result = VerifyResult(
        pairs, list(outputs), not_applicable,
        test_images=len(sets.get("test", ())),
        random_images=sum(len(v) for k, v in sets.items() if k.startswith("random_")),
        user_inputs=len(sets.get(checkset.USER_SET, ())),
        layers=layer_report,
        saturation=precision.saturation(outputs["keras"], keras.classifier),
        input_ranges=checkset.ranges_of(sets),
        random_batch_sizes=sorted({checkset.batch_size_of(name) for name in sets if name.startswith("random_")}),
        inputs=found.reference.input_layout.describe() if found.reference.input_layout else "",
        outputs=output_layout.describe() if output_layout else "",
    )
    _float64(result, found, sources, sets, outputs, noise, keras.classifier)
    _other_lengths(result, found, sources, list(outputs), keras.classifier)
    _write(result, staged, plots)
    return result


def _float64(result: VerifyResult, found: KerasOutputs, sources: Sources, sets: dict[str, np.ndarray],
             outputs: dict[str, dict[str, Outputs]], noise: Float32Noise | None, classifier: bool) -> None:
    """The float64 proof and each float32 backend's noise ratio, into `result` (or why there are none)."""
    if found.reference_f64 is None or noise is None:
        result.float64_note = found.float64_note
        return
    keras64 = found.reference_f64.outputs()
    result.keras_noise = noise.outputs
    result.noise_ratios = {name: precision.ratio(out, keras64, noise) for name, out in outputs.items() if name != "keras"}
    proof_sets = checkset.proof_subset(sets)  # the first PROOF_SAMPLES of each set (why: checkset)
    proof_keras64 = _proof_rows(keras64)
    if "native" in outputs:
        result.native_proof = compare("native64", backends.run_sets(backends.native64(sources), proof_sets), "keras_f64",
                                      proof_keras64, classifier, proof=True)
    if sources.artifacts.onnx_f64 is None:
        result.float64_note = "no float64 conversion given (model_f64.onnx): the float64 proof is left out"
        return
    proof_outputs = backends.run_sets(backends.fx64(sources), proof_sets)
    result.proof = compare("fx64", proof_outputs, "keras_f64", proof_keras64, classifier, proof=True)


# The backends whose model takes a dimension the Keras model leaves open at any length: the native model, written
# from the Keras config alone. The others come from model.onnx, converted with that dimension at its check length.
ANY_LENGTH = ("native",)


def _other_lengths(result: VerifyResult, found: KerasOutputs, sources: Sources, backends_run: list[str], classifier: bool) -> None:
    """Where Keras's reference holds sets at `checkset.OTHER_LENGTHS` (a model of an open dimension), each backend of
    `ANY_LENGTH` that ran, against Keras at each length — within the model's own float32 noise there
    (`result.length_pairs`), and the native model in float64 (`result.length_proofs`) —; the other backends are
    named `result.fixed_length`. A length without Keras float64 outputs where the model has them is left out, said
    in `result.lengths_note` with those Keras did not run at."""
    by_length = found.reference.length_sets()
    notes = [found.reference.lengths_unavailable] if found.reference.lengths_unavailable else []
    result.fixed_length = [name for name in backends_run if name != "keras" and name not in ANY_LENGTH]
    takers = [name for name in backends_run if name in ANY_LENGTH]
    keras32 = found.reference.length_outputs()
    result.saturation.update(precision.saturation(keras32, classifier))  # agreement on saturated samples there proves nothing either
    keras64 = found.reference_f64.length_outputs() if found.reference_f64 is not None else None
    predictors = {name: backends.load(name, sources) for name in takers}
    for length, sets in sorted(by_length.items()):
        reference = {name: keras32[name] for name in sets}
        if keras64 is not None and not set(sets) <= set(keras64):  # its own noise unmeasured: no bound to judge it by
            notes.append(f"length {length}: no Keras float64 outputs")
            continue
        result.other_lengths.append(length)
        reference64 = {name: keras64[name] for name in sets} if keras64 is not None else None
        noise = precision.measure(reference, reference64) if reference64 is not None else None
        for name, predict in predictors.items():
            result.length_pairs.append(compare(f"{name}@{length}", backends.run_sets(predict, sets), f"keras@{length}", reference,
                                               classifier, noise))
        if "native" in predictors and reference64 is not None:
            result.length_proofs.append(compare(f"native64@{length}", backends.run_sets(backends.native64(sources), checkset.proof_subset(sets)),
                                                f"keras_f64@{length}", _proof_rows(reference64), classifier, proof=True))
    result.lengths_note = "; ".join(notes)


def _proof_rows(outputs: dict[str, Outputs]) -> dict[str, Outputs]:
    """Keras float64's outputs on the rows the proof runs (`checkset.proof_subset`)."""
    return {name: Outputs(*(None if part is None else part[:checkset.PROOF_SAMPLES] for part in (out.probs, out.logits)), out.layout)
            for name, out in outputs.items()}


def _keep_test_predictions(staged: ModelPaths, outputs: dict[str, dict[str, Outputs]], artifacts: Artifacts,
                           data: Path | None) -> None:
    """model.pt2's and ONNX Runtime's class for every test image, for `evaluate` (`test_predictions`, into
    `staged`); none where there was no test set (`run` then removes an older one)."""
    ran = {"torch": artifacts.pt2, "onnxruntime": artifacts.onnx}
    classes = {name: outputs[name]["test"].probs.argmax(axis=1) for name in ran if "test" in outputs.get(name, {})}
    if classes and data is not None:
        test_predictions.save(staged.test_predictions, classes, ran, cifar.locate(data))


def _checked(artifacts: Artifacts, allow_unsafe_code: bool, keras: KerasModel | None) -> KerasModel:
    """The Keras model, read once (`keras` if given); BadInput if it or a named artifact is missing."""
    if artifacts.model is None or not Path(artifacts.model).is_file():
        raise BadInput(f"Keras model {artifacts.model} does not exist; verify needs the .h5 as reference (--model)")
    keras = keras or KerasModel.open(artifacts.model, allow_unsafe_code)
    for name in ("onnx", "pt2"):
        path = getattr(artifacts, name)
        if path is not None and not Path(path).is_file():
            raise BadInput(f"{path} does not exist; run the stage that makes it or fix the path")
    return keras


def _run_backends(sources: Sources, sets: dict[str, np.ndarray], outputs: dict[str, dict[str, Outputs]],
                  progress: bool) -> tuple[dict[str, dict[str, Outputs]], dict[str, str]]:
    """`outputs` with every available backend's outputs on `sets` added, and {backend: why not} for those that do not apply."""
    from tqdm import tqdm

    not_applicable = {}
    total = sum(len(v) for v in sets.values())
    for name in backends.available(sources.artifacts):
        try:
            predict = backends.load(name, sources)
        except NotApplicable as exc:
            not_applicable[name] = str(exc)
            continue
        with tqdm(total=total, desc=f"verify {name}", unit="img", disable=not progress, leave=False) as bar:
            outputs[name] = backends.run_sets(predict, sets, bar)
    return outputs, not_applicable


def _write(result: VerifyResult, staged: ModelPaths, plots: bool) -> None:
    """verify.json and layers.png, into the staging folder."""
    summary = result.as_dict()
    staged.verify_json.write_text(json.dumps(summary, indent=2) + "\n")
    if summary["layers"] and plots:
        report.plot_layers(summary["layers"], staged.layers_png)
