"""Tolerances and gates, each with the reason for its value. Tests import these same constants."""

# float32 conversions of ResNet8 agree with Keras to ≤ 3.6e-6 in probability over the 10,000 test
# images (onnxruntime 3.6e-6, onnx2torch 2.1e-6; ../shared/NOTES.md): only summation order differs.
# 1e-5 leaves ~3x headroom for other BLAS/threads and still catches a single weight changed by 2e-2,
# which moves probabilities by up to ~1e-2 while flipping no prediction (so argmax checks alone
# and the often-quoted ±0.01 both miss it).
ATOL_PROB = 1e-5

# Relative differences are reported, not gated: a probability of 1e-20 in one backend and 2e-20 in
# another is a 100% relative difference that means nothing. The denominator is floored here so the
# reported figure speaks only about values that can matter.
REL_DIFF_FLOOR = 1e-6

# MLPerf Tiny's quality target for the ResNet8 image-classification benchmark (top-1 on CIFAR-10).
ACCURACY_GATE = 0.85

# Layer-by-layer: |Δ| ≤ LAYER_ATOL + LAYER_RTOL · max|reference layer output|. Activations here reach
# hundreds (inputs are 0..255), so an absolute bound alone cannot fit every layer; float32 reordering
# leaves ≲ 1e-6 of a layer's scale (measured on ResNet8, 107 images: ≤ 8.3e-7 for every intermediate
# layer and backend, 1.7e-6 at the softmax output), while a single weight changed by 2e-2 moves its
# layer by ~1e-3 of scale or more. LAYER_ATOL covers layers whose outputs are all near zero.
LAYER_RTOL = 1e-5
LAYER_ATOL = 1e-6


def scaled_tolerance(scale: float) -> float:
    """The bound on max |Δ| of a tensor whose reference reaches `scale` in absolute value:
    LAYER_ATOL + LAYER_RTOL · scale (every layer, and the outputs of models that are not classifiers)."""
    return LAYER_ATOL + LAYER_RTOL * scale


def output_tolerance(classifier: bool, scale: float) -> float:
    """The bound on max |Δ| of a model's outputs: ATOL_PROB for class probabilities, else `scaled_tolerance`."""
    return ATOL_PROB if classifier else scaled_tolerance(scale)


def short(value: float) -> str:
    """A tolerance as the reports print it: 1e-5, not 1e-05."""
    return f"{value:g}".replace("e-0", "e-")


def describe_scaled(of: str = "max|reference|", atol: float = LAYER_ATOL, rtol: float = LAYER_RTOL) -> str:
    """The scaled rule as the reports print it (`atol`, `rtol`: as a result file recorded them)."""
    return f"{short(atol)} + {short(rtol)} · {of}"
