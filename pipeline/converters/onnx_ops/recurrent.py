"""ONNX `LSTM`, `GRU` and `RNN` (what tf2onnx makes of Keras `LSTM` and `GRU` with their default
activations, stacked or in `Bidirectional` wrappers) as torch modules; onnx2torch has no converter for them.

Where the ONNX node means exactly what torch's fused layer computes, the module wraps `nn.LSTM`,
`nn.GRU` or `nn.RNN` with the gates reordered (ONNX LSTM `iofc` → torch `ifgo`, ONNX GRU `zrh` → torch
`rzn`): default activations, no clip, no peepholes, no `sequence_lens`, and for GRU
`linear_before_reset=1` (Keras `reset_after=True`, torch's only form). Everything else — Keras 2's
`hard_sigmoid` recurrent activation, `reset_after=False`, a mask's `sequence_lens`, peepholes, clip —
runs an explicit step loop that follows the ONNX equations term by term (unrolled by `torch.export`,
so it needs a sequence length known at export).

Both keep the ONNX node's weights as trainable parameters and its dtype (float64 for the proof).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from pipeline.converters.onnx_ops import _constants as constants
from pipeline.converters.onnx_ops import add_converter


@dataclass(frozen=True)
class Cell:
    """What differs between the three ops: gates per step, activations per direction (and their
    defaults), whether there is a cell state, and the fused torch layer with its gate order."""
    name: str
    gates: int
    default_activations: tuple[str, ...]
    has_cell_state: bool
    torch_layer: type[nn.RNNBase]
    torch_gate_order: tuple[int, ...]  # torch's gate k is ONNX's gate torch_gate_order[k]


LSTM = Cell("LSTM", 4, ("Sigmoid", "Tanh", "Tanh"), True, nn.LSTM, (0, 2, 3, 1))  # i o f c → i f g(c) o
GRU = Cell("GRU", 3, ("Sigmoid", "Tanh"), False, nn.GRU, (1, 0, 2))  # z r h → r z n(h)
RNN = Cell("RNN", 1, ("Tanh",), False, nn.RNN, (0,))

# ONNX's activation functions for recurrent ops, with the defaults of their alpha and beta (None: takes none)
ACTIVATIONS = {
    "relu": (torch.relu, None, None),
    "tanh": (torch.tanh, None, None),
    "sigmoid": (torch.sigmoid, None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a: F.leaky_relu(x, a), 0.01, None),
    "thresholdedrelu": (lambda x, a: torch.where(x > a, x, torch.zeros_like(x)), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * torch.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0), 0.2, 0.5),
    "elu": (lambda x, a: F.elu(x, a), 1.0, None),
    "softsign": (F.softsign, None, None),
    "softplus": (F.softplus, None, None),
}


class Activation(nn.Module):
    """One ONNX activation function with its alpha and beta bound."""

    def __init__(self, name: str, alpha: float | None, beta: float | None):
        super().__init__()
        self.name = name
        self.function = ACTIVATIONS[name.lower()][0]
        self.params = tuple(value for value in (alpha, beta) if value is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x, *self.params)

    def extra_repr(self) -> str:
        return f"{self.name}{self.params if self.params else ''}"


def activations_of(node: OnnxNode, cell: Cell, directions: int) -> list[list[Activation]]:
    """Each direction's activation functions: ONNX's `activations` list (the defaults where absent), alphas
    and betas consumed in order by the functions that take them."""
    names = [name.decode() if isinstance(name, bytes) else name for name in node.attributes.get("activations", [])]
    names = names or list(cell.default_activations) * directions
    if len(names) == len(cell.default_activations) and directions == 2:
        names = names * 2
    alphas, betas = list(node.attributes.get("activation_alpha", [])), list(node.attributes.get("activation_beta", []))
    built = []
    for name in names:
        if name.lower() not in ACTIVATIONS:
            raise NotImplementedError(f"{cell.name} activation {name} is not an ONNX activation")
        _, alpha, beta = ACTIVATIONS[name.lower()]
        alpha = alphas.pop(0) if alpha is not None and alphas else alpha
        beta = betas.pop(0) if beta is not None and betas else beta
        built.append(Activation(name, alpha, beta))
    per = len(cell.default_activations)
    if len(built) != per * directions:
        raise NotImplementedError(f"{cell.name} with {len(built)} activations for {directions} direction(s) of {per}")
    return [built[d * per:(d + 1) * per] for d in range(directions)]


class OnnxRecurrent(nn.Module, OnnxToTorchModule):
    """An ONNX LSTM, GRU or RNN node: X (and optionally sequence_lens, initial_h, initial_c) in, the
    node's outputs out — Y `(T, D, N, H)` and Y_h `(D, N, H)` (and Y_c), or their layout=1 forms."""

    def __init__(self, cell: Cell, weights: dict[str, torch.Tensor], hidden: int, direction: str, layout: int,
                 activations: list[list[Activation]], clip: float | None, linear_before_reset: bool, fused: bool,
                 outputs: int = 3):
        super().__init__()
        self.cell, self.hidden, self.direction, self.layout = cell, hidden, direction, layout
        self.outputs = outputs  # how many the node lists: onnx2torch hands a lone output on as it is returned
        self.clip, self.linear_before_reset = clip, linear_before_reset
        self.directions = 2 if direction == "bidirectional" else 1
        self.fused = None
        if fused:
            self.fused = _fused_layer(cell, weights, hidden, self.directions, activations[0][0].name.lower())
        else:
            self.W, self.R = nn.Parameter(weights["W"]), nn.Parameter(weights["R"])  # (D, G*H, I), (D, G*H, H)
            self.B = nn.Parameter(weights["B"])  # (D, 2*G*H): Wb then Rb
            self.P = nn.Parameter(weights["P"]) if "P" in weights else None  # (D, 3*H): i o f peepholes
            self.activations = nn.ModuleList(nn.ModuleList(per) for per in activations)

    def forward(self, x: torch.Tensor, sequence_lens: torch.Tensor | None = None, initial_h: torch.Tensor | None = None,
                initial_c: torch.Tensor | None = None):
        if self.layout == 1:  # (N, T, I) and (N, D, H) → the layout=0 forms
            x = x.transpose(0, 1)
            initial_h = initial_h.transpose(0, 1) if initial_h is not None else None
            initial_c = initial_c.transpose(0, 1) if initial_c is not None else None
        steps, batch = x.shape[0], x.shape[1]
        zeros = x.new_zeros(self.directions, batch, self.hidden)
        h0 = initial_h if initial_h is not None else zeros
        c0 = initial_c if initial_c is not None else zeros
        if self.fused is not None:  # never given sequence_lens (`_convert`)
            y, h_n, c_n = self._run_fused(x, h0, c0)
        else:
            y, h_n, c_n = self._run_steps(x, sequence_lens, h0, c0, steps)
        if self.layout == 1:
            y, h_n, c_n = y.permute(2, 0, 1, 3), h_n.transpose(0, 1), c_n.transpose(0, 1)
        results = ((y, h_n, c_n) if self.cell.has_cell_state else (y, h_n))[:self.outputs]
        return results if len(results) > 1 else results[0]

    def _run_fused(self, x, h0, c0):
        reverse = self.direction == "reverse"
        if reverse:
            x = x.flip(0)
        if self.cell.has_cell_state:
            y, (h_n, c_n) = self.fused(x, (h0, c0))
        else:
            y, h_n = self.fused(x, h0)
            c_n = h_n
        if reverse:
            y = y.flip(0)
        y = y.reshape(y.shape[0], y.shape[1], self.directions, self.hidden).transpose(1, 2)  # (T, D, N, H)
        return y, h_n, c_n

    def _run_steps(self, x, sequence_lens, h0, c0, steps: int):
        outputs, finals_h, finals_c = [], [], []
        for d in range(self.directions):
            reverse = self.direction == "reverse" or d == 1
            y, h, c = self._one_direction(x, sequence_lens, h0[d], c0[d], d, reverse, steps)
            outputs.append(y)
            finals_h.append(h)
            finals_c.append(c)
        return torch.stack(outputs, 1), torch.stack(finals_h), torch.stack(finals_c)

    def _one_direction(self, x, sequence_lens, h, c, d: int, reverse: bool, steps: int):
        gates, hidden = self.cell.gates, self.hidden
        w_bias, r_bias = self.B[d, :gates * hidden], self.B[d, gates * hidden:]
        x_part = x @ self.W[d].T + w_bias  # (T, N, G*H): the input's share of every gate, for all steps at once
        r = self.R[d]
        acts = self.activations[d]
        outputs = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            new_h, new_c = self._step(x_part[t], h, c, r, r_bias, acts, d)
            if sequence_lens is not None:  # steps past a sequence's length keep its state and output zeros
                running = (t < sequence_lens).unsqueeze(1)
                h, c = torch.where(running, new_h, h), torch.where(running, new_c, c)
                outputs[t] = torch.where(running, new_h, torch.zeros_like(new_h))
            else:
                h, c = new_h, new_c
                outputs[t] = new_h
        return torch.stack(outputs), h, c

    def _clip(self, x):
        return x if self.clip is None else torch.clamp(x, -self.clip, self.clip)

    def _step(self, x_gates, h, c, r, r_bias, acts, d: int):
        hidden = self.hidden
        if self.cell.name == LSTM.name:  # f, g, h = acts (by name: a deep copy of this module holds a copy of the Cell)
            pre = x_gates + h @ r.T + r_bias
            i, o, f, g = pre.split(hidden, dim=-1)
            if self.P is not None:
                p_i, p_o, p_f = self.P[d].split(hidden)
                i, f = i + p_i * c, f + p_f * c
            i, f, g = acts[0](self._clip(i)), acts[0](self._clip(f)), acts[1](self._clip(g))
            c = f * c + i * g
            if self.P is not None:
                o = o + p_o * c
            return acts[0](self._clip(o)) * acts[2](c), c
        if self.cell.name == GRU.name:  # f, g = acts
            x_z, x_r, x_h = x_gates.split(hidden, dim=-1)
            r_z, r_r, r_h = r.split(hidden, dim=0)
            b_z, b_r, b_h = r_bias.split(hidden)
            z = acts[0](self._clip(x_z + h @ r_z.T + b_z))
            reset = acts[0](self._clip(x_r + h @ r_r.T + b_r))
            if self.linear_before_reset:
                candidate = x_h + reset * (h @ r_h.T + b_h)
            else:
                candidate = x_h + (reset * h) @ r_h.T + b_h
            candidate = acts[1](self._clip(candidate))
            return (1 - z) * candidate + z * h, c
        return acts[0](self._clip(x_gates + h @ r.T + r_bias)), c  # RNN

    def extra_repr(self) -> str:
        form = "fused" if self.fused is not None else "step loop"
        return f"{self.cell.name}, hidden={self.hidden}, direction={self.direction}, layout={self.layout}, {form}"


