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
