"""How each Keras layer is written as PyTorch source: a registry keyed by Keras class name.

An emitter gets the layer (its config and weights) and its input tensors, and returns the submodule it
needs (source of a constructor, or None), the forward expression, and where each Keras weight goes in
the state_dict with its layout transform. Inside the generated model every tensor of rank ≥ 3 is
channels-first — (N, C, H, W), (N, C, W) — so Keras's channel axis (−1) is torch's axis 1; layers that
depend on the order of the other axes (Flatten, Reshape, Permute) work in Keras's order and come back.
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
    permutation, then reshape, that turn the Keras array into the torch tensor."""

    key: str
    permute: tuple[int, ...] | None = None
    reshape: tuple[int, ...] | None = None

    @classmethod
    def from_map(cls, entry: dict) -> WeightRule:
        """The rule a `weights_map.json` entry states."""
        return cls(entry["key"], tuple(entry["permute"]) if entry["permute"] else None, tuple(entry["reshape"]) if entry["reshape"] else None)

    def apply(self, array: np.ndarray) -> np.ndarray:
        if self.permute is not None:
            array = np.transpose(array, self.permute)
        return np.ascontiguousarray(array.reshape(self.reshape) if self.reshape is not None else array)


@dataclass(frozen=True)
class Tensor:
    """A tensor of the generated forward: its variable name and its rank as Keras sees it."""

    var: str
    rank: int


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
    ignored: tuple[str, ...] = ()  # config fields the emitter did not read (set by `emit`, see `_ignored`)


@dataclass(frozen=True)
class Context:
    attr: str  # the layer's attribute name in the generated module (`self.<attr>`)
    keras2: bool  # the file was written by Keras 2 (its hard_sigmoid differs)
    legacy_h5: bool = False  # a legacy HDF5 file (its number-operand ops are Rescaling layers on the TensorFlow side)


Emitter = Callable[[KerasLayer, dict, list[Tensor], Context], Emitted]


@dataclass(frozen=True)
class _Registered:
    function: Emitter
    ignores: frozenset[str]  # config fields it need not read (see `emits`)


_EMITTERS: dict[str, _Registered] = {}

# Config fields that do not change what a layer computes: its name, how it was initialised and seeded,
# whether it trains, its dtype (`generate` notes any but float32), the input shape a Keras 2 Sequential's
# first layer carries, and its regularizers and constraints (`generate` reports those as not carried).
_INERT_FIELDS = frozenset({"name", "trainable", "dtype", "seed", "batch_input_shape", "batch_shape"})
_INERT_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# Fields only Keras 1 wrote (Keras 2.0 renamed them: init → kernel_initializer, border_mode → padding, ...)
_KERAS1_FIELDS = ("init", "border_mode", "subsample", "dim_ordering", "nb_filter", "W_regularizer")


def emits(*class_names: str, ignores: tuple[str, ...] = ()):
    """Register an emitter for the Keras layer classes `class_names`; `ignores`: config fields it need not
    read — restated by the weights' shapes (`filters`, `units`), or meaningless for the class."""

    def decorate(function: Emitter) -> Emitter:
        for name in class_names:
            _EMITTERS[name] = _Registered(function, frozenset(ignores))
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
    fields = _Fields(layer.config)
    if fields.get("data_format", "channels_last") != "channels_last":
        raise unsupported(layer, f"data_format {fields['data_format']}")  # every emitter takes Keras's tensors channels-last
    try:
        emitted = registered.function(replace(layer, config=fields), weights, inputs, context)
    except KeyError as exc:
        raise BadInput(f"layer {layer.name} ({layer.class_name}): its config or weights lack {exc.args[0]!r}, which the "
                       "native model needs; the ONNX path (model.pt2) still works") from exc
    emitted.ignored = _ignored(fields, registered.ignores)
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


def _pair(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,) * n


def _torch_conv(dims: int, c_in: int, c_out: int, kernel, stride=None, dilation=None, groups: int = 1, bias: bool = True) -> str:
    """Source of an nn.ConvNd, with the options left at torch's defaults left out (as a person writes it)."""
    options = [f"stride={stride}" if stride and set(stride) != {1} else "", f"dilation={dilation}" if dilation and set(dilation) != {1} else "",
               f"groups={groups}" if groups != 1 else "", "bias=False" if not bias else ""]
    return f"nn.Conv{dims}d({', '.join([str(c_in), str(c_out), str(kernel)] + [o for o in options if o])})"


