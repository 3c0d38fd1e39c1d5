"""Keras `predict` speed for `make bench`, in the TensorFlow process."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.common.keras_job import KerasBench
from pipeline.data import cifar


def set_threads(threads: int) -> None:
    """Pin TensorFlow to `threads` intra-op threads; must run before TensorFlow runs anything."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def bench(model, data: Path, job: KerasBench) -> dict[str, float]:
    """{batch size: images/s} of `predict` on the first `job.images` test images (or `job.inputs`: several
    inputs packed, `feeds`), best of `job.repeats` after a warm-up."""
    from pipeline.tf_side.loading import input_layout

    inputs = np.load(job.inputs) if job.inputs is not None else cifar.load(data).images[: job.images].astype(np.float32)
    layout = input_layout(model)
    count = len(inputs)
    inputs = layout.unpack(inputs) if layout.several else inputs
    speeds = {}
    for size in job.sizes:
        model.predict(inputs, batch_size=size, verbose=0)
        best = float("inf")
        for _ in range(job.repeats):
            started = time.perf_counter()
            model.predict(inputs, batch_size=size, verbose=0)
            best = min(best, time.perf_counter() - started)
        speeds[str(size)] = count / best
    return speeds
