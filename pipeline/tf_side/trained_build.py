"""Build the zoo's trained members in the TensorFlow process: small models that look like users' files —
`python -m pipeline.tf_side.trained_build OUT FLAVOUR NAME...`.

Random or calibrated weights hide what trained weights show (a BatchNorm that the converter folds into
its convolution, statistics far from 0 and 1, saturated outputs). So each member is trained
`TRAINED_STEPS` real optimizer steps on a synthetic task whose loss falls (a coloured-stripe image
task, a blob detector at 96×96, a tone classifier over a 1-D signal, a low-rank autoencoder), with our
own seed, and saved as users' files are: FLAVOUR `keras2` writes a legacy `.h5` with tf-keras (the Keras
2 API), `keras3` a `.keras` with Keras 3. Each prints one JSON line: its training loss after each pass.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from pipeline.common.keras_job import TRAINED_FLAVOURS  # noqa: E402

TRAINED_SEED = 20261206
TRAINED_STEPS = 300  # BatchNorm's moving statistics (momentum 0.99) are then 95% the data's, not 0 and 1
TRAINED_BATCH = 32
TRAINED_EPOCHS = 3  # the loss after each pass over the training set shows it fell


def _images(rng, n: int, size: int, classes: int):
    """Raw 0..255 pixels (users' models take them unscaled) with one class-coloured stripe each."""
    labels = rng.integers(0, classes, n)
    x = rng.uniform(0, 120, (n, size, size, 3)).astype(np.float32)
    for i, label in enumerate(labels):
        row = rng.integers(0, size - 4)
        x[i, row:row + 4, :, label % 3] += 120 + 10 * label
    return x, labels


def _blobs(rng, n: int, size: int):
    """Images in [0, 1]: a bright square somewhere (class 1) or not (class 0)."""
    labels = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.6, (n, size, size, 3)).astype(np.float32)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, size - 16, 2)
        x[i, r:r + 16, c:c + 16] += 0.4
    return x, labels


def _tones(rng, n: int, length: int, channels: int, classes: int):
    """A noisy sine per sample over (1, length, channels), its frequency the class: a 1-D signal laid out
    as a one-row image, as streaming keyword models write it for Conv2D with 1×k kernels."""
    labels = rng.integers(0, classes, n)
    t = np.arange(length, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, channels))
    x = np.sin(2 * np.pi * (labels[:, None, None, None] + 1) * t[None, None, :, None] / 16 + phase)
    return (3 * x + rng.normal(0, 0.5, x.shape)).astype(np.float32), labels


def _low_rank(rng, n: int, width: int):
    """Samples on an 4-dimensional subspace of `width` (an anomaly detector's normal data), with noise."""
    basis = np.random.default_rng(7).normal(0, 1, (4, width))
    x = rng.normal(0, 1, (n, 4)) @ basis + rng.normal(0, 0.1, (n, width))
    return x.astype(np.float32), x.astype(np.float32)


def _conv_bn_stack(keras):
    L = keras.layers
    x = inp = keras.Input((24, 24, 3))
    for filters, stride in ((8, 1), (16, 2), (16, 1)):
        x = L.Conv2D(filters, 3, strides=stride, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(4, activation="softmax")(x)), lambda rng, n: _images(rng, n, 24, 4), "sparse_categorical_crossentropy"


