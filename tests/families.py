"""One small random-weight Keras model per layer family, built in a TensorFlow process.

Each family is a snippet run with `keras` bound to Keras 3 (saved as `.keras`) or to tf-keras, the
Keras 2 API (saved as a legacy `.h5`, the format older models arrive in). Weights are Keras's random
initialisers with a fixed seed, the first kernel scaled by 1/255 as if the model normalised its
0..255 inputs (the check set's), so that values stay in the range trained models see; BatchNormalization
gets non-trivial moving statistics so that a wrongly folded or dropped BN shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import helpers

FLAVOURS = ("keras3", "keras2")  # Keras 3 saving .keras; tf-keras (Keras 2 API) saving a legacy .h5

# name -> snippet that binds `model`; `L` is keras.layers. Input ranks 2 (dense), 3 (conv1d), 4 (the rest).
FAMILIES: dict[str, str] = {
    "conv1d": """
        x = inp = keras.Input((20, 3))
        x = L.Conv1D(4, 3, strides=2, padding="same", activation="relu")(x)
        x = L.Conv1D(5, 3, padding="valid")(x)
        x = L.MaxPooling1D(2)(x)
        x = L.AveragePooling1D(2, padding="same")(x)  # even length: equal padding (onnx2torch refuses unequal)
        x = L.GlobalAveragePooling1D()(x)
        model = keras.Model(inp, L.Dense(3, activation="softmax")(x))
    """,
    "conv2d": """
        x = inp = keras.Input((12, 12, 3))
        x = L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
        x = L.Conv2D(6, (3, 2), padding="valid", activation="tanh")(x)
        x = L.Flatten()(x)
        model = keras.Model(inp, L.Dense(5, activation="softmax")(x))
    """,
    "depthwise": """
        x = inp = keras.Input((12, 12, 3))
        x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
        x = L.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu")(x)
        model = keras.Model(inp, L.GlobalMaxPooling2D()(x))
    """,
    "separable": """
        x = inp = keras.Input((12, 12, 3))
        x = L.SeparableConv2D(4, 3, padding="same", activation="relu")(x)
        x = L.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2)(x)
        model = keras.Model(inp, L.GlobalAveragePooling2D()(x))
    """,
    "conv_transpose": """
        x = inp = keras.Input((6, 6, 3))
        x = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(x)
        x = L.Conv2DTranspose(2, 2, strides=1, padding="valid")(x)
        model = keras.Model(inp, L.Flatten()(x))
    """,
    "dense": """
        x = inp = keras.Input((10,))
        x = L.Dense(8, activation="relu")(x)
        x = L.Dense(6)(x)
        model = keras.Model(inp, L.Dense(3, activation="sigmoid")(x))
    """,
    "batchnorm": """
        x = inp = keras.Input((8, 8, 3))
        x = L.BatchNormalization()(x)
        x = L.Conv2D(4, 3, padding="same")(x)
        x = L.BatchNormalization(epsilon=1e-5)(x)
        x = L.Flatten()(x)
        x = L.Dense(6)(x)
        model = keras.Model(inp, L.BatchNormalization()(x))
    """,
    "pooling": """
        x = inp = keras.Input((16, 16, 3))
        x = L.MaxPooling2D(2)(x)
        x = L.AveragePooling2D(3, strides=1, padding="same")(x)
        a = L.GlobalAveragePooling2D()(x)
        b = L.GlobalMaxPooling2D()(x)
        model = keras.Model(inp, L.Concatenate()([a, b]))
    """,
    "pad_crop_upsample": """
        x = inp = keras.Input((8, 8, 3))
        x = L.ZeroPadding2D(((1, 2), (0, 1)))(x)
        x = L.Conv2D(4, 3)(x)
        x = L.Cropping2D(((1, 0), (2, 1)))(x)
        x = L.UpSampling2D(2)(x)
        model = keras.Model(inp, L.Conv2D(2, 3, strides=2)(x))
    """,
    "resize": """
        x = inp = keras.Input((12, 12, 3))
        x = L.Conv2D(4, 3, padding="same", activation="relu")(x)
        x = L.Resizing(10, 14)(x)  # bilinear, by 10/12 and 14/12: not whole multiples
        x = L.UpSampling2D(2, interpolation="bilinear")(x)
        x = L.Resizing(7, 9, interpolation="nearest")(x)
        model = keras.Model(inp, L.Conv2D(2, 3, strides=2)(x))
    """,
    "preprocessing": """
        x = inp = keras.Input((10, 10, 3))
        x = L.Rescaling(1 / 255.0, offset=-0.5)(x)
        norm = L.Normalization()  # adapted: its statistics are weights, set again after loading (`finalize_state`)
        norm.adapt(np.random.default_rng(1).uniform(-0.5, 0.5, (64, 10, 10, 3)).astype("float32"))
        x = L.Conv2D(4, 3, activation="relu")(norm(x))
        model = keras.Model(inp, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x)))
    """,
    "reshape_permute": """
        x = inp = keras.Input((4, 6, 3))
        x = L.Conv2D(4, 1)(x)
        x = L.Reshape((6, 4, 4))(x)
        x = L.Permute((2, 1, 3))(x)
        x = L.Conv2D(3, 3)(x)
        x = L.Reshape((-1,))(x)
        x = L.Dropout(0.5)(x)
        model = keras.Model(inp, L.Dense(4, activation="softmax")(x))
    """,
    "merge": """
        inp = keras.Input((8, 8, 3))
        a = L.Conv2D(4, 3, padding="same")(inp)
        b = L.Conv2D(4, 1)(inp)
        c = L.Conv2D(4, 3, padding="same", activation="sigmoid")(inp)
        x = L.Concatenate()([L.Add()([a, b]), L.Subtract()([a, b]), L.Multiply()([a, c])])
        x = L.Conv2D(3, 3, strides=2)(x)
        model = keras.Model(inp, L.Flatten()(x))
    """,
    "activations": """
        x = inp = keras.Input((12,))
        for activation in ("relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "swish", "gelu", "softmax"):
            x = L.Dense(12)(x)
            x = L.Activation(activation)(x)
        x = L.Dense(12)(x)
        x = L.LeakyReLU()(x)
        x = L.Dense(12)(x)
        x = L.ReLU(max_value=6.0)(x)
        model = keras.Model(inp, L.Dense(4, activation="softmax")(x))
    """,
    "convnext_block": """
        x = inp = keras.Input((10, 10, 8))
        x = L.Conv2D(8, 3, padding="same", groups=8, name="depthwise_grouped")(x)  # ConvNeXt's depthwise conv
        x = L.Conv2D(6, 3, strides=2, padding="same", groups=2, activation="relu", name="two_groups")(x)
        x = L.LayerNormalization(epsilon=1e-6)(x)
        x = L.Dense(5, activation="relu")(x)  # a Dense on a rank-4 tensor: ConvNeXt's pointwise convs
        x = L.LayerNormalization(axis=[1, 2, 3], center=False)(x)  # over the whole feature map, no offset
        model = keras.Model(inp, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x)))
    """,
    "prelu_groupnorm_spatial": """
        x = inp = keras.Input((10, 10, 6))
        x = L.Conv2D(8, 3, padding="same")(x)
        x = L.PReLU(shared_axes=[1, 2])(x)  # one alpha per channel
        x = L.GroupNormalization(groups=4)(x)
        x = L.SpatialDropout2D(0.2)(x)
        x = L.Conv2D(8, 3)(x)
        x = L.PReLU()(x)  # one alpha per element
        x = L.ELU(alpha=0.5)(x)
        x = L.Reshape((64, 8))(x)
        x = L.SpatialDropout1D(0.1)(x)
        x = L.Conv1D(6, 3)(x)
        x = L.GroupNormalization(groups=2, epsilon=1e-5)(x)
        model = keras.Model(inp, L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(x)))
    """,
    "conv3d": """
        x = inp = keras.Input((6, 8, 8, 2))  # a video clip: frames × height × width × channels
        x = L.Conv3D(4, 3, padding="same", activation="relu")(x)
        x = L.Conv3D(4, (1, 3, 3), strides=(1, 2, 2), padding="same")(x)
        x = L.SpatialDropout3D(0.1)(x)
        model = keras.Model(inp, L.Dense(3, activation="softmax")(L.GlobalAveragePooling3D()(x)))
    """,
    "time_distributed": """
        x = inp = keras.Input((4, 8, 8, 3))  # a clip of 4 frames: a CNN on each frame, then an LSTM over them
        x = L.TimeDistributed(L.Conv2D(4, 3, padding="same", activation="relu"))(x)
        x = L.TimeDistributed(L.MaxPooling2D(2))(x)
        x = L.TimeDistributed(L.GlobalAveragePooling2D())(x)
        x = L.LSTM(6, return_sequences=True)(x)
        x = L.TimeDistributed(L.Dense(5, activation="tanh"))(x)
        model = keras.Model(inp, L.Dense(3, activation="softmax")(L.Flatten()(x)))
    """,
    "attention_layers": """
        query, value = keras.Input((12, 4)), keras.Input((10, 4))  # two sequences of their own lengths
        x = L.Attention(use_scale=True)([L.Dense(6)(query), L.Dense(6)(value)])
        y = L.AdditiveAttention()([L.Dense(6)(query), L.Dense(6)(value)])
        z = L.Attention()([x, y])
        model = keras.Model([query, value], L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(L.Concatenate()([x, z]))))
    """,
    "sequential": """
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dropout(0.2),
            L.Dense(5, activation="softmax"),
        ])
    """,
}

# Run once in a TensorFlow process: argv = output folder, "keras3" | "keras2", family names...
BUILD_SCRIPT = """
import json, sys, textwrap
from pathlib import Path
import numpy as np
out, flavour, snippets = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
if flavour == "keras2":
    import tf_keras as keras
    suffix = ".h5"