def _fused_layer(cell: Cell, weights: dict[str, torch.Tensor], hidden: int, directions: int, nonlinearity: str) -> nn.RNNBase:
    """torch's fused layer holding the node's weights, its gates in torch's order (`nonlinearity`: an RNN's)."""
    w, r, b = weights["W"], weights["R"], weights["B"]
    extra = {"nonlinearity": nonlinearity} if cell is RNN else {}
    layer = cell.torch_layer(w.shape[2], hidden, bidirectional=directions == 2, **extra).to(w.dtype)
    gates = cell.gates

    def reorder(matrix: torch.Tensor) -> torch.Tensor:
        parts = matrix.split(hidden, dim=0)
        return torch.cat([parts[k] for k in cell.torch_gate_order], dim=0)

    with torch.no_grad():
        for d in range(directions):
            suffix = "_reverse" if d == 1 else ""
            getattr(layer, f"weight_ih_l0{suffix}").copy_(reorder(w[d]))
            getattr(layer, f"weight_hh_l0{suffix}").copy_(reorder(r[d]))
            getattr(layer, f"bias_ih_l0{suffix}").copy_(reorder(b[d, :gates * hidden]))
            getattr(layer, f"bias_hh_l0{suffix}").copy_(reorder(b[d, gates * hidden:]))
    return layer


