"""One training step of the Keras model, in the TensorFlow process: the ground truth the native PyTorch
model's training is checked against (`verifier.training`).

On the batch the torch side chose (`inputs`, `labels` in the batch file), with BatchNormalization in
training mode and every Dropout's rate set to 0 (its random mask cannot be the same in two frameworks):
the loss, every trainable weight's gradient, the BatchNorm moving statistics after that one forward
pass, and each trainable weight after one SGD step and, from the same start, after one Adam step with
Keras's defaults. The same step of the float64 rebuild (`tf_side.float64`) is written beside it under
`f64/`: Keras float32's own rounding, which the comparison is judged against. Written as a plain
`.npz`; weights are named `layer/weight` as the torch side names them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from pipeline.common.atomic import atomic_path
from pipeline.common.checksums import sha256_of
from pipeline.common.keras_job import CRASH_TRAINING_FOR_TESTS, STEP_BATCH_KEYS, STEP_MODEL_KEY
from pipeline.keras_file.weights import AUTO_NAMED, DIRECTIONS, PROJECTIONS, weight_leaf
from pipeline.verifier.training_batch import read_batch
from pipeline.tf_side import float64, float64_resize
from pipeline.tf_side.loading import keras_api

# Each optimizer's learning rate for its one step: an update far above the float32 spacing of the weights
# it moves (Adam's step is ~lr per weight whatever the gradient; SGD's is lr · gradient, so it needs a
# larger lr), or the comparison sees the weights' rounding instead of the optimizer.
LEARNING_RATES = {"sgd": 0.1, "adam": 1e-3}


def _name(variable, layer) -> str:
    """`layer/weight` for a Keras variable of `layer` (Keras 3 `.path`, tf-keras `.name`; a Bidirectional layer's
    `layer/forward/weight`, `layer/backward/weight`; a MultiHeadAttention's `layer/query/kernel`, ...). A weight made
    without a name (ConvNeXt's LayerScale) gets Keras's counter name, `variable` or `variable_7` — a
    different one in the float64 twin, built later in the same process —, so it is named after the
    layer attribute that holds it, as `keras_file.weights` names it."""
    raw = weight_leaf(getattr(variable, "path", None) or variable.name)
    if AUTO_NAMED.fullmatch(raw):
        raw = next((attribute for attribute, value in vars(layer).items() if value is variable), raw)
    if hasattr(layer, "forward_layer"):  # Bidirectional: each direction's weights under its name
        forward = any(weight is variable for weight in layer.forward_layer.weights)
        raw = f"{DIRECTIONS[0] if forward else DIRECTIONS[1]}/{raw}"
    elif type(layer).__name__ == "MultiHeadAttention":  # its projections' weights under theirs: query/kernel, ...
        owner = next(name for name in ("query_dense", "key_dense", "value_dense", "output_dense")
                     if any(weight is variable for weight in getattr(layer, f"_{name}").weights))
        raw = f"{PROJECTIONS[owner]}/{raw}"
    return f"{layer.name}/{raw}"


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _step(model, x, labels, loss_kind, safe: bool = False) -> dict[str, np.ndarray]:
    """The training step of the module docstring on `model` (which it leaves changed), by `layer/weight`;
    `x`, `labels`, `loss_kind`: one array, array and loss name, or lists of them (a model of several inputs
    or outputs: the outputs' losses summed, as Keras sums them). With `safe`, tf-keras's optimizers are not
    compiled with XLA either."""
    import tensorflow as tf

    keras = keras_api(model)
    xs, targets_in, kinds = (value if isinstance(value, list) else [value] for value in (x, labels, loss_kind))
    # tf-keras gives a dtype as a `tf.DType` (`tf.float32`), which numpy cannot read; Keras 3 as a string. An
    # input's may be int32 (token ids); each loss computes in its output's
    dtypes = [np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype) for tensor in model.inputs]
    out_dtypes = [np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype) for tensor in model.outputs]
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    owners = {id(v): layer for layer in _leaf_layers(model) for v in layer.weights}
    trainable = list(model.trainable_weights)
    names = [_name(v, owners[id(v)]) for v in trainable]
    start = [np.array(v.numpy()) for v in trainable]
    loss_fns, targets = [], []
    for kind, target, out_dtype in zip(kinds, targets_in, out_dtypes, strict=True):
        loss_class = keras.losses.SparseCategoricalCrossentropy if kind == "sparse_categorical_crossentropy" else keras.losses.MeanSquaredError
        loss_fns.append(loss_class(dtype=out_dtype) if keras.__name__ == "keras" else loss_class())  # tf-keras losses take no dtype
        targets.append(target if kind == "sparse_categorical_crossentropy" else target.astype(out_dtype))
    with tf.GradientTape() as tape:
        feeds = [tf.constant(value.astype(dtype)) for value, dtype in zip(xs, dtypes, strict=True)]
        outputs = model(feeds if len(feeds) > 1 else feeds[0], training=True)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        loss = sum(fn(tf.constant(target), output) for fn, target, output in zip(loss_fns, targets, outputs, strict=True))
    # An Embedding's gradient comes as IndexedSlices, a row per token of the batch. Keras 3's Adam squares each
    # slice apart, so a token that repeats adds Σg² to its second moment where Adam's (Σg)² is: a step of its
    # own, not Adam's (tf-keras sums the duplicates first). The step compared is Adam's, on the dense gradient.
    gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in tape.gradient(loss, trainable)]
    arrays = {"loss": np.array(float(loss))}
    for name, gradient in zip(names, gradients, strict=True):
        arrays[f"grad/{name}"] = np.zeros(0) if gradient is None else np.asarray(gradient)
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            arrays[f"moving/{layer.name}/moving_mean"] = np.asarray(layer.moving_mean.numpy())
            arrays[f"moving/{layer.name}/moving_variance"] = np.asarray(layer.moving_variance.numpy())
    no_xla = {"jit_compile": False} if safe and keras.__name__ != "keras" else {}  # Keras 3's optimizers take no such option
    for kind, optimizer in (("sgd", keras.optimizers.SGD(learning_rate=LEARNING_RATES["sgd"], **no_xla)),
                            ("adam", keras.optimizers.Adam(learning_rate=LEARNING_RATES["adam"], **no_xla))):
        for variable, value in zip(trainable, start, strict=True):
            variable.assign(value)
        optimizer.apply_gradients([(g, v) for g, v in zip(gradients, trainable, strict=True) if g is not None])
        for name, variable in zip(names, trainable, strict=True):
            arrays[f"{kind}/{name}"] = np.asarray(variable.numpy())
    return arrays


def step(model, model_path: Path, batch_file: Path, out: Path, safe: bool = False) -> None:
    """Run the training step of the module docstring on `batch_file`'s batch, in float32 and on the
    float64 rebuild (where the model rebuilds); write `out` (.npz), with the batch and `model_path`'s
    SHA-256 (`verifier.training_batch`: a later stage reuses the step only for this model and batch).
    `safe`: the retry after this step crashed a process — every function run eagerly, no XLA."""
    keras = keras_api(model)
    with np.load(batch_file, allow_pickle=False) as batch:
        x, labels, loss_kind = read_batch({key: batch[key] for key in batch.files})
    if os.environ.get(CRASH_TRAINING_FOR_TESTS) == "always" or (os.environ.get(CRASH_TRAINING_FOR_TESTS) == "first" and not safe):
        os.kill(os.getpid(), signal.SIGSEGV)  # the test hook (`CRASH_TRAINING_FOR_TESTS`): die as TensorFlow does here
    if safe:
        import tensorflow as tf

        tf.config.run_functions_eagerly(True)
    try:
        twin = float64.rebuild(model)  # before the step: it copies the weights and statistics as they start
    except ValueError as exc:
        twin, why = None, str(exc)
    arrays = _step(model, x, labels, loss_kind, safe)
    if twin is not None:  # kept in the safe retry: on a small batch, Keras's own rounding is what the bound needs
        try:
            with float64_resize.exact():  # TensorFlow's bilinear resize computes in float32
                arrays.update({f"f64/{key}": value for key, value in _step(twin, x, labels, loss_kind, safe).items()})
        except Exception as exc:  # noqa: BLE001 — an op with no float64 kernel (MaxPool3D): the bound is torch's alone
            arrays["f64_unavailable"] = np.array(f"the float64 rebuild does not run ({float64.unconverted_layer(twin, exc)})")
    else:
        arrays["f64_unavailable"] = np.array(why)
    arrays["adam_epsilon"] = np.array(float(keras.optimizers.Adam().epsilon))
    if not isinstance(x, list):  # one input and output: the batch stored with the step, for its reuse (`stored_step`)
        arrays.update(dict(zip(STEP_BATCH_KEYS, (x, labels, np.array(loss_kind)), strict=True)))
    arrays[STEP_MODEL_KEY] = np.array(sha256_of(model_path))
    arrays.update({f"learning_rate/{kind}": np.array(rate) for kind, rate in LEARNING_RATES.items()})
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
