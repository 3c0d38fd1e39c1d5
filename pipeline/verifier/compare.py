"""Compare two backends' outputs: max abs diff, max rel diff, argmax disagreements, images compared.

A classifier's outputs are probabilities: they must agree to ATOL_PROB and on every argmax. Other
models' outputs (an autoencoder's reconstruction, say) have their own scale: they are held to the rule
every intermediate layer is held to (`tolerances.output_tolerance`). Pre-softmax logits, where both
sides have them and Keras's own float32 noise on its logits was measured, are held to that scaled rule
widened by the noise; elsewhere they are reported, not gated (a logit in the hundreds carries float32
rounding far above the scaled rule, and without Keras's measured noise there is no bound to hold it to).

Where the model's own float32 rounding was measured against its float64 rebuild (`precision`), every
bound is widened to NOISE_FACTOR times it (`tolerances.with_noise`), and an argmax is gated only on
decisive samples — those whose float64 top-1/top-2 margin exceeds twice the bound; a flip at a near
tie is counted, not failed. The float64 proof (`proof=True`) is held to `tolerances.proof_tolerance`.

A model of several outputs (a class head and a box head, packed: `data.feeds`) is compared output by
output, each on its own scale and its own float32 noise, by the rule for outputs that are not class
probabilities; the pair passes where every output does, and a breach names the output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from pipeline.common.errors import CheckFailed
from pipeline.common.tolerances import REL_DIFF_FLOOR, output_tolerance, proof_tolerance, scaled_tolerance, with_noise
from pipeline.verifier.backends import Outputs
from pipeline.verifier.precision import Float32Noise


@dataclass
class PairResult:
    a: str
    b: str
    max_abs_diff: float  # probabilities
    max_rel_diff: float  # |a - b| / max(|b|, REL_DIFF_FLOOR), probabilities
    argmax_disagreements: int  # counted for every model
    images: int  # all images compared (test + random)
    test_images: int
    logits_max_abs_diff: float | None  # where both backends have logits
    tolerance: float  # on max_abs_diff
    classifier: bool
    logits_tolerance: float | None = None  # on logits_max_abs_diff
    decisive_disagreements: int = 0  # argmax disagreements where the float64 margin is decisive: gated, for classifiers
    keras_noise: float | None = None  # Keras float32's own error against float64, where measured
    # a model of several outputs: each output's {name, max_abs_diff, tolerance, passed}, in the model's order
    # (the fields above are then those of the output nearest its bound)
    outputs: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        logits_ok = self.logits_max_abs_diff is None or self.logits_tolerance is None or self.logits_max_abs_diff <= self.logits_tolerance
        return (self.max_abs_diff <= self.tolerance and logits_ok and (self.decisive_disagreements == 0 or not self.classifier)
                and all(part["passed"] for part in self.outputs))

    def breach(self) -> str:
        """max |Δ| against its tolerance (of each output out of its own, where there are several), and the
        logits' where they are out of theirs."""
        if self.outputs:
            return "; ".join(f"output {part['name']}: max |Δ| {part['max_abs_diff']:.3g} (tolerance {part['tolerance']:.3g})"
                             for part in self.outputs if not part["passed"]) or "every output within its tolerance"
        text = f"max |Δ| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g})"
        if self.logits_max_abs_diff is not None and self.logits_tolerance is not None and self.logits_max_abs_diff > self.logits_tolerance:
            text += f", logits max |Δ| {self.logits_max_abs_diff:.3g} (tolerance {self.logits_tolerance:.3g})"
        return text

    def as_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