def _separable96(keras):
    L = keras.layers
    x = inp = keras.Input((96, 96, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    for filters, stride in ((16, 1), (24, 2), (32, 2)):
        x = L.DepthwiseConv2D(3, strides=stride, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2D(filters, 1, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
    x = L.AveragePooling2D(12)(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x)), lambda rng, n: _blobs(rng, n, 96), "sparse_categorical_crossentropy"


def _signal_1xk(keras):
    L = keras.layers
    x = inp = keras.Input((1, 64, 4))
    x = L.Conv2D(12, (1, 5), strides=(1, 2), padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D((1, 3), padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(16, (1, 1))(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5, activation="softmax")(x)), lambda rng, n: _tones(rng, n, 64, 4, 5), "sparse_categorical_crossentropy"


def _dense_bn_autoencoder(keras):
    L = keras.layers
    x = inp = keras.Input((32,))
    for units in (24, 8, 24):
        x = L.Dense(units)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
    return keras.Model(inp, L.Dense(32)(x)), lambda rng, n: _low_rank(rng, n, 32), "mse"


def _tokens(rng, n: int, length: int, vocabulary: int):
    """Token ids; the class is whether token 1 comes before token 2 (order matters: a recurrent task)."""
    x = rng.integers(3, vocabulary, (n, length))
    labels = rng.integers(0, 2, n)
    for i, label in enumerate(labels):
        a, b = sorted(rng.choice(length, 2, replace=False))
        x[i, a], x[i, b] = (1, 2) if label else (2, 1)
    return x.astype(np.int32), labels


def _nested_transfer(keras):
    """A pretrained-style base model (its own Functional, with BatchNorm) nested in a Sequential with a new head."""
    L = keras.layers
    x = inp = keras.Input((32, 32, 3))
    for filters in (8, 16):
        x = L.Conv2D(filters, 3, strides=2, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    base = keras.Model(inp, L.GlobalAveragePooling2D()(x), name="base")
    model = keras.Sequential([keras.Input((32, 32, 3)), base, L.Dropout(0.2), L.Dense(4, activation="softmax")])
    return model, lambda rng, n: _images(rng, n, 32, 4), "sparse_categorical_crossentropy"


def _recurrent_text(keras):
    """Token ids → Embedding → LSTM → Dense: a text classifier."""
    L = keras.layers
    inp = keras.Input((20,), dtype="int32")
    x = L.Embedding(50, 8)(inp)
    x = L.LSTM(12)(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x)), lambda rng, n: _tokens(rng, n, 20, 50), "sparse_categorical_crossentropy"


def _two_inputs(keras):
    """An image and a vector of metadata, concatenated: a model with two inputs."""
    L = keras.layers
    image, meta = keras.Input((16, 16, 3), name="image"), keras.Input((5,), name="meta")
    x = L.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Concatenate()([x, L.Dense(8, activation="relu")(meta)])

    def data(rng, n):
        images, labels = _images(rng, n, 16, 3)
        return [images / 255.0, rng.normal(0, 1, (n, 5)).astype(np.float32)], labels

    return keras.Model([image, meta], L.Dense(3, activation="softmax")(x)), data, "sparse_categorical_crossentropy"


def _siamese(keras):
    """Two vectors through one encoder — a model nested as a layer and called twice, its weights shared — and a
    Dense shared by both branches, then a classifier of the pair: a siamese network."""
    L = keras.layers
    inp = keras.Input((12,), name="item")
    encoder = keras.Model(inp, L.Dense(8, activation="tanh")(L.Dense(16, activation="relu")(inp)), name="encoder")
    left, right = keras.Input((12,), name="left"), keras.Input((12,), name="right")
    project = L.Dense(6, activation="relu", name="project")
    x = L.Concatenate()([project(encoder(left)), project(encoder(right))])

    def data(rng, n):
        a, b = rng.normal(0, 1, (n, 12)).astype(np.float32), rng.normal(0, 1, (n, 12)).astype(np.float32)
        return [a, b], (np.abs(a[:, :4]).sum(axis=1) > np.abs(b[:, :4]).sum(axis=1)).astype(np.int64)  # which is the larger

    return keras.Model([left, right], L.Dense(2, activation="softmax")(x)), data, "sparse_categorical_crossentropy"


def _seq2seq(keras):
    """An encoder–decoder over token ids: the encoder LSTM's final states (`return_state`) start the decoder LSTM
    (`initial_state`), which reads the target shifted by one (teacher forcing) and predicts each next token."""
    L = keras.layers
    source, target = keras.Input((12,), dtype="int32", name="source"), keras.Input((10,), dtype="int32", name="target")
    _, h, c = L.LSTM(16, return_state=True, name="encoder")(L.Embedding(30, 8, name="source_embedding")(source))
    x = L.LSTM(16, return_sequences=True, name="decoder")(L.Embedding(30, 8, name="target_embedding")(target), initial_state=[h, c])
    return keras.Model([source, target], L.Dense(30, activation="softmax", name="next_token")(x)), _reversal, "sparse_categorical_crossentropy"


def _reversal(rng, n: int):
    """The seq2seq task: 12 token ids in, the first 10 of them reversed out, the decoder fed the answer shifted by one."""
    ids = rng.integers(1, 30, (n, 12))
    answer = ids[:, ::-1][:, :10]  # the source reversed
    return [ids, np.concatenate([np.zeros((n, 1), ids.dtype), answer[:, :-1]], axis=1)], answer


def _seq2seq_bidirectional(keras):
    """`_seq2seq` with a Bidirectional encoder: its four final states (forward h, c, then backward h, c) joined per
    kind start the decoder, the common form of published translators."""
    L = keras.layers
    source, target = keras.Input((12,), dtype="int32", name="source"), keras.Input((10,), dtype="int32", name="target")
    _, forward_h, forward_c, backward_h, backward_c = L.Bidirectional(L.LSTM(8, return_state=True), name="encoder")(
        L.Embedding(30, 8, name="source_embedding")(source))
    h, c = L.Concatenate(name="h")([forward_h, backward_h]), L.Concatenate(name="c")([forward_c, backward_c])
    x = L.LSTM(16, return_sequences=True, name="decoder")(L.Embedding(30, 8, name="target_embedding")(target), initial_state=[h, c])
    return keras.Model([source, target], L.Dense(30, activation="softmax", name="next_token")(x)), _reversal, "sparse_categorical_crossentropy"


def _nested_masked(keras):
    """Keras masks across a nested model's boundary: padded token ids into an encoder model of its own (Embedding with
    `mask_zero` → LSTM over every step) whose output keeps the mask for a GRU outside it, and an outer Embedding's mask
    into a reader model of its own (a GRU): the native model passes each mask in and out as a tensor of its own."""
    L = keras.layers
    inner = keras.Input((None,), name="inner_tokens")
    embedded = L.Embedding(20, 5, mask_zero=True, name="inner_embedding")(inner)
    encoder = keras.Model(inner, L.LSTM(6, return_sequences=True, name="inner_lstm")(embedded), name="encoder")
    vectors = keras.Input((None, 5), name="vectors")
    reader = keras.Model(vectors, L.GRU(4, name="inner_gru")(vectors), name="reader")
    tokens = keras.Input((12,), name="tokens")
    joined = L.Concatenate(name="join")([L.GRU(4, name="outer_gru")(encoder(tokens)),
                                         reader(L.Embedding(20, 5, mask_zero=True, name="outer_embedding")(tokens))])
    return keras.Model(tokens, L.Dense(2, activation="softmax", name="head")(joined)), _padded, "sparse_categorical_crossentropy"


def _padded(rng, n: int):
    """`_tokens` over 12 steps (a vocabulary of 20) with a padded tail of up to 3 zeros (none on the first row)."""
    x, labels = _tokens(rng, n, 12, 20)
    tails = rng.integers(0, 4, n)
    tails[0] = 0
    x[np.arange(12) >= 12 - tails[:, None]] = 0
    return x, labels


def _two_heads(keras):
    """An image and its metadata in; a class and a box out (BatchNorm between): two inputs and two outputs."""
    L = keras.layers
    image, meta = keras.Input((16, 16, 3), name="image"), keras.Input((5,), name="meta")
    x = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", activation="relu")(image))
    x = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.Dense(8, activation="relu")(meta)])
    outputs = [L.Dense(3, activation="softmax", name="cls")(x), L.Dense(4, name="box")(x)]

    def data(rng, n):
        images, labels = _images(rng, n, 16, 3)
        meta = rng.normal(0, 1, (n, 5)).astype(np.float32)
        boxes = (meta[:, :4] * 0.5 + labels[:, None] * 0.3).astype(np.float32)  # learnable from both inputs
        return [images / 255.0, meta], [labels, boxes]

    return keras.Model([image, meta], outputs), data, ["sparse_categorical_crossentropy", "mean_squared_error"]


def _sensor(rng, n: int, length: int, channels: int, classes: int):
    """`_tones` as a sequence: (length, channels), time first, as recurrent models over sensors take it."""
    x, labels = _tones(rng, n, length, channels, classes)
    return x[:, 0], labels


def _text_gru_masked(keras):
    """Padded token ids of any length (the input's length left open; 0 is padding: `mask_zero`) → Embedding
    → GRU: the mask reaches the recurrence."""
    L = keras.layers
    inp = keras.Input((None,), dtype="int32")
    x = L.Embedding(50, 8, mask_zero=True)(inp)
    x = L.GRU(12)(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x)), lambda rng, n: _tokens(rng, n, 20, 50), "sparse_categorical_crossentropy"


def _text_bilstm_stacked(keras):
    """Embedding → Bidirectional LSTM (every step) → LSTM: stacked, both directions."""
    L = keras.layers
    inp = keras.Input((20,), dtype="int32")
    x = L.Embedding(50, 8)(inp)
    x = L.Bidirectional(L.LSTM(8, return_sequences=True))(x)
    x = L.LSTM(8)(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x)), lambda rng, n: _tokens(rng, n, 20, 50), "sparse_categorical_crossentropy"


