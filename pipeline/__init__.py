"""Keras .h5/.keras → ONNX → torch.fx / torch.export, with proof of equality.

The subpackages are layers; imports run one way, from the top of this list to the bottom:

- `cli` — argv, printing, exit codes (only `__main__` imports it);
- `stages` — one module per stage (`to_onnx`, `to_torch`, `verify`, `evaluate`, `bench`, `zoo`, `fuzz`, `report`);
- `verifier` — backends, pairwise comparison, float32 noise against float64 (`precision`), Keras's
  reference outputs, layer map and layer-by-layer comparison, hand-written ResNet8;
- `fuzz` (beside the verifier) — damaged and hostile copies of a model file, and how a case ends;
- `converters` — ONNX graph questions and rewrites, onnx2torch + torch.export, FX passes;
- `runtimes` — `.pt2` loader, ONNX Runtime sessions, the TensorFlow process launcher, the torch device;
- `keras_file`, `data` — the user's Keras file read without Keras; the test set and check sets;
- `common` — errors, paths, tolerances, atomic writes, checksums, manifest, figures, the TensorFlow job contract.

`tf_side` is the TensorFlow process, run only as `python -m pipeline.tf_side`: no other subpackage
imports it (TensorFlow and onnx2torch in one process segfault). Importing this package imports
nothing heavy.
"""

__version__ = "0.1.0"
