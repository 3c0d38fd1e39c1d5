"""The stages, one module each. Each stage has one public `run(...)` that takes paths (and a small
options dataclass), writes its artifacts and returns a small result; the conversion stages and the
checks record what they wrote in `manifest.json`:

- `to_onnx`: Keras → `model.onnx` in the TensorFlow process, then checked against Keras;
- `to_torch`: `model.onnx` → `model.pt2`, `model_opt.pt2`, each checked against ONNX Runtime;
- `verify`: every backend against every other, and layer by layer;
- `evaluate`: CIFAR-10 accuracy, gated;
- `bench`: speed (`bench.json`, `bench.png`; not provenance, so not in the manifest);
- `zoo`: Keras Applications with calibrated random weights through the three above (`zoo/summary.md`);
- `report`: no stage of its own — the tables and `report.md`, rendered from the stages' JSON files.

A stage composes a converter and the verifier: the converter converts, the verifier judges, the stage
fails hard on a breach. Printing, argv and exit codes are the CLI's.
"""