else:
    import keras
    suffix = ".keras"
L = keras.layers
for name, snippet in snippets.items():
    keras.utils.set_random_seed(sum(map(ord, name)))
    scope = {"keras": keras, "L": L, "np": np}
    exec(textwrap.dedent(snippet), scope)
    model = scope["model"]
    rng = np.random.default_rng(0)
    first = next((layer for layer in model.layers if layer.get_weights() and not isinstance(layer, (L.BatchNormalization, L.Normalization))), None)
    if first is not None and not any(isinstance(layer, L.Rescaling) for layer in model.layers):  # else it scales its inputs itself
        first.set_weights([w / 255 for w in first.get_weights()])
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n), rng.normal(0, 20, n), rng.uniform(50, 400, n)])
    model.save(str(out / f"{name}{suffix}"))
"""


# Models the converters cannot take as they are: the tool must say which layer and op.
UNSUPPORTED: dict[str, str] = {
    # 'same' average pooling of an odd size pads 0 before, 1 after; onnx2torch refuses unequal padding.
    "avgpool_unequal_padding": """
        x = inp = keras.Input((7, 7, 3))
        x = L.Conv2D(4, 3, padding="same")(x)
        model = keras.Model(inp, L.AveragePooling2D(2, padding="same", name="odd_pool")(x))
    """,
}


def build(folder: Path, flavour: str, snippets: dict[str, str] | None = None) -> dict[str, Path]:
    """Build `snippets` (default: every family) into `folder`; `flavour` is "keras3" or "keras2"."""
    snippets = FAMILIES if snippets is None else snippets
    helpers.run_tf_script(BUILD_SCRIPT, str(folder), flavour, json.dumps(snippets))
    suffix = ".h5" if flavour == "keras2" else ".keras"
    return {name: folder / f"{name}{suffix}" for name in snippets}


# Converts many models in one TensorFlow process through the worker's own entry point (the CLI starts
# one process per model; here TensorFlow's start-up would dominate). argv: JSON [[model, out dir], ...].
CONVERT_SCRIPT = """
import json, sys
from pathlib import Path
from pipeline.common.keras_job import KerasJob
from pipeline.tf_side import worker
failures = {}
for model, out in json.loads(sys.argv[1]):
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    job = KerasJob(Path(model), onnx=out / "model.onnx", reference=out / "keras_reference.npz", layers=out / "keras_layers.npz",
                   onnx_f64=out / "model_f64.onnx", reference_f64=out / "keras_reference_f64.npz", layers_f64=out / "keras_layers_f64.npz")
    (out / "job.json").write_text(job.to_json())
    code = worker.main([str(out / "job.json"), str(out / "worker.json")])
    if code:
        failures[model] = code
print(json.dumps(failures))
"""


def convert_all(jobs: list[tuple[Path, Path]]) -> None:
    """Run the TensorFlow worker (onnx + reference + layers) for each (model, out dir) in one TensorFlow process."""
    payload = json.dumps([[str(m), str(o)] for m, o in jobs])
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(CONVERT_SCRIPT), payload], cwd=helpers.ROOT,
                               capture_output=True, text=True, env=helpers.tf_env())
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {}, completed.stderr[-3000:]
