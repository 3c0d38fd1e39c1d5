"""Leaves every other part imports: errors, paths, tolerances, atomic writes, checksums, provenance,
figures, and the contract between the torch side and the TensorFlow process (`keras_job`).

Nothing here imports torch, TensorFlow, ONNX or another part of the pipeline at import time.
"""
