"""Keras semantics in plain PyTorch: the few pieces a generated `model.py` needs beyond `torch.nn`.

This file is copied verbatim to the top of every generated `native/model.py` (`generate.write`), so a
generated model needs torch and safetensors only. It is also imported here, so it is tested and linted
as code. Tensors are channels-first inside the generated model: (N, C, H, W) and (N, C, W).
"""

import torch
import torch.nn.functional as F
from torch import nn


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's padding='same' for one spatial axis: (before, after), the odd pixel after.

    PyTorch's `padding='same'` pads symmetrically and refuses strides > 1; TensorFlow puts the extra
    pixel of an even total at the end (a 3×3 stride-2 conv on 32 pixels pads 0 before, 1 after).
    """
    span = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...], value: float = 0.0) -> torch.Tensor:
    """`x` (N, C, *spatial) padded as TensorFlow's 'same' pads it (`same_pads` per axis), with `value`."""
    pads: list[int] = []
    for axis in reversed(range(len(kernel))):  # F.pad lists the last axis first
        pads.extend(same_pads(x.shape[2 + axis], kernel[axis], stride[axis], dilation[axis]))
    return F.pad(x, pads, value=value) if any(pads) else x


class SameConv(nn.Module):
    """A convolution with Keras's padding: 'valid', or TensorFlow's asymmetric 'same' (`pad_same`).
    `conv` is the torch convolution (nn.Conv1d or nn.Conv2d) holding the weights."""

    def __init__(self, conv: nn.Module, same: bool):
        super().__init__()
        self.conv, self.same = conv, same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = pad_same(x, self.conv.kernel_size, self.conv.stride, self.conv.dilation)
        return self.conv(x)


class SameConvTranspose(nn.Module):
    """Keras Conv2DTranspose: the full transposed convolution, cropped as TensorFlow crops 'same' (the
    output `stride` times the input, the odd pixel cut at the end)."""

    def __init__(self, conv: nn.ConvTranspose2d, same: bool):
        super().__init__()
        self.conv, self.same = conv, same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if not self.same:
            return y
        for axis in range(2):
            size, kernel, stride = x.shape[2 + axis], self.conv.kernel_size[axis], self.conv.stride[axis]
            start = max(kernel - stride, 0) // 2
            y = y.narrow(2 + axis, start, size * stride)
        return y


class SeparableConv(nn.Module):
    """Keras SeparableConv: a depthwise convolution (padded as Keras pads it), then a 1×1 pointwise one
    with the bias."""

    def __init__(self, depthwise: SameConv, pointwise: nn.Module):
        super().__init__()
        self.depthwise, self.pointwise = depthwise, pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class BatchNorm(nn.Module):
    """Keras BatchNormalization over channel axis 1, with Keras's training semantics.

    Keras updates `moving = momentum · moving + (1 − momentum) · batch` with the batch's biased
    variance; torch's BatchNorm uses `momentum` the other way round and the unbiased variance, so a
    torch BatchNorm trained from these weights drifts from Keras. Inference is the same formula.
    """

    def __init__(self, channels: int, eps: float, momentum: float, scale: bool = True, center: bool = True):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels)) if center else None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            axes = [0] + list(range(2, x.dim()))
            mean, var = x.mean(axes), x.var(axes, unbiased=False)
            with torch.no_grad():
                self.running_mean.mul_(self.momentum).add_((1 - self.momentum) * mean)
                self.running_var.mul_(self.momentum).add_((1 - self.momentum) * var)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        return y + self.bias.view(shape) if self.bias is not None else y


def max_pool_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Keras MaxPooling with padding='same': TensorFlow's asymmetric pads, never picked (−inf)."""
    ones = (1,) * len(kernel)
    x = pad_same(x, kernel, stride, ones, value=float("-inf"))
    return (F.max_pool1d if len(kernel) == 1 else F.max_pool2d)(x, kernel, stride)