def _text_bigru_masked(keras):
    """Padded token ids (`mask_zero`) → Bidirectional GRU over every step (directions summed) → Bidirectional
    GRU (concatenated): the mask reaches both directions of both layers, and passes from the first to the second."""
    L = keras.layers
    inp = keras.Input((20,), dtype="int32")
    x = L.Embedding(50, 8, mask_zero=True)(inp)
    x = L.Bidirectional(L.GRU(8, return_sequences=True), merge_mode="sum")(x)
    x = L.Bidirectional(L.GRU(6))(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x)), lambda rng, n: _tokens(rng, n, 20, 50), "sparse_categorical_crossentropy"


def _sensor_conv_gru(keras):
    """Sensor windows → Conv1D → GRU with `reset_after=False` (Keras 2.2's GRU; torch has no such layer)."""
    L = keras.layers
    inp = keras.Input((64, 4))
    x = L.Conv1D(8, 5, activation="relu")(inp)
    x = L.GRU(12, reset_after=False)(x)
    return keras.Model(inp, L.Dense(5, activation="softmax")(x)), lambda rng, n: _sensor(rng, n, 64, 4, 5), "sparse_categorical_crossentropy"


def _sensor_lstm_hard_sigmoid(keras):
    """An LSTM with Keras 2.0–2.2's default recurrent activation, `hard_sigmoid`, returning every step."""
    L = keras.layers
    inp = keras.Input((32, 3))
    x = L.LSTM(10, recurrent_activation="hard_sigmoid", return_sequences=True)(inp)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(4, activation="softmax")(x)), lambda rng, n: _sensor(rng, n, 32, 3, 4), "sparse_categorical_crossentropy"