def _number(value) -> str:
    return repr(float(value))


# Keras activation names → PyTorch, on the source of the tensor `{x}` (channels axis 1 for softmax).
ACTIVATIONS = {
    "linear": "{x}",
    "relu": "F.relu({x})",
    "relu6": "F.relu6({x})",
    "sigmoid": "torch.sigmoid({x})",
    "tanh": "torch.tanh({x})",
    "softmax": "torch.softmax({x}, dim={axis})",
    "swish": "F.silu({x})",
    "silu": "F.silu({x})",
    "gelu": "gelu({x})",  # the exact erf form, with Keras's constant (`keras_ops.gelu`)
    "elu": "F.elu({x})",
    "selu": "F.selu({x})",
    "softplus": "F.softplus({x})",
    "softsign": "F.softsign({x})",
    "exponential": "torch.exp({x})",
    "hard_sigmoid": "hard_sigmoid({x}, keras2={keras2})",
    "hard_swish": "{x} * hard_sigmoid({x})",
    "hard_silu": "{x} * hard_sigmoid({x})",
}


def activation_source(name: str, var: str, rank: int, context: Context, layer: KerasLayer) -> str:
    """The source applying Keras activation `name` to variable `var`."""
    if name not in ACTIVATIONS:
        raise unsupported(layer, f"activation '{name}'")
    return ACTIVATIONS[name].format(x=var, axis=torch_axis(-1, rank), keras2=context.keras2)


def _kernel(weights: dict, *names: str):
    for name in names:
        if name in weights:
            return name, weights[name]
    raise BadInput(f"weights {'/'.join(names)} missing")


def _same(layer: KerasLayer) -> bool:
    """Whether a convolution pads 'same' (else 'valid'); BadInput for another padding or channels_first."""
    if layer.config.get("data_format", "channels_last") != "channels_last":
        raise unsupported(layer, "data_format channels_first")
    if layer.config.get("padding") not in ("same", "valid"):
        raise unsupported(layer, f"padding '{layer.config.get('padding')}'")
    return layer.config["padding"] == "same"


