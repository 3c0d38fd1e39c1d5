"""The TensorFlow side, run only as its own process: `python -m pipeline.keras_worker ...`.

Importing TensorFlow and then onnx2torch or torchvision in one process segfaults (../shared/NOTES.md),
so nothing here may import torch, and the rest of the package talks to this module only through files
and the exit code. It does two jobs in one process (TensorFlow takes seconds to import):

- `--onnx PATH`: load the Keras model (compile=False) and convert it with tf2onnx (explicit input
  signature, dynamic batch), run the full `onnx.checker`, write the file;
- `--reference PATH`: Keras's probabilities (and pre-softmax logits where the last layer is a Dense
  with softmax inside it) on the check set, as a plain .npz.

Errors end with exit code 2 and one line on stderr prefixed `pipeline-error: `.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import warnings

import numpy as np

# Keras 3 warns on every call that a legacy model's input is named; the warning says nothing useful.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

from pipeline import checkset  # noqa: E402  (numpy only)
from pipeline.atomic import atomic_path  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402

INPUT_NAME = "input"
ERROR_PREFIX = "pipeline-error: "


def load_keras_model(path: Path, allow_unsafe_code: bool = False):
    """Keras 3's loader, in safe mode unless the user opted in; for a legacy .h5 that Keras 3 cannot
    deserialize (Keras 2 configs, e.g. a DepthwiseConv2D with a `groups` key), tf-keras — the Keras 2
    API — instead. The caller has run `model_check.check` first: tf-keras runs a Lambda's code on
    load, so nothing reaches it that the safety check has not seen."""
    import zipfile

    import keras

    try:
        return keras.models.load_model(str(path), compile=False, safe_mode=not allow_unsafe_code)
    except Exception as keras3_error:  # noqa: BLE001 — any deserialization failure; tried again below
        if zipfile.is_zipfile(path):
            raise  # a .keras file is Keras 3's own format: tf-keras would not do better
        try:
            import tf_keras
        except ImportError:
            raise ValueError(f"Keras 3 cannot load this legacy .h5 ({keras3_error}); install tf-keras "
                             "(pip install tf-keras, the Keras 2 API) to load Keras 2 files") from keras3_error
        try:
            return tf_keras.models.load_model(str(path), compile=False)
        except Exception as keras2_error:  # noqa: BLE001
            raise ValueError(f"neither Keras 3 ({keras3_error}) nor tf-keras ({keras2_error}) can load it") from keras2_error


def keras_api(model):
    """The Keras package a loaded model belongs to: `keras` (Keras 3) or `tf_keras` (the fallback)."""
    if type(model).__module__.startswith("tf_keras"):
        import tf_keras

        return tf_keras
    import keras

    return keras


def input_shape_of(model) -> tuple[int, ...]:
    """One sample's input shape (no batch dimension); every dimension must be known."""
    if len(model.inputs) != 1:
        raise ValueError(f"the model has {len(model.inputs)} inputs; only single-input models are supported")
    shape = tuple(model.inputs[0].shape[1:])
    if any(dim is None for dim in shape):
        raise ValueError(f"the model's input shape {shape} has unknown dimensions; give it a fixed input shape")
    return tuple(int(dim) for dim in shape)


def convert(model, onnx_path: Path, opset: int) -> dict:
    """tf2onnx conversion with a dynamic batch dimension, non-ONNX ops rewritten or named
    (`onnx_fixes`), full checker, written atomically."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    from pipeline import onnx_fixes

    keras = keras_api(model)
    if isinstance(model, keras.Sequential):
        # tf2onnx looks outputs up by `output_names`, which a Keras 3 Sequential lacks; the same graph as a
        # functional model has them.
        model = keras.Model(model.inputs, model.outputs)
    spec = (tf.TensorSpec((None, *input_shape_of(model)), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    rewrites = onnx_fixes.rewrite(proto)
    onnx_fixes.check_ops(proto, opset, [layer.name for layer in model.layers])
    onnx_fixes.canonical_names(proto)  # after the check: its message quotes the names tf2onnx gave
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(onnx_path) as tmp:
        onnx.save(proto, str(tmp))
    return {"onnx_inputs": [i.name for i in proto.graph.input], "onnx_outputs": [o.name for o in proto.graph.output],
            "onnx_rewrites": {name: count for name, count in rewrites.items() if count}}


def outputs_model(model):
    """(model giving [probs, features], kernel, bias) when the last layer is a Dense with softmax inside
    it — the pre-softmax logits are then features @ kernel + bias — else (model, None, None)."""
    keras = keras_api(model)
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if not isinstance(last, keras.layers.Dense) or activation != "softmax":
        return model, None, None
    return keras.Model(model.inputs, [model.outputs[0], last.input]), last.kernel, last.bias


def predict(outputs, inputs: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Keras outputs of `inputs` run in batches of `batch_size`: `probs`, and `logits` when available."""
    import tensorflow as tf

    model, kernel, bias = outputs
    result = model.predict(inputs, batch_size=batch_size, verbose=0)
    if kernel is None:
        return {"probs": np.asarray(result)}
    probs, features = result
    return {"probs": probs, "logits": np.asarray(tf.matmul(features, kernel) + bias)}


