"""The TensorFlow process, fenced off: run only as `python -m pipeline.tf_side JOB RESULT`.

Importing TensorFlow and then onnx2torch or torchvision in one process segfaults (../shared/NOTES.md).
So no module outside this subpackage imports it (a test reads the import graph), nothing here imports
torch, and the two sides talk only through the files of `common.keras_job` and the exit code.

- `worker`: reads the job, runs its parts, writes the result or one error line;
- `loading`: Keras 3 first, tf-keras (Keras 2) for legacy files Keras 3 cannot read;
- `to_onnx`: tf2onnx conversion, with the ONNX rewrites of `converters.onnx_fixes`;
- `grouped_conv`: grouped convolutions without Keras 3's XLA wrapper (convertible, and fast in float64);
- `outputs`: Keras's outputs on the check set and every layer's output, as plain `.npz`;
- `float64`: the model rebuilt in float64 (the float64 proof's ground truth);
- `timing`: Keras `predict` images/s for `make bench`;
- `zoo_build`: Keras Applications with calibrated random weights (`python -m pipeline.tf_side.zoo_build`).

Import this package's modules only from each other: this `__init__` imports nothing.
"""