def avg_pool_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Keras AveragePooling with padding='same': the mean over the window's pixels inside the image
    (TensorFlow does not count the padding), with TensorFlow's asymmetric pads."""
    ones = (1,) * len(kernel)
    pool = F.avg_pool1d if len(kernel) == 1 else F.avg_pool2d
    inside = pad_same(torch.ones_like(x[:1, :1]), kernel, stride, ones)
    return pool(pad_same(x, kernel, stride, ones), kernel, stride) / pool(inside, kernel, stride)


class KerasDropout(nn.Module):
    """Keras Dropout with a noise shape: one draw shared along its size-1 axes (EfficientNet's stochastic
    depth drops whole samples). `noise_shape` in channels-first order; None: the input's size there."""

    def __init__(self, p: float, noise_shape: list[int | None]):
        super().__init__()
        self.p, self.noise_shape = p, noise_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = [x.shape[i] if d is None else d for i, d in enumerate(self.noise_shape)]
        keep = torch.bernoulli(torch.full(shape, 1.0 - self.p, dtype=x.dtype, device=x.device))
        return x * keep / (1.0 - self.p)


def hard_sigmoid(x: torch.Tensor, keras2: bool = False) -> torch.Tensor:
    """Keras 3's hard_sigmoid relu6(x + 3) / 6; Keras 2's was clip(0.2 x + 0.5, 0, 1) — other numbers."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0) if keras2 else F.relu6(x + 3.0) / 6.0


# Keras's exact gelu multiplies by 1/√2 rounded to float32, even in float64: kept, so the float64 model
# is Keras's function to the last bit and not 3e-9 apart (which the float64 proof would see).
_FLOAT32_SQRT_HALF = 0.7071067690849304


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Keras's Activation('gelu'): the exact (erf) form, x · ½ · (1 + erf(x · 1/√2))."""
    return 0.5 * x * (1.0 + torch.erf(x * _FLOAT32_SQRT_HALF))


def keras_relu(x: torch.Tensor, max_value: float | None, negative_slope: float, threshold: float) -> torch.Tensor:
    """Keras's ReLU layer: x above `threshold`, `negative_slope · (x − threshold)` below, capped at `max_value`."""
    y = torch.where(x >= threshold, x, negative_slope * (x - threshold))
    return torch.clamp(y, max=max_value) if max_value is not None else y


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) → (N, *spatial, C): the layout Keras reshapes, flattens and returns in."""
    return x.movedim(1, -1) if x.dim() > 2 else x


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(N, *spatial, C) → (N, C, *spatial): the layout the generated model computes in."""
    return x.movedim(-1, 1) if x.dim() > 2 else x


class KerasLSTM(nn.Module):
    """Keras's LSTM on a channels-first sequence (N, features, steps): `nn.LSTM` (its fused kernel), whose gate
    order i, f, g, o is Keras's i, f, c, o. Keras has one bias; torch adds a second (`bias_hh_l0`), kept at
    zero and frozen: Keras's bias is `bias_ih_l0 + bias_hh_l0`, should a training loop unfreeze it. The last
    step's output, (N, units), or every step's, channels-first (N, units, steps)."""

    def __init__(self, features: int, units: int, return_sequences: bool, bias: bool = True):
        super().__init__()
        self.lstm = nn.LSTM(features, units, batch_first=True, bias=bias)
        self.return_sequences = return_sequences
        if bias:
            self.lstm.bias_hh_l0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(channels_last(x))
        return channels_first(out) if self.return_sequences else out[:, -1]


class KerasNormalization(nn.Module):
    """Keras Normalization: (x − mean) / max(√variance, 1e-7), the statistics constants of the model
    (buffers outside the state_dict: they are written in the source)."""

    def __init__(self, mean: list[float], variance: list[float], shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("variance", torch.tensor(variance).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the square root here, not at construction: in float64 (`.double()`) it is then float64's own
        return (x - self.mean) / self.variance.sqrt().clamp(min=1e-7)


class LayerScale(nn.Module):
    """ConvNeXt's LayerScale: x times a learned scale per channel."""

    def __init__(self, channels: int, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(self.shape)
