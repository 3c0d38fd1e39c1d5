"""Keras semantics in plain PyTorch: the few pieces a generated `model.py` needs beyond `torch.nn`.

This file is copied verbatim to the top of every generated `native/model.py` (`generate.write`), so a
generated model needs torch and safetensors only. It is also imported here, so it is tested and linted
as code. Tensors are channels-first inside the generated model: (N, C, H, W) and (N, C, W).
"""

import math

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
    A `frozen` one (Keras's trainable=False, a frozen pretrained base) stays in inference mode even in
    training, as Keras runs it: its statistics do not move.
    """

    def __init__(self, channels: int, eps: float, momentum: float, scale: bool = True, center: bool = True, frozen: bool = False):
        super().__init__()
        self.eps, self.momentum, self.frozen = eps, momentum, frozen
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels)) if center else None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training and not self.frozen:
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
    return getattr(F, f"max_pool{len(kernel)}d")(x, kernel, stride)


def avg_pool_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Keras AveragePooling with padding='same': the mean over the window's pixels inside the image
    (TensorFlow does not count the padding), with TensorFlow's asymmetric pads."""
    ones = (1,) * len(kernel)
    pool = getattr(F, f"avg_pool{len(kernel)}d")
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


class KerasPReLU(nn.Module):
    """Keras PReLU: x where x ≥ 0, alpha · x below, alpha learned per element of `shape` (channels-first, size 1
    along the axes Keras shares it over; torch's nn.PReLU learns one per channel only)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) - self.alpha * F.relu(-x)


def time_distributed(x: torch.Tensor, step) -> torch.Tensor:
    """Keras TimeDistributed on a channels-first tensor (N, C, T, …): `step` applied to every time step at once, as
    (N·T, C, …), and the steps put back on axis 2 — (N, C', T, …), or (N, F, T) where a step gives (N·T, F)."""
    n, t = x.shape[0], x.shape[2]
    y = step(x.movedim(2, 1).reshape(n * t, x.shape[1], *x.shape[3:]))
    return y.reshape(n, t, *y.shape[1:]).movedim(1, 2)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) → (N, *spatial, C): the layout Keras reshapes, flattens and returns in."""
    return x.movedim(1, -1) if x.dim() > 2 else x


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(N, *spatial, C) → (N, C, *spatial): the layout the generated model computes in."""
    return x.movedim(-1, 1) if x.dim() > 2 else x


def keras_activation(name: str, keras2: bool = False):
    """The function a Keras recurrent layer names in `activation` / `recurrent_activation`."""
    if name == "hard_sigmoid":
        return lambda x: hard_sigmoid(x, keras2)
    return {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": F.relu, "linear": lambda x: x}[name]


class KerasRNN(nn.Module):
    """Keras's LSTM, GRU or SimpleRNN (`cell`) on a channels-first sequence (N, features, steps), its weights held
    in torch's own layer `self.rnn` (`nn.LSTM`, `nn.GRU`, `nn.RNN`, both directions for Keras's Bidirectional).

    Torch's gate order is LSTM i, f, g, o (Keras's i, f, c, o) and GRU r, z, n (Keras's z, r, h, reordered in
    the weights: weights_map.json's `gates`). Where Keras has one bias, torch's second (`bias_hh_l0`) is zero
    and frozen: Keras's bias is their sum, should a training loop unfreeze it.

    Torch's fused kernel runs where it computes what Keras does. The same weights are stepped through here
    (`scan`) where it does not: a Keras mask ((N, steps), True where a step counts; a step masked out keeps the
    state and outputs the last output, or zeros with `zero_output_for_mask`), activations other than tanh and
    sigmoid (Keras 2's hard_sigmoid), a GRU resetting before its recurrent product (`reset_after=False`).

    Output: the last step's (N, units), or every step's (N, units, steps) with `return_sequences`; two
    directions merged as Keras's `merge_mode` (concat, sum, mul, ave). With `return_state`, followed by the final
    states as Keras returns them — h, and c for an LSTM; the forward direction's, then the backward's —;
    `initial_state` (the same list, each (N, units)) starts the recurrence where Keras's call is given one (a seq2seq
    decoder started from its encoder's states)."""

    def __init__(self, cell: str, features: int, units: int, return_sequences: bool, *, bias: bool = True,
                 go_backwards: bool = False, merge_mode: str | None = None, reset_after: bool = True,
                 activation: str = "tanh", recurrent_activation: str = "sigmoid", keras2: bool = False,
                 zero_output_for_mask: bool = False, return_state: bool = False):
        super().__init__()
        layer = {"LSTM": nn.LSTM, "GRU": nn.GRU, "SimpleRNN": nn.RNN}[cell]
        options = {"nonlinearity": activation if activation in ("tanh", "relu") else "tanh"} if cell == "SimpleRNN" else {}
        self.rnn = layer(features, units, batch_first=True, bias=bias, bidirectional=merge_mode is not None, **options)
        self.cell, self.units, self.return_sequences = cell, units, return_sequences
        self.go_backwards, self.merge_mode, self.reset_after = go_backwards, merge_mode, reset_after
        self.zero_output_for_mask, self.return_state = zero_output_for_mask, return_state
        self.act, self.gate_act = keras_activation(activation, keras2), keras_activation(recurrent_activation, keras2)
        if cell == "SimpleRNN":
            self.fused = activation in ("tanh", "relu")
        else:  # torch's fused LSTM and GRU: tanh and sigmoid, a GRU resetting after its recurrent product
            self.fused = activation == "tanh" and recurrent_activation == "sigmoid" and reset_after
        if bias and (cell != "GRU" or not reset_after):  # one Keras bias: torch's second stays zero
            for name, parameter in self.rnn.named_parameters():
                if name.startswith("bias_hh"):
                    parameter.requires_grad_(False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, initial_state: list[torch.Tensor] | None = None):
        x = channels_last(x)
        if self.go_backwards:  # Keras reads the sequence last step first, and returns its steps in that order
            x, mask = x.flip(1), (None if mask is None else mask.flip(1))
        directions = 2 if self.merge_mode is not None else 1
        per = 2 if self.cell == "LSTM" else 1  # states a direction carries: h, c
        if self.fused and mask is None:
            hx = None
            if initial_state is not None:  # torch takes each state as (directions, N, units), forward first
                stacked = [torch.stack(initial_state[k::per]) for k in range(per)]
                hx = tuple(stacked) if self.cell == "LSTM" else stacked[0]
            out, final = self.rnn(x, hx)
            steps = list(out.split(self.units, dim=-1))
            lasts = [steps[0][:, -1]] if directions == 1 else [steps[0][:, -1], steps[1][:, 0]]  # the backward pass ends at step 0
            finals = final if self.cell == "LSTM" else (final,)
            states = [finals[k][d] for d in range(directions) for k in range(per)]
        else:
            starts = [None if initial_state is None else initial_state[d * per:(d + 1) * per] for d in range(directions)]
            runs = [self.scan(x, mask, reverse, start) for reverse, start in zip((False, True)[:directions], starts, strict=True)]
            steps, lasts, finals = zip(*runs, strict=True)
            states = [state for direction in finals for state in direction]
        y = self.merge(steps if self.return_sequences else lasts)
        y = channels_first(y) if self.return_sequences else y
        return (y, *states) if self.return_state else y

    def merge(self, outputs) -> torch.Tensor:
        if len(outputs) == 1:
            return outputs[0]
        forward, backward = outputs
        if self.merge_mode == "concat":
            return torch.cat([forward, backward], dim=-1)
        if self.merge_mode == "sum":
            return forward + backward
        if self.merge_mode == "mul":
            return forward * backward
        return (forward + backward) / 2  # "ave"

    def scan(self, x: torch.Tensor, mask: torch.Tensor | None, reverse: bool, initial_state: list[torch.Tensor] | None = None):
        """One direction stepped through: (every step's output (N, steps, units) in the input's order, the last, the
        final states as Keras returns them: [h], [h, c] for an LSTM), from `initial_state` where given, else zeros."""
        suffix = "_reverse" if reverse else ""
        w_ih, w_hh = getattr(self.rnn, f"weight_ih_l0{suffix}"), getattr(self.rnn, f"weight_hh_l0{suffix}")
        b_ih, b_hh = getattr(self.rnn, f"bias_ih_l0{suffix}", None), getattr(self.rnn, f"bias_hh_l0{suffix}", None)
        if reverse:
            x, mask = x.flip(1), (None if mask is None else mask.flip(1))
        projected = F.linear(x, w_ih, b_ih)  # every step's input term at once
        h = c = out = x.new_zeros(x.shape[0], self.units)
        if initial_state is not None:
            h, c = initial_state[0], (initial_state[1] if self.cell == "LSTM" else c)
        outputs = []
        for t in range(x.shape[1]):
            h_new, c_new = self.step(projected[:, t], h, c, w_hh, b_hh)
            if mask is None:
                h, c, out = h_new, c_new, h_new
            else:
                keep = mask[:, t, None]
                h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
                out = torch.where(keep, h_new, torch.zeros_like(h_new) if self.zero_output_for_mask else out)
            outputs.append(out)
        outputs = torch.stack(outputs, dim=1)
        return (outputs.flip(1) if reverse else outputs), out, ([h, c] if self.cell == "LSTM" else [h])

    def step(self, projected: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh: torch.Tensor,
             b_hh: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the cell: (h, c) from the step's input term and the previous (h, c) (c: LSTM only)."""
        if self.cell == "LSTM":
            i, f, g, o = (projected + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
            c = self.gate_act(f) * c + self.gate_act(i) * self.act(g)
            return self.gate_act(o) * self.act(c), c
        if self.cell == "SimpleRNN":
            return self.act(projected + F.linear(h, w_hh, b_hh)), c
        x_r, x_z, x_n = projected.chunk(3, dim=1)
        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=1)
        r, z = self.gate_act(x_r + h_r), self.gate_act(x_z + h_z)
        if self.reset_after:
            n = self.act(x_n + r * h_n)
        else:  # Keras's reset_after=False: the reset gate applied to the state before its product
            n = self.act(x_n + F.linear(r * h, w_hh[2 * self.units:], None if b_hh is None else b_hh[2 * self.units:]))
        return z * h + (1 - z) * n, c


class KerasMultiHeadAttention(nn.Module):
    """Keras MultiHeadAttention over the steps of channels-first sequences (N, features, steps): each head's query,
    key and value projections side by side in one `nn.Linear` each (head h is rows h·dim … (h+1)·dim), the
    query scaled by 1/√key_dim (or `scale`: Keras 3 rounds it to float32, even in a float64 model), a softmax over
    the key steps (dropped out at `dropout` in training, as Keras does), and the output projection of the heads
    concatenated. `forward(query, value, key=value)`, Keras's order."""

    def __init__(self, query_features: int, key_features: int, value_features: int, heads: int, key_dim: int, value_dim: int,
                 output_features: int, bias: bool = True, dropout: float = 0.0, scale: float | None = None):
        super().__init__()
        self.heads, self.key_dim, self.value_dim = heads, key_dim, value_dim
        self.scale = 1.0 / math.sqrt(float(key_dim)) if scale is None else scale
        self.query = nn.Linear(query_features, heads * key_dim, bias=bias)
        self.key = nn.Linear(key_features, heads * key_dim, bias=bias)
        self.value = nn.Linear(value_features, heads * value_dim, bias=bias)
        self.attention_output = nn.Linear(heads * value_dim, output_features, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, value: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        query, value = channels_last(query), channels_last(value)
        key = value if key is None else channels_last(key)

        def heads(x: torch.Tensor, dim: int) -> torch.Tensor:  # (N, steps, heads·dim) → (N, heads, steps, dim)
            return x.reshape(x.shape[0], x.shape[1], self.heads, dim).transpose(1, 2)

        q = heads(self.query(query), self.key_dim) * self.scale
        k, v = heads(self.key(key), self.key_dim), heads(self.value(value), self.value_dim)
        scores = self.dropout(torch.softmax(q @ k.transpose(-1, -2), dim=-1))
        out = (scores @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], self.heads * self.value_dim)
        return channels_first(self.attention_output(out))


class KerasAttention(nn.Module):
    """Keras Attention (dot-product scores, times the learned scalar `scale` with use_scale) or AdditiveAttention
    (`additive`: Σ scale · tanh(q + k) over the features, `scale` learned per feature with use_scale) over the
    steps of channels-first sequences, a softmax over the value steps (dropped out at `dropout` in training).
    `forward(query, value, key=value)`, Keras's order."""

    def __init__(self, additive: bool = False, scale_shape: tuple[int, ...] | None = None, dropout: float = 0.0):
        super().__init__()
        self.additive = additive
        self.scale = nn.Parameter(torch.ones(scale_shape)) if scale_shape is not None else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, value: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        query, value = channels_last(query), channels_last(value)
        key = value if key is None else channels_last(key)
        if self.additive:  # (N, Tq, 1, d) + (N, 1, Tv, d)
            terms = torch.tanh(query.unsqueeze(-2) + key.unsqueeze(-3))
            scores = (terms * self.scale if self.scale is not None else terms).sum(dim=-1)
        else:
            scores = query @ key.transpose(-1, -2)
            scores = scores * self.scale if self.scale is not None else scores
        return channels_first(self.dropout(torch.softmax(scores, dim=-1)) @ value)


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
