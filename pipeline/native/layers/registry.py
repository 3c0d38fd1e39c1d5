"""The registry of native emitters, keyed by Keras class name, and what every family's emitters share.

An emitter gets the layer (its config and weights) and its input tensors, and returns the submodule it
needs (source of a constructor, or None), the forward expression, and where each Keras weight goes in
the state_dict with its layout transform. Inside the generated model every tensor of rank ≥ 3 is
channels-first — (N, C, H, W), (N, C, W) — so Keras's channel axis (−1) is torch's axis 1; layers that
depend on the order of the other axes (Flatten, Reshape, Permute) work in Keras's order and come back.

The emitters themselves are in this package's family modules (`convolution`, `pooling`, ...): each
registers the Keras classes it writes with `emits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from pipeline.common.errors import BadInput
from pipeline.keras_file.graph import KerasLayer


@dataclass(frozen=True)
class WeightRule:
    """Where one Keras weight goes: state_dict key (under the layer's attribute), and the axis
    permutation, then reshape, then order of gate blocks along axis 0 (`gates[j]`: the Keras block that
    becomes torch's block j — a GRU's z, r, h as torch's r, z, n) that turn the Keras array into the torch
    tensor. A weight of several rows that torch keeps as several tensors (a GRU's input and recurrent bias,
    shape (2, 3·units)) has a key per row, each row transformed alike."""

    key: str | tuple[str, ...]
    permute: tuple[int, ...] | None = None
    reshape: tuple[int, ...] | None = None
    gates: tuple[int, ...] | None = None

    @classmethod
    def from_map(cls, entry: dict) -> WeightRule:
        """The rule a `weights_map.json` entry states."""
        key = tuple(entry["key"]) if isinstance(entry["key"], list) else entry["key"]
        return cls(key, tuple(entry["permute"]) if entry["permute"] else None, tuple(entry["reshape"]) if entry["reshape"] else None,
                   tuple(entry["gates"]) if entry.get("gates") else None)

    def as_map(self, under: str) -> dict:
        """The `weights_map.json` entry of this rule, its keys under the attribute `under`."""
        key = [f"{under}.{k}" for k in self.key] if isinstance(self.key, tuple) else f"{under}.{self.key}"
        entry = {"key": key, "permute": list(self.permute) if self.permute else None, "reshape": list(self.reshape) if self.reshape else None}
        return {**entry, "gates": list(self.gates)} if self.gates else entry

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The torch tensor (stacked rows, for a rule of several keys)."""
        if isinstance(self.key, tuple):
            return np.stack([replace(self, key="").apply(row) for row in array])
        if self.permute is not None:
            array = np.transpose(array, self.permute)
        if self.reshape is not None:
            array = array.reshape(self.reshape)
        if self.gates is not None:
            blocks = np.split(array, len(self.gates))
            array = np.concatenate([blocks[i] for i in self.gates])
        return np.ascontiguousarray(array)

    def tensors(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """{state_dict key (under the layer's attribute): tensor} of the Keras `array`."""
        value = self.apply(array)
        return dict(zip(self.key, value, strict=True)) if isinstance(self.key, tuple) else {self.key: value}


@dataclass(frozen=True)
class Tensor:
    """A tensor of the generated forward: its variable name, its rank as Keras sees it, and the variable
    holding its Keras mask ((N, steps) booleans: an Embedding's `mask_zero`), where it has one."""

    var: str
    rank: int
    mask: str | None = None


@dataclass
class Emitted:
    """One layer in source: `module` (constructor source, or None), `expr` (its output, from its inputs'
    variables), `rank` of that output, and the Keras weights it takes (`{weight name: WeightRule}`)."""

    module: str | None
    expr: str
    rank: int
    weights: dict[str, WeightRule] = field(default_factory=dict)
    activation: str | None = None  # applied after `expr` (a Conv's or Dense's own activation)
    in_source: tuple[str, ...] = ()  # Keras weights written into the source as constants, not into the state_dict
    # state_dict entries the Keras layer has no weight for, with their values (LSTM's second bias: zero, frozen)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()  # config fields the emitter did not read (set by `emit`, see `_ignored`)
    # the output's Keras mask: an expression of the inputs' variables (an Embedding's `ids != 0`), or the variable
    # of an input's mask it keeps (a recurrent layer returning every step); None: no mask goes on
    mask: str | None = None
    # the names of the tensors `expr` returns after the output, each (N, features) — a recurrent layer's final
    # states with `return_state` ("h", "c") —, Keras's outputs 1, 2, ... of the layer; () for one output
    states: tuple[str, ...] = ()


@dataclass(frozen=True)
class Context:
    attr: str  # the layer's attribute name in the generated module (`self.<attr>`)
    keras2: bool  # the file was written by Keras 2 (its hard_sigmoid differs)
    legacy_h5: bool = False  # a legacy HDF5 file (its number-operand ops are Rescaling layers on the TensorFlow side)
    frozen: bool = False  # Keras does not train the layer (trainable=False, or a frozen model around it)


Emitter = Callable[[KerasLayer, dict, list[Tensor], Context], Emitted]


@dataclass(frozen=True)
class _Registered:
    function: Emitter
    ignores: frozenset[str]  # config fields it need not read (see `emits`)
    mask: str  # what it does with a Keras mask on its input (see `emits`)


_EMITTERS: dict[str, _Registered] = {}

# Config fields that do not change what a layer computes: its name, how it was initialised and seeded,
# whether it trains, its dtype (`generate` notes any but float32), the input shape a Keras 2 Sequential's
# first layer carries, and its regularizers and constraints (`generate` reports those as not carried).
_INERT_FIELDS = frozenset({"name", "trainable", "dtype", "seed", "batch_input_shape", "batch_shape"})
_INERT_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# Fields only Keras 1 wrote (Keras 2.0 renamed them: init → kernel_initializer, border_mode → padding, ...)
_KERAS1_FIELDS = ("init", "border_mode", "subsample", "dim_ordering", "nb_filter", "W_regularizer")


# What an emitter does with a Keras mask on its input (an Embedding's `mask_zero`): "passes" it on unchanged,
# computing as without one (Keras's Dropout, Dense); "takes" it, the emitter reading `Tensor.mask` and saying
# what goes on (`Emitted.mask`: a recurrent layer); "refuses" — the default, as Keras layers that use a mask
# (a masked mean, attention) would compute otherwise than the native emitter.
MASK_HANDLING = ("passes", "takes", "refuses")


def emits(*class_names: str, ignores: tuple[str, ...] = (), mask: str = "refuses"):
    """Register an emitter for the Keras layer classes `class_names`; `ignores`: config fields it need not
    read — restated by the weights' shapes (`filters`, `units`), or meaningless for the class; `mask`: what
    it does with a Keras mask (`MASK_HANDLING`)."""
    assert mask in MASK_HANDLING, mask

    def decorate(function: Emitter) -> Emitter:
        for name in class_names:
            _EMITTERS[name] = _Registered(function, frozenset(ignores), mask)
        return function

    return decorate


def registered() -> list[str]:
    """The Keras layer classes an emitter is registered for, sorted (for the supported-layers table)."""
    return sorted(_EMITTERS)


class _Fields(dict):
    """A layer's config that records which fields are read, so that what its emitter never looked at is
    noted as ignored rather than dropped in silence."""

    def __init__(self, config: dict):
        super().__init__(config)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return super().__contains__(key)


def emit(layer: KerasLayer, weights: dict, inputs: list[Tensor], context: Context) -> Emitted:
    """`layer` as source (see `Emitted`), with the config fields its emitter did not read in `ignored`.

    Raises:
        BadInput: naming the layer, where its class or an option is not supported, its config is Keras
            1's, or a field or weight its emitter needs is missing.
    """
    registered = _EMITTERS.get(layer.class_name)
    if registered is None:
        raise BadInput(f"layer {layer.name}: {layer.class_name} has no native PyTorch equivalent here yet; the ONNX path (model.pt2) still works")
    keras1 = [name for name in _KERAS1_FIELDS if name in layer.config]
    if keras1:
        raise unsupported(layer, f"a Keras 1 config (field '{keras1[0]}', which Keras 2 renamed)")
    masked = [x for x in inputs if x.mask]
    if masked and registered.mask == "refuses":
        raise unsupported(layer, "a Keras mask on its input (from an Embedding's mask_zero)")
    fields = _Fields(layer.config)
    if fields.get("data_format", "channels_last") != "channels_last":
        raise unsupported(layer, f"data_format {fields['data_format']}")  # every emitter takes Keras's tensors channels-last
    try:
        emitted = registered.function(replace(layer, config=fields), weights, inputs, context)
    except KeyError as exc:
        raise BadInput(f"layer {layer.name} ({layer.class_name}): its config or weights lack {exc.args[0]!r}, which the "
                       "native model needs; the ONNX path (model.pt2) still works") from exc
    emitted.ignored = _ignored(fields, registered.ignores)
    if masked and registered.mask == "passes":
        if len(inputs) != 1:
            raise unsupported(layer, "a Keras mask on one of several inputs")
        emitted.mask = masked[0].mask
    return emitted


def _ignored(fields: _Fields, ignores: frozenset[str]) -> tuple[str, ...]:
    """The fields of `fields` nobody read, but for the inert ones (`_INERT_FIELDS`) and those the emitter
    `ignores`; a field set to null or false is an option left off, and not among them."""
    return tuple(sorted(key for key, value in dict.items(fields)
                        if key not in fields.read and key not in ignores and key not in _INERT_FIELDS
                        and not key.endswith(_INERT_SUFFIXES) and value is not None and value is not False))


def unsupported(layer: KerasLayer, what: str) -> BadInput:
    return BadInput(f"layer {layer.name} ({layer.class_name}): {what} is not supported by the native model; the ONNX path (model.pt2) still works")


def torch_axis(axis: int, rank: int) -> int:
    """Keras axis `axis` of a rank-`rank` tensor, as the channels-first tensor's axis."""
    axis = axis % rank
    if rank < 3 or axis == 0:
        return axis
    return 1 if axis == rank - 1 else axis + 1


def pair(value, n: int) -> tuple[int, ...]:
    """A size Keras gives as one number or one per axis, as one per axis (`n` of them)."""
    return tuple(value) if isinstance(value, list | tuple) else (value,) * n


# TensorFlow's image resizing (half-pixel centres) as `F.interpolate`'s modes: bilinear is torch's with
# `align_corners=False` (both clamp the source position to the edge pixels); nearest takes floor((y + ½)·scale),
# torch's 'nearest-exact' (its 'nearest' drops the ½).
INTERPOLATIONS = {"bilinear": "mode='bilinear', align_corners=False", "nearest": "mode='nearest-exact'"}


def interpolation(layer: KerasLayer, default: str) -> str:
    """`F.interpolate`'s mode arguments (source) for `layer`'s `interpolation` (`default`: the class's, where the config
    leaves it out — `UpSampling2D` nearest, `Resizing` bilinear).

    Raises:
        BadInput: an interpolation other than bilinear or nearest.
    """
    name = layer.config.get("interpolation", default)
    if name not in INTERPOLATIONS:
        raise unsupported(layer, f"interpolation '{name}'")
    return INTERPOLATIONS[name]


def number(value) -> str:
    """A number as Python source (a float, as the generated code writes it)."""
    return repr(float(value))


def kernel_of(weights: dict, *names: str):
    """(name, array) of the first of the weights `names` the layer has (Keras 2 and 3 name some apart)."""
    for name in names:
        if name in weights:
            return name, weights[name]
    raise BadInput(f"weights {'/'.join(names)} missing")


def config_axis(config) -> int | list | None:
    """A layer's `axis` (default -1), one axis written as a one-element list (Keras 3) unwrapped."""
    axis = config.get("axis", -1)
    return axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
