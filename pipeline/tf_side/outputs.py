"""Keras's outputs, in the TensorFlow process: on the check set (`reference`) and at every layer
(`layer_outputs`), each written as a plain `.npz` (no pickle) tied to the model's and data's SHA-256."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.common.atomic import atomic_path
from pipeline.common.checksums import sha256_of
from pipeline.data import checkset, cifar
from pipeline.tf_side.loading import input_shape_of, keras_api


def _outputs_model(model):
    """(model giving [probs, features], kernel, bias) when the last layer is a Dense with softmax inside
    it — the pre-softmax logits are then features @ kernel + bias — else (model, None, None)."""
    keras = keras_api(model)
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if not isinstance(last, keras.layers.Dense) or activation != "softmax":
        return model, None, None
    return keras.Model(model.inputs, [model.outputs[0], last.input]), last.kernel, last.bias


def _predict(outputs, inputs: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Keras outputs of `inputs` run in batches of `batch_size`: `probs`, and `logits` when available."""
    import tensorflow as tf

    model, kernel, bias = outputs
    result = model.predict(inputs, batch_size=batch_size, verbose=0)
    if kernel is None:
        return {"probs": np.asarray(result)}
    probs, features = result
    return {"probs": probs, "logits": np.asarray(tf.matmul(features, kernel) + bias)}


def _test_images(data: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The test images, where there is a test set and the model takes CIFAR-10's images."""
    return cifar.load(data).images if data is not None and shape == cifar.INPUT_SHAPE else None


def _save(path: Path, arrays: dict[str, np.ndarray], model_path: Path, data: Path | None) -> None:
    # Tied to the model and the test set: a later stage uses the file only if both are still the same.
    arrays["model_sha256"] = np.array(sha256_of(model_path))
    arrays["data_sha256"] = np.array(sha256_of(cifar.locate(data)) if data is not None else "")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


UNAVAILABLE = "float64_unavailable"  # the key a reference file holds instead of outputs: why there are none


def unavailable(path: Path, model_path: Path, data: Path | None, reason: str) -> None:
    """Write, in place of the float64 reference, why it is missing: a later stage then knows, without
    starting TensorFlow again to find out."""
    _save(path, {UNAVAILABLE: np.array(reason)}, model_path, data)


def reference(model, model_path: Path, reference_path: Path, data: Path | None, user_inputs: np.ndarray | None = None,
              ranges: tuple[checkset.Range, ...] = checkset.DEFAULT_RANGES, tokens: checkset.TokenIds | None = None) -> list[str]:
    """Write Keras's outputs on the check set: the test images (for CIFAR-10-shaped inputs), random
    batches over `ranges` (or of `tokens`) and the user's own inputs (`--inputs`), if given. Returns the
    check sets' names."""
    from tqdm import tqdm

    shape = input_shape_of(model)
    arrays: dict[str, np.ndarray] = {}
    sets: dict[str, np.ndarray] = dict(checkset.random_batches(shape, ranges, tokens=tokens))
    if user_inputs is not None:
        sets[checkset.USER_SET] = user_inputs
    for name, inputs in sets.items():
        arrays[f"{name}/inputs"] = inputs
    test_images = _test_images(data, shape)
    if test_images is not None:
        sets["test"] = test_images.astype(np.float32)  # not stored: a later stage reads them from the data folder
    outputs = _outputs_model(model)
    for name, inputs in tqdm(sets.items(), desc="keras reference", file=sys.stderr):
        for key, value in _predict(outputs, inputs, checkset.batch_size_of(name)).items():
            arrays[f"{name}/{key}"] = value
    _save(reference_path, arrays, model_path, data)
    return sorted(sets)


def _output_in(model, layer):
    """`layer`'s output in `model`'s own graph. A model nested as a layer (a pretrained base in a Sequential)
    has two: its own, from its own Input, first — which `layer.output` gives, disconnected from `model`'s
    inputs — and the one where `model` calls it. Keras keeps the latter among `model`'s nodes."""
    graph = getattr(model, "_functional", model)  # Keras 3's Sequential runs a Functional of its own
    for nodes in getattr(graph, "_nodes_by_depth", {}).values():
        for node in nodes:
            if (getattr(node, "operation", None) or getattr(node, "layer", None)) is layer:
                outputs = node.output_tensors
                return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs
    return layer.output


def layer_outputs(model, model_path: Path, layers_path: Path, data: Path | None,
                  ranges: tuple[checkset.Range, ...] = checkset.DEFAULT_RANGES, tokens: checkset.TokenIds | None = None) -> list[str]:
    """Write every layer's output on the layer check set (`checkset.layer_inputs`, of `tokens` where the
    input is token ids), keyed `layer/<name>`. Returns the layers' names."""
    keras = keras_api(model)
    inputs = checkset.layer_inputs(input_shape_of(model), _test_images(data, input_shape_of(model)), ranges, tokens)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [_output_in(model, layer) for layer in layers])
    outputs = probe.predict(inputs, batch_size=checkset.TEST_BATCH_SIZE, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    arrays = {f"layer/{layer.name}": np.asarray(out) for layer, out in zip(layers, outputs, strict=True)}
    arrays["inputs"] = inputs
    _save(layers_path, arrays, model_path, data)
    return [layer.name for layer in layers]
