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


def _shapes(tensors) -> list[tuple]:
    """One-sample shapes of symbolic Keras tensors (None where a dimension is open)."""
    return [tuple(None if dim is None else int(dim) for dim in tuple(tensor.shape)[1:]) for tensor in tensors]


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
    if given; for a model of one input that leaves a dimension open, batches at `checkset.OTHER_LENGTHS` too
    (`checkset.checks_other_lengths`, `_at_other_lengths`); with the layout of the model's inputs and outputs where it
    has several (`feeds`). Returns the sets' names."""
    from tqdm import tqdm

    layout = input_layout(model)
    arrays: dict[str, np.ndarray] = {}
    sizes = checkset.random_sizes(checkset.sample_bytes([*layout.shapes, *_shapes(model.outputs)]), len(ranges))
    sets: dict[str, np.ndarray] = dict(checkset.random_sets(layout, ranges, sizes, tokens=tokens))
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
    if checkset.checks_other_lengths(_shapes(model.inputs), len(model.outputs)):
        arrays.update(_at_other_lengths(outputs, layout, _shapes(model.inputs)[0], ranges, tokens))
    _save(reference_path, arrays, model_path, data)
    return sorted(sets) + sorted(name.split("/")[0] for name in arrays if checkset.is_length_set(name) and name.endswith("/probs"))


def _at_other_lengths(outputs, layout: Layout, open_shape, ranges, tokens) -> dict[str, np.ndarray]:
    """The inputs and Keras's outputs of the sets at `checkset.OTHER_LENGTHS`; a length Keras does not run at (stacked
    'valid' convolutions shorter than their kernels, a positional table shorter than 50) is left out, and why said."""
    arrays, unavailable = {}, []
    for length in checkset.OTHER_LENGTHS:
        sets = checkset.length_sets(open_shape, length, ranges, tokens)
        try:
            predicted = {name: _predict(outputs, layout, inputs, checkset.OTHER_LENGTH_BATCH) for name, inputs in sets.items()}
        except Exception as exc:  # noqa: BLE001 — Keras's own refusal of that length: not this model's conversion's fault
            unavailable.append(f"length {length}: {' '.join(str(exc).split())[:160]}")
            continue
        for name, inputs in sets.items():
            arrays[f"{name}/inputs"] = inputs
            arrays.update({f"{name}/{key}": value for key, value in predicted[name].items()})
    if unavailable:
        arrays[checkset.LENGTHS_UNAVAILABLE_KEY] = np.array("; ".join(unavailable))
    return arrays


def _node_in(model, layer) -> list:
    """The nodes where `model`'s own graph calls `layer`. A model nested as a layer (a pretrained base in a
    Sequential) has a node of its own too, from its own Input — which `layer.output` gives, disconnected
    from `model`'s inputs —; Keras keeps the nodes of `model`'s calls among `model`'s nodes."""
    graph = getattr(model, "_functional", model)  # Keras 3's Sequential runs a Functional of its own
    return [node for nodes in getattr(graph, "_nodes_by_depth", {}).values() for node in nodes
            if (getattr(node, "operation", None) or getattr(node, "layer", None)) is layer]


def _one(tensors):
    return tensors[0] if isinstance(tensors, (list, tuple)) and len(tensors) == 1 else tensors


def _output_in(model, layer):
    """`layer`'s output in `model`'s own graph (`_node_in`): of a layer called more than once (a shared one),
    its first call's; of a layer of several outputs (an LSTM returning its states), the first — as the native
    model's `LAYER_OUTPUTS` names them."""
    calls = list(getattr(layer, "_inbound_nodes", None) or [])
    nodes = sorted(_node_in(model, layer), key=lambda node: next((i for i, call in enumerate(calls) if call is node), len(calls)))
    return _flat(nodes[0].output_tensors if nodes else layer.output)[0]