def _constant(node: OnnxNode, graph: OnnxGraph, index: int, what: str) -> torch.Tensor | None:
    """Input `index` of `node` as a tensor, where it is an initializer; None where the input is absent."""
    names = node.input_values
    if index >= len(names) or not names[index]:
        return None
    if names[index] not in graph.initializers:
        raise NotImplementedError(f"{node.operation_type} with {what} computed in the graph (not a constant) is not supported")
    return graph.initializers[names[index]].to_torch()


# Ops that move or repeat values without changing them: zeros through them stay zeros
_VALUE_PRESERVING = {"Expand", "Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast", "Transpose", "Tile"}


def _zero_state(name: str, graph: OnnxGraph) -> bool:
    """Whether the value `name` is an initial state of zeros that tf2onnx computed — a zero constant
    expanded to the batch's shape read from the input at run time (which `torch.export` cannot trace
    through onnx2torch's Expand), one a direction, concatenated. Zeros are what an absent initial state
    means: it is left out."""
    constant = constants.known(name, graph)
    if constant is not None:
        return bool(torch.all(constant == 0))
    try:
        producer, _ = graph.value_as_node_output(name)
    except KeyError:
        return False
    if producer.operation_type == "ConstantOfShape":
        value = producer.attributes.get("value")
        return value is None or bool(torch.all(value.to_torch() == 0))
    if producer.operation_type == "Concat":
        return all(_zero_state(part, graph) for part in producer.input_values)
    return producer.operation_type in _VALUE_PRESERVING and _zero_state(producer.input_values[0], graph)


