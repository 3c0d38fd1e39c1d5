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

# The float64 proof: the Keras model rebuilt in float64 against its float64 conversion (tf2onnx →
# onnx2torch, run in float64). Measured on ResNet8: 5.2e-15 in probability (256 random inputs over
# 0..255); float64 rounding is ~1e-16 of a value, accumulated over a few hundred terms per output. A
# wrong conversion shows at 1e-4 of scale or more. 1e-9 of the tensor's scale leaves five orders of
# magnitude above the measured rounding and five below any fault: no float32 noise in between.
PROOF_RTOL = 1e-9
PROOF_ATOL = 1e-12  # outputs that are all (near) zero

# Float32 judged against the model's own rounding: a float32 artifact may differ from Keras by up to
# NOISE_FACTOR times Keras float32's own largest error against its float64 rebuild, over the pooled
# check set (NOTES: judge pooled figures, not a tiny set, whose own error can be small by chance).
# Measured, as (artifact vs Keras float64) / (Keras float32 vs Keras float64) over the pooled check set:
# ResNet8 0.96–1.20 for ONNX Runtime, FX, model.pt2, model_opt.pt2 and the hand-written model; the 26
# layer-family models 0.38–1.19. A correct float32 conversion is as exact as the original model is in
# float32; 4 leaves 3× headroom over the worst, and on ResNet8 (noise 4.4e-6) keeps the bound at
# 1.8e-5 — a weight changed by 2e-2 still moves the outputs by ~1e-2.
NOISE_FACTOR = 4.0


# Placing a layer by value (`verifier.placement`): the converted graph run in float64 differs from Keras
# float64 only by the float32 rounding of its own weights (tf2onnx folds BatchNorm into the convolution's
# weights in float32), which is of the order of Keras float32's own error at that layer. Measured on
# trained models (tf-keras .h5 and Keras 3, conv → BN → ReLU, depthwise-separable 96×96, 1×k signal
# convolutions; 8 inputs): the right tensor at ≤ 0.57× that error (most ≤ 0.13×), every other tensor
# of its size at ≥ 3,000× — NOISE_FACTOR sits between, by orders of magnitude either way.
def placement_tolerance(scale: float, keras_noise: float | None) -> float:
    """How far the graph's float64 value may be from Keras float64's and still be that layer's output:
    NOISE_FACTOR × the layer's own float32 error, at least the proof's bound for its `scale`."""
    return with_noise(proof_tolerance(scale), keras_noise)


def proof_tolerance(scale: float) -> float:
    """The float64 proof's bound on max |Δ| of a tensor whose reference reaches `scale`."""
    return PROOF_ATOL + PROOF_RTOL * scale


def with_noise(tolerance: float, keras_noise: float | None) -> float:
    """`tolerance`, widened to NOISE_FACTOR × the model's own float32 error where that was measured."""
    return tolerance if keras_noise is None else max(tolerance, NOISE_FACTOR * keras_noise)


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


# Training parity (native model vs Keras, one step in float32): relative L2 error of every gradient,
# BatchNorm moving statistic and optimizer update. Two float32 frameworks summing in different orders
# agree to ~1e-6 of a tensor's norm; a wrong BatchNorm momentum or epsilon moves them by 1e-3 or more.
TRAIN_RTOL = 1e-4
# A gradient zero in exact arithmetic (a conv bias right before BatchNorm) holds float32 noise only, and
# a deep model's float32 step carries more rounding than 1e-4 on some tensors. The denominator is floored
# so that a tensor passes when Keras and torch differ by no more than TRAIN_NOISE_FACTOR times the float32
# steps' own error (the larger of torch's and Keras's against their float64 steps; the floor is that
# bound / TRAIN_RTOL): judged against measured rounding, as the outputs are. A tensor well above its
# rounding is untouched by the floor, and a wrong BatchNorm momentum or epsilon is far above both.
TRAIN_NOISE_FACTOR = NOISE_FACTOR