def compare(a: str, a_out: dict[str, Outputs], b: str, b_out: dict[str, Outputs], classifier: bool = True,
            noise: Float32Noise | None = None, proof: bool = False) -> PairResult:
    """Compare backends `a` and `b` over the check sets both have (`b` is taken as the reference scale).

    `noise`: the model's own float32 rounding, which widens the bounds (see the module docstring);
    `proof`: both sides are float64 (the proof), held to `proof_tolerance`."""
    names = sorted(set(a_out) & set(b_out))
    if not names:
        raise ValueError(f"{a} and {b} share no check set")
    layout = b_out[names[0]].layout or a_out[names[0]].layout
    if layout is not None and layout.several:
        return _by_output(a, a_out, b, b_out, names, layout, noise, proof)
    for name in names:
        if a_out[name].probs.shape != b_out[name].probs.shape:
            raise ValueError(f"{a} and {b} disagree on output shape for {name}: {a_out[name].probs.shape} vs {b_out[name].probs.shape}")
    pa = np.concatenate([a_out[n].probs for n in names]).astype(np.float64)
    pb = np.concatenate([b_out[n].probs for n in names]).astype(np.float64)
    diff = np.abs(pa - pb)
    has_logits = all(a_out[n].logits is not None and b_out[n].logits is not None for n in names)
    logits_diff = (
        max(float(np.abs(a_out[n].logits.astype(np.float64) - b_out[n].logits).max()) for n in names) if has_logits else None
    )
    logits_scale = max(float(np.abs(b_out[n].logits).max()) for n in names) if has_logits else 0.0
    scale = float(np.abs(pb).max())
    if proof:
        tolerance, logits_tolerance = proof_tolerance(scale), proof_tolerance(logits_scale)
    else:
        tolerance = with_noise(output_tolerance(classifier, scale), noise.outputs if noise else None)
        logits_tolerance = (with_noise(scaled_tolerance(logits_scale), noise.logits)
                            if noise is not None and noise.logits is not None else None)
    flips = pa.reshape(len(pa), -1).argmax(1) != pb.reshape(len(pb), -1).argmax(1)
    decisive = flips
    if noise is not None and all(n in noise.margins for n in names):
        decisive = flips & (np.concatenate([noise.margins[n] for n in names]) > 2 * tolerance)
    return PairResult(
        a=a,
        b=b,
        max_abs_diff=float(diff.max()),
        max_rel_diff=float((diff / np.maximum(np.abs(pb), REL_DIFF_FLOOR)).max()),
        argmax_disagreements=int(flips.sum()),
        images=len(pa),
        test_images=len(a_out["test"].probs) if "test" in names else 0,
        logits_max_abs_diff=logits_diff,
        tolerance=tolerance,
        classifier=classifier,
        logits_tolerance=logits_tolerance if has_logits else None,  # None: reported, not gated
        decisive_disagreements=int(decisive.sum()),
        keras_noise=noise.outputs if noise else None,
    )


def _by_output(a: str, a_out: dict[str, Outputs], b: str, b_out: dict[str, Outputs], names: list[str], layout,
               noise: Float32Noise | None, proof: bool) -> PairResult:
    """`compare` of each of a model's several outputs on its own (see the module docstring), as one result."""
    parts = []
    for output, columns in layout.parts():
        own = None
        if noise is not None:
            own = Float32Noise(noise.by_output.get(output, noise.outputs), None)
        parts.append(compare(a, {n: Outputs(a_out[n].probs[:, columns]) for n in names}, b,
                             {n: Outputs(b_out[n].probs[:, columns]) for n in names}, classifier=False, noise=own, proof=proof))
    worst = max(parts, key=lambda part: part.max_abs_diff / part.tolerance if part.tolerance > 0 else float("inf"))
    return replace(worst, max_rel_diff=max(part.max_rel_diff for part in parts),
                   argmax_disagreements=0, decisive_disagreements=0,  # a row of several outputs has no one argmax
                   keras_noise=noise.outputs if noise else None,
                   outputs=[{"name": output, "max_abs_diff": part.max_abs_diff, "tolerance": part.tolerance, "passed": part.passed}
                            for (output, _), part in zip(layout.parts(), parts, strict=True)])


def require(result: PairResult, what: str, with_counts: bool = True) -> PairResult:
    """`result` if it passed; else CheckFailed saying `what` disagrees, by how much, against which tolerance."""
    if result.passed:
        return result
    counts = f", {result.decisive_disagreements} argmax disagreements on {result.images} inputs" if with_counts else ""
    raise CheckFailed(f"{what}: {result.breach()}{counts}")