def _convert(cell: Cell, node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attributes = node.attributes
    direction = attributes.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    directions = 2 if direction == "bidirectional" else 1
    if attributes.get("input_forget", 0):
        raise NotImplementedError("LSTM with input_forget=1 is not supported")
    w = _constant(node, graph, 1, "W")
    r = _constant(node, graph, 2, "R")
    if w is None or r is None:
        raise NotImplementedError(f"{cell.name} without weights W and R")
    hidden = int(attributes.get("hidden_size", r.shape[-1]))
    b = _constant(node, graph, 3, "B")
    weights = {"W": w, "R": r, "B": b if b is not None else w.new_zeros(directions, 2 * cell.gates * hidden)}
    peepholes = _constant(node, graph, 7, "P") if cell is LSTM else None
    if peepholes is not None and bool(torch.any(peepholes != 0)):
        weights["P"] = peepholes
    activations = activations_of(node, cell, directions)
    clip = attributes.get("clip")
    linear_before_reset = bool(attributes.get("linear_before_reset", 0))
    names = [[act.name.lower() for act in per] for per in activations]
    has_lengths = len(node.input_values) > 4 and bool(node.input_values[4])
    fused = clip is None and "P" not in weights and not has_lengths
    if cell is RNN:  # torch's RNN: tanh or relu, the same in both directions
        fused = fused and names[0] in (["tanh"], ["relu"]) and all(per == names[0] for per in names)
    else:
        fused = fused and all(per == [name.lower() for name in cell.default_activations] for per in names)
    if cell is GRU:
        fused = fused and linear_before_reset
    module = OnnxRecurrent(cell, weights, hidden, direction, int(attributes.get("layout", 0)), activations, clip,
                           linear_before_reset, fused, len(node.output_values))
    inputs = tuple(node.input_values[i] if i < len(node.input_values) else "" for i in (0, 4, 5, 6))
    inputs = tuple("" if k >= 2 and name and _zero_state(name, graph) else name for k, name in enumerate(inputs))
    if not cell.has_cell_state:
        inputs = inputs[:3]
    while inputs and not inputs[-1]:
        inputs = inputs[:-1]
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))


for _cell in (LSTM, GRU, RNN):
    for _version in (7, 14):
        add_converter(_cell.name, _version)(lambda node, graph, cell=_cell: _convert(cell, node, graph))