def reference(model, model_sha256: str, reference_path: Path, data: Path | None, user_inputs: np.ndarray | None = None) -> dict:
    """Write Keras's outputs on the check set: the test images (if the input is 32×32×3), random batches
    and the user's own inputs (`--inputs`), if given."""
    from tqdm import tqdm

    from pipeline import cifar
    from pipeline.fetch import sha256_of

    shape = input_shape_of(model)
    arrays: dict[str, np.ndarray] = {}
    sets: dict[str, np.ndarray] = dict(checkset.random_batches(shape))
    if user_inputs is not None:
        sets[checkset.USER_SET] = user_inputs
    for name, inputs in sets.items():
        arrays[f"{name}/inputs"] = inputs
    # Recorded whenever data is given, so a later stage knows which test set this reference saw.
    data_sha256 = sha256_of(cifar.locate(data)) if data is not None else ""
    if data is not None and shape == (32, 32, 3):
        sets["test"] = cifar.load(data).images.astype(np.float32)
    outputs = outputs_model(model)
    for name, inputs in tqdm(sets.items(), desc="keras reference", file=sys.stderr):
        for key, value in predict(outputs, inputs, checkset.batch_size_of(name)).items():
            arrays[f"{name}/{key}"] = value
    arrays["data_sha256"] = np.array(data_sha256)
    arrays["model_sha256"] = np.array(model_sha256)
    with atomic_path(reference_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return {"sets": sorted(sets), "data_sha256": data_sha256}


def layer_outputs(model, model_sha256: str, layers_path: Path, data: Path | None) -> dict:
    """Write every layer's output on the layer check set (`checkset.layer_inputs`), keyed `layer/<name>`."""
    from pipeline import cifar
    from pipeline.fetch import sha256_of

    keras = keras_api(model)
    shape = input_shape_of(model)
    test_images = cifar.load(data).images if data is not None and shape == (32, 32, 3) else None
    inputs = checkset.layer_inputs(shape, test_images)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    outputs = probe.predict(inputs, batch_size=checkset.TEST_BATCH_SIZE, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    arrays = {f"layer/{layer.name}": np.asarray(out) for layer, out in zip(layers, outputs, strict=True)}
    arrays["inputs"] = inputs
    arrays["model_sha256"] = np.array(model_sha256)
    arrays["data_sha256"] = np.array(sha256_of(cifar.locate(data)) if data is not None else "")
    with atomic_path(layers_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return {"layers": [layer.name for layer in layers]}


def bench(model, data: Path, sizes: list[int], images: int, repeats: int) -> dict:
    """Keras `predict` images/s on the first `images` test images: best of `repeats` after a warm-up."""
    import time

    from pipeline import cifar

    inputs = cifar.load(data).images[:images].astype(np.float32)
    speeds = {}
    for size in sizes:
        model.predict(inputs, batch_size=size, verbose=0)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict(inputs, batch_size=size, verbose=0)
            best = min(best, time.perf_counter() - started)
        speeds[str(size)] = len(inputs) / best
    return {"bench": speeds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.keras_worker", description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--onnx", type=Path)
    parser.add_argument("--opset", type=int, default=15)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--layers", type=Path, help="write every layer's output on the layer check set here")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--inputs", type=Path, help="a .npy of the user's own inputs, added to the check set")
    parser.add_argument("--result", type=Path, required=True, help="JSON summary written here")
    parser.add_argument("--bench-sizes", help="time `predict` at these batch sizes (comma-separated)")
    parser.add_argument("--bench-images", type=int, default=10_000)
    parser.add_argument("--bench-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="TensorFlow intra-op threads (set before anything runs)")
    parser.add_argument("--allow-unsafe-code", action="store_true", help="let Keras deserialize Lambda layers (runs their code)")
    args = parser.parse_args(argv)
    try:
        if args.threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        from pipeline.model_check import check

        check(args.model, args.allow_unsafe_code)  # again here: this process is the one that would run the code
        model = load_keras_model(args.model, args.allow_unsafe_code)
        api, shape = keras_api(model), input_shape_of(model)
        result = {"keras_version": f"{api.__name__} {api.__version__}", "input_shape": list(shape)}
        # Checked before anything is written: a wrong file must not leave a new model.onnx behind.
        user_inputs = checkset.load_user_inputs(args.inputs, shape) if args.inputs else None
        if args.onnx:
            result.update(convert(model, args.onnx, args.opset))
        from pipeline.fetch import sha256_of

        if args.reference:
            result.update(reference(model, sha256_of(args.model), args.reference, args.data, user_inputs))
        if args.layers:
            result.update(layer_outputs(model, sha256_of(args.model), args.layers, args.data))
        if args.bench_sizes:
            sizes = [int(size) for size in args.bench_sizes.split(",")]
            result.update(bench(model, args.data, sizes, args.bench_images, args.bench_repeats))
    except Exception as exc:  # noqa: BLE001 — one line for the parent process, whatever failed
        message = " ".join(str(exc).split()) or type(exc).__name__
        kind = "" if isinstance(exc, BadInput) else f"{type(exc).__name__}: "  # our own messages stand alone
        print(f"{ERROR_PREFIX}{kind}{message[:2000]}", file=sys.stderr)
        if os.environ.get("PIPELINE_DEBUG"):
            raise
        return 2
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
