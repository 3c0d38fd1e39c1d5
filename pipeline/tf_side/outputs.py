"""Keras's outputs, in the TensorFlow process: on the check set (`reference`) and at every layer
(`layer_outputs`), each written as a plain `.npz` (no pickle) tied to the model's and data's SHA-256."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.common.atomic import atomic_path
from pipeline.common.checksums import sha256_of
from pipeline.data import checkset, cifar, feeds
from pipeline.data.feeds import Layout
from pipeline.tf_side.loading import input_layout, keras_api


def _outputs_model(model):
    """(model giving [probs, features], kernel, bias) when the last layer is a Dense with softmax inside
    it — the pre-softmax logits are then features @ kernel + bias — else (model, None, None)."""
    keras = keras_api(model)
    last = model.layers[-1]
    if len(model.outputs) != 1:  # logits are read for one probability output only
        return model, None, None
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if not isinstance(last, keras.layers.Dense) or activation != "softmax":
        return model, None, None
    return keras.Model(model.inputs, [model.outputs[0], last.input]), last.kernel, last.bias


def _predict(outputs, inputs: Layout, packed: np.ndarray, batch_size: int, results: Layout | None = None) -> dict[str, np.ndarray]:
    """Keras outputs of `packed` (the model's `inputs`, `feeds.Layout.pack`ed) run in batches of
    `batch_size`: `probs` (its several outputs packed as `results` lays them out), and `logits` when available."""
    import tensorflow as tf

    model, kernel, bias = outputs
    result = model.predict(inputs.unpack(packed) if inputs.several else packed, batch_size=batch_size, verbose=0)
    if results is not None:
        return {"probs": results.pack([np.asarray(r) for r in result])}
    if kernel is None:
        return {"probs": np.asarray(result)}
    probs, features = result
    return {"probs": probs, "logits": np.asarray(tf.matmul(features, kernel) + bias)}


def output_layout(model, inputs: Layout, packed: np.ndarray) -> Layout | None:
    """The model's outputs' names (as it names them) and one-sample shapes (from its outputs on the first
    row of `packed`), where it has several; None for one."""
    if len(model.outputs) == 1:
        return None
    results = model.predict(inputs.unpack(packed[:1]) if inputs.several else packed[:1], verbose=0)
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(results))])
    return Layout.of(names, [np.shape(r)[1:] for r in results])


def _test_images(data: Path | None, shapes: tuple[tuple[int, ...], ...]) -> np.ndarray | None:
    """The test images, where there is a test set and the model takes CIFAR-10's images (alone)."""
    return cifar.load(data).images if data is not None and shapes == (cifar.INPUT_SHAPE,) else None


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
              ranges: tuple[checkset.Range, ...] = checkset.DEFAULT_RANGES, tokens: dict[str, checkset.TokenIds] | None = None) -> list[str]:
    """Write Keras's outputs on the check set: the test images (for CIFAR-10-shaped inputs), random
    batches over `ranges` (token ids for the inputs `tokens` names) and the user's own inputs (`--inputs`),
    if given; with the layout of the model's inputs and outputs where it has several (`feeds`). Returns
    the check sets' names."""
    from tqdm import tqdm

    layout = input_layout(model)
    arrays: dict[str, np.ndarray] = {}
    sets: dict[str, np.ndarray] = dict(checkset.random_sets(layout, ranges, tokens=tokens))
    if user_inputs is not None:
        sets[checkset.USER_SET] = user_inputs
    for name, inputs in sets.items():
        arrays[f"{name}/inputs"] = inputs
    test_images = _test_images(data, layout.shapes)
    if test_images is not None:
        sets["test"] = test_images.astype(np.float32)  # not stored: a later stage reads them from the data folder
    outputs, results = _outputs_model(model), output_layout(model, layout, next(iter(sets.values())))
    for name, inputs in tqdm(sets.items(), desc="keras reference", file=sys.stderr):
        for key, value in _predict(outputs, layout, inputs, checkset.batch_size_of(name), results).items():
            arrays[f"{name}/{key}"] = value
    arrays.update(feeds.stored(layout, results))
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
                  ranges: tuple[checkset.Range, ...] = checkset.DEFAULT_RANGES, tokens: dict[str, checkset.TokenIds] | None = None) -> list[str]:
    """Write every layer's output on the layer check set (`checkset.layer_inputs`, token ids for the inputs
    `tokens` names), keyed `layer/<name>`, the inputs packed (`feeds`). Returns the layers' names."""
    keras = keras_api(model)
    layout = input_layout(model)
    inputs = checkset.layer_inputs(layout, _test_images(data, layout.shapes), ranges, tokens)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [_output_in(model, layer) for layer in layers])
    outputs = probe.predict(layout.unpack(inputs) if layout.several else inputs, batch_size=checkset.TEST_BATCH_SIZE, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    arrays = {f"layer/{layer.name}": np.asarray(out) for layer, out in zip(layers, outputs, strict=True)}
    arrays["inputs"] = inputs
    arrays.update(feeds.stored(layout, None))
    _save(layers_path, arrays, model_path, data)
    return [layer.name for layer in layers]
