"""The bare tools, in the TensorFlow process — `python -m pipeline.tf_side.bare MODEL FOLDER OPSET`: what a user
without this pipeline runs (`keras.models.load_model`, tf-keras's for a file Keras 3 cannot read, then
`tf2onnx.convert.from_keras` with its defaults; nothing checked), the floor the pipeline must meet
(`stages.floor`). Writes `FOLDER/bare.onnx`, and Keras's outputs on seeded inputs (`FOLDER/bare_io.npz`), and
prints one JSON line saying how far it got. A file whose loading would run code (a Lambda) is not loaded: the
safety check comes first here too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from pipeline.common.keras_job import BARE_IO, BARE_ONNX  # noqa: E402
from pipeline.common.messages import one_line  # noqa: E402
from pipeline.data import checkset  # noqa: E402
from pipeline.keras_file import safety  # noqa: E402

BARE_BATCH = 8  # seeded inputs a model's outputs are compared on
BARE_VOCABULARY = 10  # token ids drawn where no Embedding states its vocabulary (an integer input)


def _load(path: Path):
    """As a user loads a file: Keras 3, then tf-keras (the Keras 2 API) where Keras 3 cannot read it."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception:  # noqa: BLE001 — a user's next try: the Keras that wrote the file
        import tf_keras

        return tf_keras.models.load_model(path, compile=False)


def _inputs(model) -> list[np.ndarray]:
    """Seeded inputs of each of the model's inputs (open dimensions at `checkset.OPEN_DIMENSION_LENGTH`): token ids
    below the smallest Embedding vocabulary for an integer input or one an Embedding reads, else uniform in [0, 1)."""
    rng = np.random.default_rng(checkset.RANDOM_SEED)
    embeddings = [layer for layer in _layers(model) if hasattr(layer, "input_dim")]
    read = {id(_input_of(layer)) for layer in embeddings}
    arrays = []
    for tensor in model.inputs:
        shape = (BARE_BATCH, *checkset.fill_open(tuple(tensor.shape)[1:]))
        dtype = str(getattr(tensor.dtype, "name", tensor.dtype))  # Keras 3 names it; tf-keras gives a tf.DType
        if "int" in dtype or id(tensor) in read:
            array = rng.integers(0, min((int(layer.input_dim) for layer in embeddings), default=BARE_VOCABULARY), shape)
        else:
            array = rng.uniform(0, 1, shape)
        arrays.append(array.astype(dtype if "int" in dtype else np.float32))
    return arrays


def _input_of(layer):
    """The tensor `layer` was called on; None for a layer called more than once (Keras raises then)."""
    try:
        return layer.input
    except (AttributeError, ValueError, RuntimeError):
        return None


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def run(model_path: Path, folder: Path, opset: int) -> dict:
    """How far the bare tools get with `model_path`: {"loaded", "converted", "error", "keras"}; the ONNX file and
    Keras's outputs written into `folder` as they come."""
    result = {"loaded": False, "converted": False, "error": "", "keras": ""}
    try:
        safety.check(model_path, allow_unsafe_code=False)
        model = _load(model_path)
        result["loaded"], result["keras"] = True, type(model).__module__.split(".")[0]
        inputs = _inputs(model)
        outputs = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        np.savez(folder / BARE_IO, **{f"input_{i}": a for i, a in enumerate(inputs)},
                 **{f"output_{i}": np.asarray(a) for i, a in enumerate(outputs)})
        import tf2onnx

        tf2onnx.convert.from_keras(model, opset=opset, output_path=str(folder / BARE_ONNX))
        result["converted"] = True
    except Exception as exc:  # noqa: BLE001 — the floor records how far the bare tools got, whatever stopped them
        result["error"] = one_line(f"{type(exc).__name__}: {exc}")[:300]
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    model_path, folder, opset = Path(argv[0]), Path(argv[1]), int(argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(model_path, folder, opset)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
