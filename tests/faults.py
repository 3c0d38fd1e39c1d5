"""Deliberate faults for the layer-by-layer checker's own tests, in a registry keyed by fault kind.

Each fault edits a good ONNX file (found by weight values and graph structure, never by name: tf2onnx
renames layers) and names the Keras layer (.h5 name) where verify must place the first divergence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

import helpers

ONNX_FAULTS: dict[str, Callable] = {}


def fault(name: str):
    def decorate(function):
        ONNX_FAULTS[name] = function
        return function

    return decorate


def _initializer_index(proto, wanted: np.ndarray, atol: float = 0.0) -> int:
    for index, init in enumerate(proto.graph.initializer):
        value = numpy_helper.to_array(init)
        if value.size == wanted.size and np.allclose(value.ravel(), wanted.ravel(), rtol=1e-5 if atol else 0, atol=atol):
            return index
    raise AssertionError("no initializer holds those values")


def _conv_node(proto, keras_kernel: np.ndarray):
    name = proto.graph.initializer[_initializer_index(proto, keras_kernel.transpose(3, 2, 0, 1))].name
    return next(n for n in proto.graph.node if n.op_type == "Conv" and n.input[1] == name)


def _consumer(proto, tensor: str, op_type: str):
    return next(n for n in proto.graph.node if tensor in n.input and n.op_type == op_type)


@fault("conv_weight")
def conv_weight(proto, model: Path, layer: str) -> None:
    """One weight of `layer`'s kernel changed by 2e-2."""
    kernel = helpers.h5_tensor(model, f"{layer}/kernel")
    wanted = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel
    index = _initializer_index(proto, wanted)
    value = numpy_helper.to_array(proto.graph.initializer[index]).copy()
    value.flat[value.size // 2] += 2e-2
    proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(value, proto.graph.initializer[index].name))


@fault("bn_scale")
def bn_scale(proto, model: Path, layer: str) -> None:
    """The folded BatchNorm scale gamma/sqrt(var + eps) of `layer` changed by 1% in channel 0."""
    gamma, variance = (helpers.h5_tensor(model, f"{layer}/{w}") for w in ("gamma", "moving_variance"))
    index = _initializer_index(proto, gamma / np.sqrt(variance + 1e-3), atol=1e-7)
    value = numpy_helper.to_array(proto.graph.initializer[index]).copy()
    value.flat[0] *= 1.01
    proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(value, proto.graph.initializer[index].name))


@fault("symmetric_padding")
def symmetric_padding(proto, model: Path, layer: str) -> None:
    """`layer`, a 3×3 stride-2 conv, padded 1 on every side (PyTorch style) instead of TF 'same' (0 before, 1 after)."""
    node = _conv_node(proto, helpers.h5_tensor(model, f"{layer}/kernel"))
    pads = next(a for a in node.attribute if a.name == "pads")
    assert list(pads.ints) == [0, 0, 1, 1], list(pads.ints)
    pads.ints[:] = [1, 1, 1, 1]


@fault("relu_dropped")
def relu_dropped(proto, model: Path, layer: str) -> None:
    """The ReLU after `layer`'s conv → BatchNorm (Mul, Add) replaced by Identity."""
    conv = _conv_node(proto, helpers.h5_tensor(model, f"{layer}/kernel"))
    mul = _consumer(proto, conv.output[0], "Mul")
    add = _consumer(proto, mul.output[0], "Add")
    _consumer(proto, add.output[0], "Relu").op_type = "Identity"


@fault("kernel_permuted")
def kernel_permuted(proto, model: Path, layer: str) -> None:
    """`layer`'s kernel with kh and kw swapped: the wrong axis permutation of the Keras kernel."""
    kernel = helpers.h5_tensor(model, f"{layer}/kernel")
    index = _initializer_index(proto, kernel.transpose(3, 2, 0, 1))
    wrong = kernel.transpose(3, 2, 1, 0)  # (out, in, kw, kh) instead of (out, in, kh, kw)
    assert not np.array_equal(wrong, kernel.transpose(3, 2, 0, 1))
    proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(wrong), proto.graph.initializer[index].name))


def broken_onnx(kind: str, good: Path, target: Path, model: Path, layer: str) -> Path:
    """Write `good` with fault `kind` placed at Keras layer `layer` to `target`."""
    proto = onnx.load(str(good))
    ONNX_FAULTS[kind](proto, model, layer)
    onnx.save(proto, str(target))
    return target
