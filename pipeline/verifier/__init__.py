"""The verifier: is the conversion the same function as the Keras model, and if not, where does it part?

- `backends`: every way to run the model (ONNX Runtime, onnx2torch's FX graph, the `.pt2` programs,
  the hand-written ResNet8), loaded once from `Sources`; Keras's outputs come from `keras_outputs`;
- `compare`: one pair of backends over the check sets, and `require`, which turns a breach into an error;
- `precision`: the model's own float32 noise against its float64 rebuild, and saturated outputs;
- `keras_reference` (reading the files) and `keras_outputs` (reusing or recomputing them);
- `placement`: which tensor of the converted graph is each Keras layer's output (or a folded group's),
  confirmed by value in float64; `layer_compare`: those tensors compared across backends;
- `resnet8`: the hand-written, independent ResNet8.
"""