@emits("Conv1D", "Conv2D", ignores=("filters",))
def _conv(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    dims = 1 if layer.class_name == "Conv1D" else 2
    same = _same(layer)
    name, kernel = _kernel(weights, "kernel")
    groups = int(config.get("groups", 1))
    kernel_size, strides = _pair(config["kernel_size"], dims), _pair(config.get("strides", 1), dims)
    dilation = _pair(config.get("dilation_rate", 1), dims)
    c_in, c_out = kernel.shape[-2] * groups, kernel.shape[-1]
    bias = bool(config.get("use_bias", True))
    conv = _torch_conv(dims, c_in, c_out, kernel_size, strides, dilation, groups, bias)
    permute = (2, 1, 0) if dims == 1 else (3, 2, 0, 1)  # (k…, in/groups, out) → (out, in/groups, k…)
    rules = {name: WeightRule("conv.weight", permute)}
    if bias:
        rules["bias"] = WeightRule("conv.bias")
    return Emitted(f"SameConv({conv}, same={same})", f"self.{context.attr}({x.var})", x.rank, rules,
                   layer.activation)


@emits("Conv2DTranspose", ignores=("filters",))
def _conv_transpose(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    same = _same(layer)
    kernel_size, strides = _pair(config["kernel_size"], 2), _pair(config.get("strides", 1), 2)
    if config.get("output_padding") is not None or _pair(config.get("dilation_rate", 1), 2) != (1, 1):
        raise unsupported(layer, "output_padding or dilation")
    if config.get("groups", 1) != 1:  # tf-keras writes groups (always 1 where Keras built it)
        raise unsupported(layer, f"groups {config['groups']}")
    if same and any(k < s for k, s in zip(kernel_size, strides, strict=True)):
        raise unsupported(layer, "padding 'same' with a kernel smaller than its stride")
    kernel = weights["kernel"]  # (kh, kw, out, in)
    bias = bool(config.get("use_bias", True))
    conv = f"nn.ConvTranspose2d({kernel.shape[3]}, {kernel.shape[2]}, {kernel_size}, stride={strides}, bias={bias})"
    rules = {"kernel": WeightRule("conv.weight", (3, 2, 0, 1))}  # → (in, out, kh, kw)
    if bias:
        rules["bias"] = WeightRule("conv.bias")
    return Emitted(f"SameConvTranspose({conv}, same={same})", f"self.{context.attr}({x.var})", x.rank, rules,
                   layer.activation)


# Keras 2 writes its Conv base class's `groups` (always 1) into depthwise and separable configs too
@emits("DepthwiseConv2D", ignores=("depth_multiplier", "kernel_size", "groups"))
def _depthwise(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    same = _same(layer)
    name, kernel = _kernel(weights, "depthwise_kernel", "kernel")
    kh, kw, channels, multiplier = kernel.shape
    strides, dilation = _pair(config.get("strides", 1), 2), _pair(config.get("dilation_rate", 1), 2)
    bias = bool(config.get("use_bias", True))
    conv = _torch_conv(2, channels, channels * multiplier, (kh, kw), strides, dilation, channels, bias)
    # (kh, kw, C, M) → (C·M, 1, kh, kw): output channel c·M + m, as in Keras
    rules = {name: WeightRule("conv.weight", (2, 3, 0, 1), (channels * multiplier, 1, kh, kw))}
    if bias:
        rules["bias"] = WeightRule("conv.bias")
    return Emitted(f"SameConv({conv}, same={same})", f"self.{context.attr}({x.var})", x.rank, rules,
                   layer.activation)


@emits("SeparableConv2D", ignores=("filters", "depth_multiplier", "kernel_size", "groups"))
def _separable(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    same = _same(layer)
    kh, kw, channels, multiplier = weights["depthwise_kernel"].shape
    c_out = weights["pointwise_kernel"].shape[-1]
    strides, dilation = _pair(config.get("strides", 1), 2), _pair(config.get("dilation_rate", 1), 2)
    bias = bool(config.get("use_bias", True))
    depthwise = (f"SameConv({_torch_conv(2, channels, channels * multiplier, (kh, kw), strides, dilation, channels, False)}, "
                 f"same={same})")
    pointwise = _torch_conv(2, channels * multiplier, c_out, 1, bias=bias)
    rules = {"depthwise_kernel": WeightRule("depthwise.conv.weight", (2, 3, 0, 1), (channels * multiplier, 1, kh, kw)),
             "pointwise_kernel": WeightRule("pointwise.weight", (3, 2, 0, 1))}
    if bias:
        rules["bias"] = WeightRule("pointwise.bias")
    return Emitted(f"SeparableConv({depthwise}, {pointwise})", f"self.{context.attr}({x.var})", x.rank, rules, layer.activation)


@emits("Dense", ignores=("units",))
def _dense(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    kernel = weights["kernel"]
    bias = bool(config.get("use_bias", True))
    rules = {"kernel": WeightRule("weight", (1, 0))}
    if bias:
        rules["bias"] = WeightRule("bias")
    # Dense acts on Keras's last axis: the channel axis 1 of a channels-first tensor
    expr = f"self.{context.attr}({x.var})" if x.rank == 2 else f"channels_first(self.{context.attr}(channels_last({x.var})))"
    return Emitted(f"nn.Linear({kernel.shape[0]}, {kernel.shape[1]}{'' if bias else ', bias=False'})", expr, x.rank, rules, layer.activation)


# tf-keras writes `renorm_momentum` with renorm off, and TensorFlow 1.x-era files `fused` (which kernel ran)
@emits("BatchNormalization", ignores=("renorm_momentum", "fused"))
def _batch_norm(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    if config.get("renorm"):
        raise unsupported(layer, "renorm=True")
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not isinstance(axis, int) or torch_axis(axis, x.rank) != 1:
        raise unsupported(layer, f"axis {axis}")
    channels = weights["moving_mean"].shape[0]
    scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
    rules = {"moving_mean": WeightRule("running_mean"), "moving_variance": WeightRule("running_var")}
    if scale:
        rules["gamma"] = WeightRule("weight")
    if center:
        rules["beta"] = WeightRule("bias")
    module = (f"BatchNorm({channels}, eps={_number(config.get('epsilon', 1e-3))}, momentum={_number(config.get('momentum', 0.99))}"
              f"{'' if scale else ', scale=False'}{'' if center else ', center=False'})")
    return Emitted(module, f"self.{context.attr}({x.var})", x.rank, rules)


@emits("LayerNormalization")
def _layer_norm(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not isinstance(axis, int) or axis % x.rank != x.rank - 1:
        raise unsupported(layer, f"axis {axis} (only the last axis)")
    if not (config.get("scale", True) and config.get("center", True)):
        raise unsupported(layer, "scale or center off")
    if config.get("rms_scaling"):
        raise unsupported(layer, "rms_scaling=True")
    channels = weights["gamma"].shape[0]
    rules = {"gamma": WeightRule("weight"), "beta": WeightRule("bias")}
    expr = f"self.{context.attr}({x.var})" if x.rank == 2 else f"channels_first(self.{context.attr}(channels_last({x.var})))"
    return Emitted(f"nn.LayerNorm({channels}, eps={_number(config.get('epsilon', 1e-3))})", expr, x.rank, rules)


@emits("Activation")
def _activation(layer, weights, inputs, context):
    (x,) = inputs
    return Emitted(None, x.var, x.rank, activation=layer.activation)


@emits("ReLU")
def _relu(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    max_value, slope, threshold = config.get("max_value"), float(config.get("negative_slope", 0.0)), float(config.get("threshold", 0.0))
    if slope == 0.0 and threshold == 0.0:
        expr = f"F.relu({x.var})" if max_value is None else f"torch.clamp({x.var}, 0.0, {_number(max_value)})"
        expr = f"F.relu6({x.var})" if max_value is not None and float(max_value) == 6.0 else expr
    else:
        expr = f"keras_relu({x.var}, {None if max_value is None else _number(max_value)}, {slope!r}, {threshold!r})"
    return Emitted(None, expr, x.rank)


@emits("LeakyReLU")
def _leaky_relu(layer, weights, inputs, context):
    (x,) = inputs
    slope = layer.config.get("negative_slope", layer.config.get("alpha", 0.3))  # Keras 3 name, Keras 2 name; both default 0.3
    # TensorFlow holds the slope as a float32 attribute, in float64 too: the same number here
    return Emitted(None, f"F.leaky_relu({x.var}, {float(np.float32(slope))!r})", x.rank)


@emits("Softmax")
def _softmax(layer, weights, inputs, context):
    (x,) = inputs
    axis = layer.config.get("axis", -1)
    return Emitted(None, f"torch.softmax({x.var}, dim={torch_axis(axis, x.rank)})", x.rank)


@emits("Dropout")
def _dropout(layer, weights, inputs, context):
    (x,) = inputs
    rate, noise_shape = float(layer.config["rate"]), layer.config.get("noise_shape")
    if noise_shape is None:
        return Emitted(f"nn.Dropout({rate!r})", f"self.{context.attr}({x.var})", x.rank)
    if len(noise_shape) != x.rank or not all(d is None or isinstance(d, int) for d in noise_shape):
        raise unsupported(layer, f"noise_shape {noise_shape}")
    # Keras's noise shape (N, …, C) in the channels-first order; None: the input's own size there
    shape = [noise_shape[0]] + ([noise_shape[-1]] + list(noise_shape[1:-1]) if x.rank > 2 else list(noise_shape[1:]))
    return Emitted(f"KerasDropout({rate!r}, {shape})", f"self.{context.attr}({x.var})", x.rank)


@emits("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average")
def _merge(layer, weights, inputs, context):
    vars_ = [t.var for t in inputs]
    rank = max(t.rank for t in inputs)
    if any(t.rank != rank for t in inputs):
        raise unsupported(layer, "inputs of different ranks")
    kind = layer.class_name
    if kind == "Subtract":
        return Emitted(None, f"{vars_[0]} - {vars_[1]}", rank)
    if kind in ("Maximum", "Minimum"):
        expr = vars_[0]
        for var in vars_[1:]:
            expr = f"torch.{kind.lower()}({expr}, {var})"
        return Emitted(None, expr, rank)
    joined = (" * " if kind == "Multiply" else " + ").join(vars_)
    return Emitted(None, f"({joined}) / {len(vars_)}" if kind == "Average" else joined, rank)


@emits("Concatenate")
def _concatenate(layer, weights, inputs, context):
    rank = inputs[0].rank
    axis = torch_axis(layer.config.get("axis", -1), rank)
    return Emitted(None, f"torch.cat([{', '.join(t.var for t in inputs)}], dim={axis})", rank)


def _pool_options(layer, dims):
    config = layer.config
    if config.get("data_format", "channels_last") != "channels_last":
        raise unsupported(layer, "data_format channels_first")
    kernel = _pair(config.get("pool_size", 2), dims)
    strides = config.get("strides") or kernel
    return kernel, _pair(strides, dims), config.get("padding", "valid")


@emits("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
def _pool(layer, weights, inputs, context):
    (x,) = inputs
    dims = 1 if layer.class_name.endswith("1D") else 2
    kernel, strides, padding = _pool_options(layer, dims)
    kind = "max" if layer.class_name.startswith("Max") else "avg"
    if padding == "same":
        return Emitted(None, f"{kind}_pool_same({x.var}, {kernel}, {strides})", x.rank)
    return Emitted(None, f"F.{kind}_pool{dims}d({x.var}, {kernel}, {strides})", x.rank)


@emits("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D")
def _global_pool(layer, weights, inputs, context):
    (x,) = inputs
    keep = bool(layer.config.get("keepdims", False))
    axes = tuple(range(2, x.rank))
    reduce = "mean" if "Average" in layer.class_name else "amax"
    return Emitted(None, f"{x.var}.{reduce}(dim={axes}, keepdim={keep})", x.rank if keep else 2)


@emits("ZeroPadding1D", "ZeroPadding2D")
def _zero_padding(layer, weights, inputs, context):
    (x,) = inputs
    padding = layer.config.get("padding", 1)
    dims = x.rank - 2
    if isinstance(padding, int):
        pads = [(padding, padding)] * dims
    else:
        pads = [tuple(p) if isinstance(p, list | tuple) else (p, p) for p in (padding if dims > 1 else [padding])]
        if dims == 1 and len(pads) == 1 and len(pads[0]) == 2 and not isinstance(padding[0], list | tuple):
            pads = [tuple(padding)]
    flat = [int(v) for pair in reversed(pads) for v in pair]  # F.pad: last axis first
    return Emitted(None, f"F.pad({x.var}, {flat})", x.rank)


@emits("Cropping2D")
def _cropping(layer, weights, inputs, context):
    (x,) = inputs
    (top, bottom), (left, right) = [tuple(p) if isinstance(p, list | tuple) else (p, p) for p in
                                    (layer.config["cropping"] if isinstance(layer.config["cropping"], list) else [layer.config["cropping"]] * 2)]
    return Emitted(None, f"{x.var}[:, :, {top}:{x.var}.shape[2] - {bottom}, {left}:{x.var}.shape[3] - {right}]", x.rank)


@emits("UpSampling2D")
def _upsampling(layer, weights, inputs, context):
    (x,) = inputs
    if layer.config.get("interpolation", "nearest") != "nearest":
        raise unsupported(layer, f"interpolation '{layer.config.get('interpolation')}'")
    size = _pair(layer.config.get("size", 2), 2)
    return Emitted(None, f"F.interpolate({x.var}, scale_factor={tuple(float(s) for s in size)}, mode='nearest')", x.rank)


@emits("Flatten")
def _flatten(layer, weights, inputs, context):
    (x,) = inputs
    return Emitted(None, f"torch.flatten(channels_last({x.var}), 1)", 2)


@emits("Reshape")
def _reshape(layer, weights, inputs, context):
    (x,) = inputs
    target = tuple(int(d) for d in layer.config["target_shape"])
    return Emitted(None, f"channels_first(channels_last({x.var}).reshape({x.var}.shape[0], *{target}))", 1 + len(target))


@emits("Permute")
def _permute(layer, weights, inputs, context):
    (x,) = inputs
    dims = (0,) + tuple(int(d) for d in layer.config["dims"])
    return Emitted(None, f"channels_first(channels_last({x.var}).permute{dims})", x.rank)


@emits("Rescaling")
def _rescaling(layer, weights, inputs, context):
    (x,) = inputs
    scale, offset = layer.config.get("scale", 1.0), layer.config.get("offset", 0.0)
    if not isinstance(scale, int | float) or not isinstance(offset, int | float):
        raise unsupported(layer, "a scale or offset per channel")
    # Keras multiplies by its scale and offset rounded to float32, in a float64 model too: the same numbers
    # here make the float64 model Keras's function (1/255 rounded is 6e-8 away, which the proof would see)
    return Emitted(None, f"{x.var} * {_number(np.float32(scale))} + {_number(np.float32(offset))}", x.rank)


@emits("Normalization")
def _normalization(layer, weights, inputs, context):
    config, (x,) = layer.config, inputs
    if config.get("invert"):
        raise unsupported(layer, "invert=True")
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis is not None and (not isinstance(axis, int) or axis % x.rank != x.rank - 1):
        raise unsupported(layer, f"axis {axis} (statistics per channel or one for all only)")
    mean, variance = config.get("mean"), config.get("variance")
    if mean is None:
        mean, variance = weights["mean"], weights["variance"]
    mean, variance = np.asarray(mean, dtype=np.float64).reshape(-1), np.asarray(variance, dtype=np.float64).reshape(-1)
    shape = (1, -1) + (1,) * (x.rank - 2)
    # Keras: (x − mean) / max(√variance, 1e-7); the statistics are constants of the model, kept as buffers
    module = f"KerasNormalization({mean.tolist()!r}, {variance.tolist()!r}, {shape})"
    return Emitted(module, f"self.{context.attr}({x.var})", x.rank, in_source=tuple(weights))


@emits("LayerScale", ignores=("init_values", "projection_dim"))  # how gamma started; its width: both in the weight
def _layer_scale(layer, weights, inputs, context):
    (x,) = inputs
    (name, gamma), = weights.items()
    shape = (1, -1) + (1,) * (x.rank - 2)
    return Emitted(f"LayerScale({gamma.shape[0]}, {shape})", f"self.{context.attr}({x.var})", x.rank, {name: WeightRule("gamma")})


# Ops of the config (Keras 3 `keras.ops` nodes by class, Keras 2 TFOpLambda by function) written as operators.
_OPERATORS = {"Add": "+", "Subtract": "-", "Multiply": "*", "Divide": "/", "TrueDivide": "/",
              "add": "+", "subtract": "-", "multiply": "*", "mul": "*", "truediv": "/", "sub": "-"}


def emit_op(layer: KerasLayer, inputs: dict[str, Tensor], context: Context) -> Emitted:
    """An op node of the config (`KerasLayer.operands`: tensors by layer name, numbers) as an expression."""
    kind = layer.class_name if layer.class_name != "TFOpLambda" else str(layer.config.get("function", "")).rsplit(".", 1)[-1]
    operator = _OPERATORS.get(kind)
    if operator is None or len(layer.operands) != 2 or "?" in layer.operands:
        raise unsupported(layer, f"the op {kind} with operands {list(layer.operands)}")
    # In a legacy .h5, Keras 3 cannot rebuild `x * (1 / 6)` as written; the TensorFlow side loads it as the
    # Rescaling it equals (`tf_side.loading._SCALAR_OPS`), whose number TensorFlow rounds to float32, in a
    # float64 model too. The same number here keeps the float64 native model Keras's function there (the
    # exact 1/6 is 3e-8 of a value away, which the float64 proof sees: MobileNetV3Small.h5, 8.3e-8).
    rounded = context.legacy_h5 and layer.class_name in ("Add", "Subtract", "Multiply")
    terms = [inputs[op].var if isinstance(op, str) else _number(np.float32(op) if rounded else op) for op in layer.operands]
    rank = max(inputs[op].rank for op in layer.operands if isinstance(op, str))
    return Emitted(None, f"{terms[0]} {operator} {terms[1]}", rank)
