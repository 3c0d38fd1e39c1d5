"""Build the zoo in the TensorFlow process: Keras Applications architectures with calibrated random
weights, each saved as `.keras` and as a legacy `.h5` — `python -m pipeline.tf_side.zoo_build OUT NAME...`.

`weights=None` gives degenerate outputs (uniform probabilities, or one-hot), which prove nothing
(../shared/NOTES.md). So, with our own seed: BatchNormalization gamma and beta are randomised and its
moving statistics set from one training-mode pass (momentum 0) on inputs in the model's range, and the
head is scaled so the logits of that batch spread by ZOO_LOGIT_SPREAD — probabilities neither uniform
nor one-hot.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ZOO_SEED = 20261126
ZOO_PIXELS = 96  # small, as the issue asks (64–96 px); the smallest size every architecture here takes
ZOO_CLASSES = 10
ZOO_LOGIT_SPREAD = 4.0  # standard deviation of a sample's logits across classes, after scaling the head


def build(name: str, seed: int = ZOO_SEED):
    """The architecture `name` with calibrated random weights; and the (low, high) range it was calibrated on."""
    import keras

    keras.utils.set_random_seed(seed)
    make = getattr(keras.applications, name)
    model = make(input_shape=(ZOO_PIXELS, ZOO_PIXELS, 3), weights=None, classes=ZOO_CLASSES)
    # Models that rescale their own inputs (EfficientNet, MobileNetV3, ConvNeXt) take raw pixels.
    rescales = any(type(layer).__name__ in ("Rescaling", "Normalization") for layer in model.layers[:4])
    value_range = (0.0, 255.0) if rescales else (0.0, 1.0)
    rng = np.random.default_rng(seed)
    batch = rng.uniform(*value_range, size=(32, ZOO_PIXELS, ZOO_PIXELS, 3)).astype(np.float32)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:  # gamma and beta only where the layer has them (InceptionV3's have no gamma: scale=False)
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape).astype(np.float32))
        layer.momentum = 0.0
    model(batch, training=True)  # momentum 0: the moving statistics become this batch's
    for layer in norms:
        layer.momentum = 0.99
    head = model.layers[-1]
    if isinstance(head, keras.layers.Dense):
        features = keras.Model(model.inputs, head.input).predict(batch, verbose=0)
        kernel, bias = head.get_weights()
        logits = features @ kernel + bias
        spread = float(np.std(logits - logits.mean(axis=1, keepdims=True)))
        scale = ZOO_LOGIT_SPREAD / spread if spread > 0 else 1.0
        head.set_weights([kernel * scale, bias * scale])
    return model, value_range


def main(argv: list[str] | None = None) -> int:
    """Build each named architecture into OUT as NAME.keras and NAME.h5; print one JSON line per model."""
    argv = sys.argv[1:] if argv is None else argv
    out, names = Path(argv[0]), argv[1:]
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        started = time.perf_counter()
        model, value_range = build(name)
        probe = np.random.default_rng(1).uniform(*value_range, size=(64, ZOO_PIXELS, ZOO_PIXELS, 3)).astype(np.float32)
        top = model.predict(probe, verbose=0).max(axis=1)
        model.save(str(out / f"{name}.keras"))
        model.save(str(out / f"{name}.h5"))
        print(json.dumps({"model": name, "layers": len(model.layers), "range": value_range, "seconds": round(time.perf_counter() - started, 1),
                          "top_probability": [round(float(np.percentile(top, q)), 3) for q in (5, 50, 95)]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
