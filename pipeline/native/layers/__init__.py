"""How each Keras layer is written as PyTorch source: a registry keyed by Keras class name (`registry`),
filled by one module per layer family, as onnx2torch's `node_converters/` are.

An emitter gets the layer (its config and weights) and its input tensors, and returns the submodule it
needs (source of a constructor, or None), the forward expression, and where each Keras weight goes in
the state_dict with its layout transform. Inside the generated model every tensor of rank ≥ 3 is
channels-first — (N, C, H, W), (N, C, W) — so Keras's channel axis (−1) is torch's axis 1; layers that
depend on the order of the other axes (Flatten, Reshape, Permute) work in Keras's order and come back.

A new family is a module here whose emitters are decorated with `registry.emits`, found and imported by
`native.emitters` — the one entry point, which the generator and the supported-layers table
(`python -m pipeline layers`) use. This file imports nothing: a family imports `registry`, and a package
that imported its families would be imported by each of them first.
"""