def _sensor_simple_rnn(keras):
    """A SimpleRNN over sensor windows."""
    L = keras.layers
    inp = keras.Input((32, 3))
    x = L.SimpleRNN(10)(inp)
    return keras.Model(inp, L.Dense(4, activation="softmax")(x)), lambda rng, n: _sensor(rng, n, 32, 3, 4), "sparse_categorical_crossentropy"


def _transformer_block(keras):
    """A small transformer encoder block over sensor windows: self-attention, residuals, LayerNorm, a feed-forward."""
    L = keras.layers
    inp = keras.Input((32, 3))
    x = L.Dense(16)(inp)
    x = L.LayerNormalization()(x + L.MultiHeadAttention(2, 8)(x, x))
    x = L.LayerNormalization()(x + L.Dense(16)(L.Dense(32, activation="gelu")(x)))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(4, activation="softmax")(x)), lambda rng, n: _sensor(rng, n, 32, 3, 4), "sparse_categorical_crossentropy"


MEMBERS = {"conv_bn_relu": _conv_bn_stack, "separable96": _separable96, "signal_1xk": _signal_1xk, "dense_bn_autoencoder": _dense_bn_autoencoder}
# Kinds beyond image classifiers, trained the same way: the fuzz suite's base models (`pipeline.fuzz`), and a
# model of two inputs and two outputs (tests/test_several_io.py).
KINDS = {"nested_transfer": _nested_transfer, "recurrent_text": _recurrent_text, "two_inputs": _two_inputs, "two_heads": _two_heads,
         "siamese": _siamese, "seq2seq": _seq2seq, "seq2seq_bidirectional": _seq2seq_bidirectional,
         "nested_masked": _nested_masked}
# Sequence models of the kinds users bring: `make sequences` (the zoo's `sequences` group) and tests/test_sequences.py.
SEQUENCES = {"text_gru_masked": _text_gru_masked, "text_bigru_masked": _text_bigru_masked, "text_bilstm_stacked": _text_bilstm_stacked,
             "sensor_conv_gru": _sensor_conv_gru, "sensor_lstm_hard_sigmoid": _sensor_lstm_hard_sigmoid, "sensor_simple_rnn": _sensor_simple_rnn,
             "transformer_block": _transformer_block, "recurrent_text": _recurrent_text}


def build(keras, name: str, seed: int = TRAINED_SEED):
    """`name` trained TRAINED_STEPS steps (TRAINED_EPOCHS passes over one set); and its training loss after each pass."""
    keras.backend.clear_session()  # layer names count from conv2d again, as in a user's own file
    keras.utils.set_random_seed(seed)
    model, data, loss = {**MEMBERS, **KINDS, **SEQUENCES}[name](keras)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    x, y = data(np.random.default_rng(seed), TRAINED_STEPS // TRAINED_EPOCHS * TRAINED_BATCH)
    history = model.fit(x, y, batch_size=TRAINED_BATCH, epochs=TRAINED_EPOCHS, verbose=0, shuffle=True)
    return model, [round(float(value), 4) for value in history.history["loss"]]


def main(argv: list[str] | None = None) -> int:
    """Train each named member (every one of MEMBERS where none is named; `sequences`: every one of
    SEQUENCES) and save it into OUT as NAME.h5 (keras2) or NAME.keras (keras3)."""
    argv = sys.argv[1:] if argv is None else argv
    out, flavour, names = Path(argv[0]), argv[1], argv[2:] or list(MEMBERS)
    if names == ["sequences"]:  # the group `make sequences` asks for
        names = list(SEQUENCES)
    if flavour == "keras2":
        import tf_keras as keras
    else:
        import keras
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        started = time.perf_counter()
        model, losses = build(keras, name)
        path = out / f"{name}{TRAINED_FLAVOURS[flavour]}"
        model.save(str(path))
        print(json.dumps({"model": name, "file": str(path), "layers": len(model.layers), "loss_per_pass": losses,
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
