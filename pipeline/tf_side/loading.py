"""Load a Keras model in the TensorFlow process: Keras 3 first, tf-keras for what only Keras 2 reads."""

from __future__ import annotations

import zipfile
from pathlib import Path


def load_keras_model(path: Path, allow_unsafe_code: bool = False):
    """Keras 3's loader, in safe mode unless the user opted in; for a legacy .h5 that Keras 3 cannot
    deserialize (Keras 2 configs, e.g. a DepthwiseConv2D with a `groups` key), tf-keras — the Keras 2
    API — instead. The caller has run `keras_file.safety.check` first: tf-keras runs a Lambda's code
    on load, so nothing reaches it that the safety check has not seen."""
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
