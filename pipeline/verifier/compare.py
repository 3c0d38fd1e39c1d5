"""Compare two backends' outputs: max abs diff, max rel diff, argmax disagreements, images compared.

A classifier's outputs are probabilities: they must agree to ATOL_PROB and on every argmax. Other
models' outputs (an autoencoder's reconstruction, say) have their own scale: they are held to the rule
every intermediate layer is held to (`tolerances.output_tolerance`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.common.errors import CheckFailed
from pipeline.common.tolerances import REL_DIFF_FLOOR, output_tolerance
from pipeline.verifier.backends import Outputs


@dataclass
class PairResult:
    a: str
    b: str
    max_abs_diff: float  # probabilities
    max_rel_diff: float  # |a - b| / max(|b|, REL_DIFF_FLOOR), probabilities
    argmax_disagreements: int  # counted for every model, gated for classifiers only
    images: int  # all images compared (test + random)
    test_images: int
    logits_max_abs_diff: float | None  # where both backends have logits
    tolerance: float  # on max_abs_diff
    classifier: bool

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and (self.argmax_disagreements == 0 or not self.classifier)

    def as_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


def compare(a: str, a_out: dict[str, Outputs], b: str, b_out: dict[str, Outputs], classifier: bool = True) -> PairResult:
    """Compare backends `a` and `b` over the check sets both have (`b` is taken as the reference scale)."""
    names = sorted(set(a_out) & set(b_out))
    if not names:
        raise ValueError(f"{a} and {b} share no check set")
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
    return PairResult(
        a=a,
        b=b,
        max_abs_diff=float(diff.max()),
        max_rel_diff=float((diff / np.maximum(np.abs(pb), REL_DIFF_FLOOR)).max()),
        argmax_disagreements=int((pa.reshape(len(pa), -1).argmax(1) != pb.reshape(len(pb), -1).argmax(1)).sum()),
        images=len(pa),
        test_images=len(a_out["test"].probs) if "test" in names else 0,
        logits_max_abs_diff=logits_diff,
        tolerance=output_tolerance(classifier, float(np.abs(pb).max())),
        classifier=classifier,
    )


def require(result: PairResult, what: str, with_counts: bool = True) -> PairResult:
    """`result` if it passed; else CheckFailed saying `what` disagrees, by how much, against which tolerance."""
    if result.passed:
        return result
    counts = f", {result.argmax_disagreements} argmax disagreements on {result.images} inputs" if with_counts else ""
    raise CheckFailed(f"{what}: max |Δ| {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g}){counts}")
