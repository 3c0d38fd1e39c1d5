"""Keras .h5 → ONNX → torch.fx conversion with proof of equality.

Stages live in one module each (`fetch`, `onnx_export`, `torch_export`, `verify`, `evaluate`);
`python -m pipeline` is the command line. This package imports nothing heavy at import time:
TensorFlow must stay in its own process (see `keras_worker`).
"""

__version__ = "0.1.0"
