"""The batch training parity is run on (`verifier.training`), and Keras's step on it kept for reuse.

The torch side picks the batch. Where it can do so before the model's outputs are known — a CIFAR-10
classifier with the test set: its images and labels (`known_in_advance`) — the onnx stage hands it to
the TensorFlow process it starts anyway, which takes Keras's step last and stores it with the batch and
the model's SHA-256 (`tf_side.training`); the native stage then uses that step (`stored_step`) instead
of starting TensorFlow again, but only for this very model and batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.common.keras_job import STEP_BATCH_KEYS, STEP_MODEL_KEY
from pipeline.data import checkset, cifar
from pipeline.keras_file.model import KerasModel

BATCH_SIZE = 16  # enough samples for BatchNorm statistics that mean something, small enough for a 224-px model here
SEED = 1234


def batch_for(keras: KerasModel, data: Path | None, output_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(inputs, labels or targets, loss name, where the inputs came from): real test images and labels
    for a CIFAR-10 classifier (its input shape, 10 classes) when `data` is there, else seeded inputs in the model's own range (token ids for an
    Embedding's input, `checkset.TokenIds`), with seeded
    labels (classifiers: sparse categorical cross-entropy) or targets of `output_shape` (others: MSE)."""
    rng = np.random.default_rng(SEED)
    labels = None
    if data is not None and _cifar_classifier(keras, output_shape):
        test = cifar.load(data)
        inputs, labels, source = test.images[:BATCH_SIZE].astype(np.float32), test.labels[:BATCH_SIZE].astype(np.int64), "CIFAR-10 test images"
    elif keras.input_shape is None:
        raise BadInput("the model states no input shape; training parity needs one")
    elif keras.token_ids is not None:  # whole ids, padded where 0 is padding: uniform floats would mask nothing
        inputs = keras.token_ids.draw(rng, (BATCH_SIZE, *keras.input_shape))
        source = f"seeded token ids in [0, {keras.token_ids.vocabulary - 1}]" + (", padded with 0" if keras.token_ids.mask_zero else "")
    else:
        low, high = (keras.input_ranges or checkset.DEFAULT_RANGES)[0]
        inputs = rng.uniform(low, high, (BATCH_SIZE, *keras.input_shape)).astype(np.float32)
        source = f"seeded inputs over [{low:g}, {high:g}]"
    if keras.classifier:
        labels = labels if labels is not None else _class_ids(rng, output_shape)
        return inputs, labels, "sparse_categorical_crossentropy", source
    return inputs, rng.standard_normal((BATCH_SIZE, *output_shape)).astype(np.float32), "mean_squared_error", source


def _class_ids(rng: np.random.Generator, output_shape: tuple[int, ...]) -> np.ndarray:
    """Seeded class ids for a softmax output of `output_shape`: one per sample, or one per step where the softmax is
    over every step's classes (a tagger's, a seq2seq decoder's: output (steps, classes), labels (steps,))."""
    return rng.integers(0, output_shape[-1], (BATCH_SIZE, *output_shape[:-1])).astype(np.int64)


def _cifar_classifier(keras: KerasModel, output_shape: tuple[int, ...]) -> bool:
    """Whether CIFAR-10's test images and labels fit the model: its input shape, and 10 outputs — from
    `output_shape`, else the output layer's `units` (a model of 32×32×3 images and 4 classes takes none of them)."""
    classes = output_shape[-1] if output_shape else (keras.layers[-1].config.get("units") if keras.layers else None)
    return keras.input_shape == cifar.INPUT_SHAPE and classes == cifar.NUM_CLASSES


def known_in_advance(keras: KerasModel, data: Path | None) -> bool:
    """Whether `batch_for` needs no output shape: a CIFAR-10 classifier with the test set (the labels come from it)."""
    return data is not None and keras.classifier and _cifar_classifier(keras, ())


def batch_for_several(keras: KerasModel, output_shapes: list[tuple[int, ...]], classifiers: list[bool]
                      ) -> tuple[list[np.ndarray], list[np.ndarray], list[str], str]:
    """`batch_for` for a model of several inputs or outputs: one seeded array per input in the model's order (its
    token ids where an Embedding reads it, else uniform over [0, 1]), and per output its labels (a classifier's:
    sparse categorical cross-entropy) or targets (MSE); Keras sums the outputs' losses."""
    rng = np.random.default_rng(SEED)
    tokens, (low, high) = keras.input_tokens, checkset.DEFAULT_RANGES[0]
    inputs = [tokens[name].draw(rng, (BATCH_SIZE, *shape)) if name in tokens else rng.uniform(low, high, (BATCH_SIZE, *shape)).astype(np.float32)
              for name, shape in keras.inputs]
    labels, losses = [], []
    for shape, classifier in zip(output_shapes, classifiers, strict=True):
        if classifier:
            labels.append(_class_ids(rng, shape))
            losses.append("sparse_categorical_crossentropy")
        else:
            labels.append(rng.standard_normal((BATCH_SIZE, *shape)).astype(np.float32))
            losses.append("mean_squared_error")
    names = ", ".join(name for name, _ in keras.inputs)
    return inputs, labels, losses, f"seeded inputs {names} ({', '.join(f'token ids of {n}' for n in tokens) or f'over [{low:g}, {high:g}]'})"


def write_batch(path: Path, inputs, labels, loss) -> Path:
    """The batch file the TensorFlow process reads (`tf_side.training.step`): one input, label array and loss, or
    lists of them (several inputs or outputs), stored as `inputs/0`, `labels/0`, `loss/0`, ..."""
    if isinstance(inputs, list) or isinstance(labels, list):
        arrays = {f"{kind}/{i}": np.asarray(value) for kind, values in (("inputs", inputs), ("labels", labels), ("loss", loss))
                  for i, value in enumerate(values if isinstance(values, list) else [values])}
        np.savez(path, **arrays)
    else:
        np.savez(path, inputs=inputs, labels=labels, loss=np.array(loss))
    return path


def read_batch(batch) -> tuple:
    """(inputs, labels, loss) of a batch file's arrays `batch` as `write_batch` wrote them: single, or lists."""
    if "inputs" in batch:
        return batch["inputs"], batch["labels"], str(batch["loss"])

    def listed(kind: str) -> list:
        return [batch[f"{kind}/{i}"] for i in range(sum(key.startswith(f"{kind}/") for key in batch))]

    return listed("inputs"), listed("labels"), [str(value) for value in listed("loss")]


def read_step(path: Path) -> tuple[dict[str, np.ndarray], list[np.ndarray | None]]:
    """Keras's step written at `path` (`tf_side.training.step`), and what it was taken on: the batch's
    inputs, labels and loss, and the model's SHA-256 (STEP_BATCH_KEYS, STEP_MODEL_KEY; None where missing)."""
    with np.load(path, allow_pickle=False) as archive:
        step = {key: archive[key] for key in archive.files}
    return step, [step.pop(key, None) for key in (*STEP_BATCH_KEYS, STEP_MODEL_KEY)]


def stored_step(path: Path, keras: KerasModel, inputs: np.ndarray, labels: np.ndarray, loss: str) -> dict[str, np.ndarray] | None:
    """Keras's step stored at `path` if it was taken on `keras` (same SHA-256) and exactly this batch;
    else None (the caller runs the step)."""
    if not Path(path).is_file():
        return None
    step, taken_on = read_step(path)
    expected = (inputs, labels, np.array(loss), np.array(keras.sha256))
    same = all(found is not None and np.array_equal(found, wanted) for found, wanted in zip(taken_on, expected, strict=True))
    return step if same else None
