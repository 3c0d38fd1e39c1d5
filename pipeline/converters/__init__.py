"""The converters and their repairs: ONNX graph questions and rewrites (`onnx_graph`, `onnx_fixes`, pure
ONNX, also used in the TensorFlow process), onnx2torch's GraphModule and torch.export (`to_fx`), and
the FX rewrites that make it exportable (`fx_passes`) and fast (`fx_optimize`). Converters convert:
checking a result against another backend is the verifier's job, composed by the stages."""
