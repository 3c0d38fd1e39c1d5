"""Keras .h5/.keras → ONNX → torch.fx / torch.export, with proof of equality.

`pipeline.convert(MODEL)` and `pipeline.load(FOLDER)` (`api`) are the Python door; `keras2torch` (`cli`) the command.

The subpackages are layers; imports run one way, from the top of this list to the bottom:

- `api` — `convert`, `load`, `Conversion`, `ConversionError`: the command's program, called from Python;
- `cli` — argv, printing, exit codes (`__main__` and `api` import it);
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

_API = ("convert", "load", "Conversion", "Verdict", "ConversionError", "Refused", "NotEqual")
__all__ = list(_API)


def __getattr__(name: str):
    """`pipeline.convert` and the rest of `api`, imported on first use: `import pipeline` stays light."""
    if name in _API:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
