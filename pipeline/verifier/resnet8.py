"""A hand-written PyTorch ResNet8 (MLPerf Tiny, CIFAR-10), the independent cross-check of the conversion.

Its weights are read from the .h5 with h5py — no Keras, so nothing from the file is deserialized as
code — and every tensor is mapped by name with its layout transform (`LAYOUT_TRANSFORMS`). Loading
fails on any tensor left unmatched or of the wrong shape. The traps (../shared/NOTES.md) are handled
where they occur: Keras kernel layout, BatchNorm epsilon 1e-3 read from the file, TensorFlow's
asymmetric 'same' padding for stride 2, shortcuts without BatchNorm, and the softmax inside the Dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.common.errors import BadInput, NotApplicable
from pipeline.keras_file.model import KerasModel


@dataclass(frozen=True)
class ResNet8Config:
    num_classes: int = 10
    widths: tuple[int, int, int] = (16, 32, 64)  # channels of the stem and of stacks 1, 2, 3
    bn_eps: float = 1e-3  # Keras's BatchNormalization default; PyTorch's own default 1e-5 is wrong here
    input_hw: int = 32


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad like TensorFlow's padding='same': the odd pixel goes after, not before.

    For a 3×3 stride-2 conv on an even size this is 0 before and 1 after; PyTorch's padding=1
    pads both sides and gives different numbers.
    """
    size = x.shape[-1]
    out = -(-size // stride)  # ceil
    total = max((out - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2
    return F.pad(x, (before, after, before, after))


class Conv(nn.Module):
    """Conv2d with TensorFlow 'same' padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(tf_same_pad(x, self.kernel, self.stride))


class ConvBN(nn.Module):
    """Conv → BatchNorm (→ ReLU)."""

    def __init__(self, c_in: int, c_out: int, stride: int, eps: float, relu: bool):
        super().__init__()
        self.conv = Conv(c_in, c_out, 3, stride)
        self.bn = nn.BatchNorm2d(c_out, eps=eps)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class ResidualStack(nn.Module):
    """relu(convbn(relu(convbn(x))) + shortcut(x)); the shortcut is a 1×1 conv without BN when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, eps: float):
        super().__init__()
        self.a = ConvBN(c_in, c_out, stride, eps, relu=True)
        self.b = ConvBN(c_out, c_out, 1, eps, relu=False)
        self.shortcut = Conv(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.b(self.a(x)))


class ResNet8(nn.Module):
    """NHWC float32 pixels 0..255 in (as the Keras model), class probabilities out."""

    def __init__(self, config: ResNet8Config = ResNet8Config()):
        super().__init__()
        w1, w2, w3 = config.widths
        self.config = config
        self.stem = ConvBN(3, w1, 1, config.bn_eps, relu=True)
        self.stack1 = ResidualStack(w1, w1, 1, config.bn_eps)
        self.stack2 = ResidualStack(w1, w2, 2, config.bn_eps)
        self.stack3 = ResidualStack(w2, w3, 2, config.bn_eps)
        self.fc = nn.Linear(w3, config.num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))  # (N, 64, 8, 8)
        x = F.avg_pool2d(x, x.shape[-1]).flatten(1)  # (N, 64)
        return self.fc(x)  # (N, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)  # Keras's Dense has the softmax inside it


# The Keras layers in the order the MLPerf Tiny script creates them (their order in model_config),
# and the module of ours each one fills. Conv layers and BN layers are matched separately.
CONV_ROLES = ("stem.conv", "stack1.a.conv", "stack1.b.conv", "stack2.a.conv", "stack2.b.conv", "stack2.shortcut",
              "stack3.a.conv", "stack3.b.conv", "stack3.shortcut")
BN_ROLES = ("stem.bn", "stack1.a.bn", "stack1.b.bn", "stack2.a.bn", "stack2.b.bn", "stack3.a.bn", "stack3.b.bn")
DENSE_ROLES = ("fc",)

# Keras weight name -> (our parameter name, transform to PyTorch layout). The one place layouts change.
LAYOUT_TRANSFORMS = {
    ("Conv2D", "kernel"): ("conv.weight", lambda w: w.transpose(3, 2, 0, 1)),  # (kh, kw, in, out) -> (out, in, kh, kw)
    ("Conv2D", "bias"): ("conv.bias", lambda w: w),
    ("BatchNormalization", "gamma"): ("weight", lambda w: w),
    ("BatchNormalization", "beta"): ("bias", lambda w: w),
    ("BatchNormalization", "moving_mean"): ("running_mean", lambda w: w),
    ("BatchNormalization", "moving_variance"): ("running_var", lambda w: w),
    ("Dense", "kernel"): ("weight", lambda w: w.T),  # (in, out) -> (out, in)
    ("Dense", "bias"): ("bias", lambda w: w),
}


@dataclass(frozen=True)
class MappedTensor:
    h5_path: str
    torch_key: str
    keras_shape: tuple[int, ...]
    torch_shape: tuple[int, ...]


def config_from_keras(keras: KerasModel) -> tuple[ResNet8Config, dict[str, str]]:
    """Our config and {our module name: Keras layer name}, or NotApplicable if this is not a ResNet8."""
    by_class: dict[str, list] = {}
    for layer in keras.layers:
        by_class.setdefault(layer.class_name, []).append(layer)
    convs, bns, denses = by_class.get("Conv2D", []), by_class.get("BatchNormalization", []), by_class.get("Dense", [])
    if (len(convs), len(bns), len(denses), len(by_class.get("Add", []))) != (9, 7, 1, 3):
        raise NotApplicable("the hand-written ResNet8 does not apply: the model is not an MLPerf Tiny ResNet8")
    dense = denses[0].config
    if dense.get("activation") != "softmax":
        raise NotApplicable("the hand-written ResNet8 expects a Dense with softmax inside it")
    epsilons = {layer.config.get("epsilon", 1e-3) for layer in bns}
    if len(epsilons) != 1:
        raise NotApplicable(f"BatchNorm layers use different epsilons {sorted(epsilons)}")
    widths = tuple(int(convs[i].config["filters"]) for i in (0, 3, 6))
    config = ResNet8Config(num_classes=int(dense["units"]), widths=widths, bn_eps=float(epsilons.pop()))
    names = {
        role: layer.name
        for roles, found in ((CONV_ROLES, convs), (BN_ROLES, bns), (DENSE_ROLES, denses))
        for role, layer in zip(roles, found, strict=True)
    }
    return config, names


def from_keras(keras: KerasModel) -> tuple[ResNet8, list[MappedTensor]]:
    """Build the hand-written ResNet8 and load the Keras file's weights into it, name by name.

    Returns:
        The model in eval mode, and the mapping table (one row per tensor loaded).

    Raises:
        NotApplicable: the .h5 is not a ResNet8.
        BadInput: a tensor of the file is unmatched, missing, or of the wrong shape.
    """
    path = keras.path
    config, names = config_from_keras(keras)
    classes = {layer.name: layer.class_name for layer in keras.layers}
    model = ResNet8(config)
    state = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    table: list[MappedTensor] = []
    weights = keras.weights
    unused = {f"{layer}/{name}" for layer, tensors in weights.items() for name in tensors}
    for role, layer_name in names.items():
        layer_class = classes[layer_name]
        for (klass, keras_weight), (suffix, transform) in LAYOUT_TRANSFORMS.items():
            if klass != layer_class:
                continue
            tensor = weights.get(layer_name, {}).get(keras_weight)
            if tensor is None:
                raise BadInput(f"{path}: layer {layer_name} has no '{keras_weight}' tensor")
            h5_key, torch_key = f"{layer_name}/{keras_weight}", f"{role}.{suffix}"
            value = torch.from_numpy(np.ascontiguousarray(transform(tensor))).float()
            if torch_key not in state or state[torch_key].shape != value.shape:
                expected = tuple(state[torch_key].shape) if torch_key in state else "no such tensor"
                raise BadInput(f"{path}: {h5_key} {tuple(tensor.shape)} -> {torch_key} has shape {tuple(value.shape)}, expected {expected}")
            loaded[torch_key] = value
            unused.discard(h5_key)
            table.append(MappedTensor(h5_key, torch_key, tuple(tensor.shape), tuple(value.shape)))
    missing = [k for k in state if k not in loaded and not k.endswith("num_batches_tracked")]
    if unused or missing:
        raise BadInput(f"{path}: unmatched tensors — in the file but not mapped: {sorted(unused)}; in the model but not loaded: {missing}")
    model.load_state_dict(loaded, strict=False)
    return model.eval(), table


def layer_modules(keras: KerasModel) -> dict[str, str]:
    """{Keras layer name: our submodule whose output equals that layer's output}; "" is the whole model.

    Layers without a submodule of their own here (Add, pooling, Flatten) are absent: the hand-written
    model joins the layer-by-layer comparison only where it has the same tensor.
    """
    _, names = config_from_keras(keras)
    graph = keras.layers

    def consumer(name: str, class_name: str) -> str | None:
        found = [layer.name for layer in graph if name in layer.inbound and layer.class_name == class_name]
        return found[0] if len(found) == 1 else None

    modules = {layer: role for role, layer in names.items() if role != "fc"}
    for owner in ("stem", "stack1.a", "stack2.a", "stack3.a"):  # ConvBN modules with the ReLU inside
        activation = consumer(names[f"{owner}.bn"], "Activation")
        if activation:
            modules[activation] = owner
    for stack in ("stack1", "stack2", "stack3"):  # relu(shortcut + b): the stack's own output
        add = consumer(names[f"{stack}.b.bn"], "Add")
        activation = consumer(add, "Activation") if add else None
        if activation:
            modules[activation] = stack
    modules[names["fc"]] = ""  # Dense with softmax inside = the model's output
    return modules
