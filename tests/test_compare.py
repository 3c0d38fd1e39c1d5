import numpy as np
import pytest

from pipeline.verifier.backends import Outputs
from pipeline.verifier.compare import compare
from pipeline.common.tolerances import ATOL_PROB, REL_DIFF_FLOOR


def _probs(n=20, seed=0):
    logits = np.random.default_rng(seed).normal(size=(n, 10)).astype(np.float32)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_identical_outputs_pass():
    p = _probs()
    result = compare("a", {"test": Outputs(p)}, "b", {"test": Outputs(p.copy())})
    assert result.passed and result.max_abs_diff == 0 and result.images == 20 and result.test_images == 20


@pytest.mark.parametrize("delta, passes", [(ATOL_PROB * 0.5, True), (ATOL_PROB * 2, False)])
def test_tolerance_edge(delta, passes):
    p = _probs()
    q = p.copy()
    q[3, 4] += delta
    result = compare("a", {"random_7": Outputs(q)}, "b", {"random_7": Outputs(p)})
    assert result.passed is passes
    assert result.max_abs_diff == pytest.approx(delta, rel=1e-3)


def test_argmax_disagreement_fails_even_within_tolerance():
    p = np.full((2, 10), 0.1, dtype=np.float32)
    p[0, 0] += 1e-6
    q = p.copy()
    q[0, 0] -= 2e-6  # class 0 no longer the largest: argmax moves, diff is 2e-6 < ATOL_PROB
    result = compare("a", {"test": Outputs(q)}, "b", {"test": Outputs(p)})
    assert result.argmax_disagreements == 1 and not result.passed


def test_relative_diff_uses_floor_and_sets_are_pooled():
    p = np.array([[1e-20, 1.0]], dtype=np.float64)
    q = np.array([[2e-20, 1.0]], dtype=np.float64)
    result = compare("a", {"x": Outputs(q), "y": Outputs(p)}, "b", {"x": Outputs(p), "y": Outputs(p)})
    assert result.max_rel_diff == pytest.approx(1e-20 / REL_DIFF_FLOOR)
    assert result.images == 2 and result.test_images == 0


def test_logits_reported_where_both_have_them():
    p = _probs()
    logits = np.zeros_like(p)
    both = compare("a", {"t": Outputs(p, logits + 1e-3)}, "b", {"t": Outputs(p, logits)})
    one = compare("a", {"t": Outputs(p)}, "b", {"t": Outputs(p, logits)})
    assert both.logits_max_abs_diff == pytest.approx(1e-3) and one.logits_max_abs_diff is None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="output shape"):
        compare("a", {"t": Outputs(_probs(3))}, "b", {"t": Outputs(_probs(4))})


def test_non_classifier_outputs_use_the_scale_rule():
    from pipeline.common.tolerances import LAYER_RTOL, scaled_tolerance

    reference = np.full((3, 640), 1000.0)
    close = reference + 1000.0 * LAYER_RTOL * 0.5  # within 1e-5 of the scale, far beyond 1e-5 absolute
    far = reference + 1000.0 * LAYER_RTOL * 2
    ok = compare("a", {"t": Outputs(close)}, "b", {"t": Outputs(reference)}, classifier=False)
    bad = compare("a", {"t": Outputs(far)}, "b", {"t": Outputs(reference)}, classifier=False)
    assert ok.tolerance == pytest.approx(scaled_tolerance(1000.0))
    assert ok.passed and not bad.passed
    assert not compare("a", {"t": Outputs(close)}, "b", {"t": Outputs(reference)}, classifier=True).passed