def _flat(tensors) -> list:
    return [t for part in tensors for t in _flat(part)] if isinstance(tensors, (list, tuple)) else [tensors]


def _graph_inputs(model) -> list:
    """A model's symbolic inputs; [] for a subclassed model, which has none (Keras raises asking for them)."""
    try:
        return _flat(model.inputs or [])
    except (AttributeError, ValueError):
        return []


def _nested_once(keras, model) -> list:
    """The models nested as a layer of `model` that it calls once, with a graph of their own, fed their inputs
    alone: their layers are compared under nested names (`base/conv2d`). Not a shared one (a siamese encoder,
    called twice: no one output per layer), a subclassed model (no graph to probe), nor one called with a
    mask (its layers' outputs depend on it, which a probe from its own inputs would leave out)."""
    nested = []
    for layer in model.layers:
        nodes = _node_in(model, layer) if isinstance(layer, keras.Model) and _graph_inputs(layer) else []
        if len(nodes) != 1:
            continue
        fed = _flat(nodes[0].input_tensors)
        if len(fed) == len(_flat(layer.inputs)) and all(getattr(t, "_keras_mask", None) is None for t in fed):
            nested.append(layer)
    return nested


def _computing(keras, model) -> list:
    """`model`'s layers but its inputs."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _probe(keras, model):
    """(the layers of `model` that compute, the models nested once, a model giving the former's outputs and
    then the latter's inputs, all on `model`'s inputs)."""
    layers = _computing(keras, model)
    nested = _nested_once(keras, model)
    tensors = [_output_in(model, layer) for layer in layers] + [_one(_node_in(model, inner)[0].input_tensors) for inner in nested]
    return layers, nested, keras.Model(model.inputs, tensors)


def _capture_bytes(keras, model) -> int:
    """The float32 bytes of every layer's output for one sample, nested models' layers included."""
    outputs = [t for layer in _computing(keras, model) for t in _flat(_output_in(model, layer))]
    return checkset.sample_bytes(_shapes(outputs)) + sum(_capture_bytes(keras, inner) for inner in _nested_once(keras, model))


def _captures(keras, model, inputs, prefix: str = "") -> dict[str, np.ndarray]:
    """{`prefix` + layer name: its output on `inputs` (as `model.predict` takes them)} for every layer of
    `model` that computes, and `outer/inner` for the layers of a model nested once in it (on its inputs there)."""
    layers, nested, probe = _probe(keras, model)
    outputs = probe.predict(inputs, batch_size=checkset.TEST_BATCH_SIZE, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    arrays = {f"{prefix}{layer.name}": np.asarray(out) for layer, out in zip(layers, outputs[:len(layers)], strict=True)}
    for inner, inner_inputs in zip(nested, outputs[len(layers):], strict=True):
        arrays.update(_captures(keras, inner, inner_inputs, f"{prefix}{inner.name}/"))
    return arrays


def layer_outputs(model, model_path: Path, layers_path: Path, data: Path | None,
                  ranges: tuple[checkset.Range, ...] = checkset.DEFAULT_RANGES, tokens: dict[str, checkset.TokenIds] | None = None) -> list[str]:
    """Write every layer's output on the layer check set (`checkset.layer_inputs`, token ids for the inputs
    `tokens` names), keyed `layer/<name>` — `layer/<nested model>/<name>` for the layers of a model nested
    once —, the inputs packed (`feeds`). Returns the layers' names."""
    keras = keras_api(model)
    layout = input_layout(model)
    inputs = checkset.layer_inputs(layout, _test_images(data, layout.shapes), ranges, tokens, _capture_bytes(keras, model))
    captured = _captures(keras, model, layout.unpack(inputs) if layout.several else inputs)
    arrays = {f"layer/{name}": value for name, value in captured.items()}
    arrays["inputs"] = inputs
    arrays.update(feeds.stored(layout, None))
    layers = list(captured)
    _save(layers_path, arrays, model_path, data)
    return layers
