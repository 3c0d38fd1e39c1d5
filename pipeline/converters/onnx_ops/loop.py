"""ONNX `Loop` — what tf2onnx makes of a Keras recurrent layer it cannot match to ONNX LSTM/GRU/RNN (a
`SimpleRNN`, a GRU with `reset_after=False`, a masked GRU, Keras 3's `hard_sigmoid` LSTM): TensorFlow's
`while` loop, its body a graph of its own.

The body is converted by onnx2torch like any graph (the outer values it reads become inputs of its
own), and the loop runs it a number of times found when converting: tf2onnx's loops stop on a
condition over counters that start from constants and step by constants (`i < steps`), so the count
is worked out here, from those constants, by running the counters' arithmetic alone (`_trips`).
The loop is then a fixed number of calls, which `torch.export` unrolls. A loop whose count depends on
the data (a `while` on values the model computes) is refused, naming the op.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from pipeline.converters.fx_passes import static_pads, static_slices
from pipeline.converters.onnx_ops import _constants as constants
from pipeline.converters.onnx_ops import add_converter

BODY_OPSET = 15
MAX_TRIPS = 100_000  # a counter that never meets its bound is a loop on data, not a sequence

# The arithmetic of loop counters, in numpy: enough to run `i = i + 1; cond = i < n` on constants. (Min and
# Max take any number of operands in ONNX: folded, never handed a third operand as numpy's `out`.)
_SCALAR_OPS = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Less": np.less, "Greater": np.greater,
    "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal, "Equal": np.equal,
    "And": np.logical_and, "Or": np.logical_or, "Not": np.logical_not,
    "Min": lambda *values: functools.reduce(np.minimum, values), "Max": lambda *values: functools.reduce(np.maximum, values),
    "Identity": lambda x: x,
}


class OnnxLoop(nn.Module, OnnxToTorchModule):
    """An ONNX Loop run `trips` times: the body's carried values passed on, its scan outputs stacked."""

    def __init__(self, body: nn.Module, counters: list[dict[int, np.ndarray]], carried: int, scans: int):
        super().__init__()
        self.body, self.trips, self.carried, self.scans = body, len(counters), carried, scans
        self.counters = counters

    def forward(self, *values: torch.Tensor):
        state, outer = list(values[:self.carried]), values[self.carried:]
        scans: list[list[torch.Tensor]] = [[] for _ in range(self.scans)]
        condition = torch.tensor(True)
        for trip in range(self.trips):
            # the counters as constants, not as the tensors the last trip computed: a constant step index
            # keeps `torch.export` from tracing it as a value of the data (an unbacked size in every step)
            for k, value in self.counters[trip].items():
                state[k] = torch.tensor(value)
            outputs = self.body(torch.tensor(trip, dtype=torch.int64), condition, *state, *outer)
            outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
            state = list(outputs[1:1 + self.carried])
            for k in range(self.scans):
                scans[k].append(outputs[1 + self.carried + k])
        stacked = [torch.stack(values) for values in scans]
        results = (*state, *stacked)
        return results if len(results) > 1 else results[0]

    def extra_repr(self) -> str:
        return f"trips={self.trips}, carried={self.carried}, scans={self.scans}"


def _constant_value(name: str, graph: OnnxGraph) -> np.ndarray | None:
    """The value of `name` in the outer graph where constants alone give it (an initializer, a Constant,
    or counter arithmetic on them); None where it depends on the data."""
    if not name:
        return None
    constant = constants.known(name, graph)
    if constant is not None:
        return constant.numpy()
    try:
        producer, _ = graph.value_as_node_output(name)
    except KeyError:
        return None
    if producer.operation_type == "Cast":
        value = _constant_value(producer.input_values[0], graph)
        return None if value is None else value.astype(helper.tensor_dtype_to_np_dtype(producer.attributes["to"]))
    if producer.operation_type in _SCALAR_OPS:
        operands = [_constant_value(value, graph) for value in producer.input_values]
        return None if any(v is None for v in operands) else np.asarray(_SCALAR_OPS[producer.operation_type](*operands))
    return None


def _run_counters(body: onnx.GraphProto, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`known` with every body value that the counter arithmetic computes from it."""
    values = dict(known)
    values.update({init.name: numpy_helper.to_array(init) for init in body.initializer})
    for node in body.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            continue
        if not node.input or not all(name in values for name in node.input):
            continue
        if node.op_type == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            values[node.output[0]] = values[node.input[0]].astype(helper.tensor_dtype_to_np_dtype(to))
        elif node.op_type in _SCALAR_OPS:
            values[node.output[0]] = np.asarray(_SCALAR_OPS[node.op_type](*(values[name] for name in node.input)))
    return values


def _trips(node: OnnxNode, body: onnx.GraphProto, graph: OnnxGraph) -> list[dict[int, np.ndarray]]:
    """The loop's trips, worked out from its constants alone: for each, the carried values known before
    it ({index among the carried: value} — the counters and the bounds passed through).

    Raises:
        NotImplementedError: the count depends on the data.
    """
    inputs = node.input_values
    limit = _constant_value(inputs[0], graph) if inputs[0] else None
    condition = _constant_value(inputs[1], graph) if len(inputs) > 1 and inputs[1] else np.array(True)
    if (inputs[0] and limit is None) or condition is None:
        raise NotImplementedError("Loop whose trip count or first condition is computed from the data")
    limit = min(int(limit), MAX_TRIPS + 1) if limit is not None else MAX_TRIPS + 1  # tf2onnx may write M = 2**63 − 1
    body_inputs = [value.name for value in body.input]
    if len(body_inputs) != len(inputs) or len(body.output) < len(inputs) - 1:
        raise NotImplementedError(f"Loop whose body takes {len(body_inputs)} inputs for {len(inputs)} given")
    carried = {body_inputs[2 + k]: _constant_value(name, graph) for k, name in enumerate(inputs[2:])}
    carried = {name: value for name, value in carried.items() if value is not None}
    outer = {name: value for name in _outer_reads(body) if (value := _constant_value(name, graph)) is not None}
    condition_out = body.output[0].name
    carried_outs = [value.name for value in body.output[1:1 + len(inputs) - 2]]
    trips: list[dict[int, np.ndarray]] = []
    while bool(condition) and len(trips) < limit:
        trips.append({body_inputs.index(name) - 2: value for name, value in carried.items() if value.size == 1})
        known = {**outer, body_inputs[0]: np.array(len(trips) - 1, np.int64), body_inputs[1]: np.array(True), **carried}
        values = _run_counters(body, known)
        if condition_out not in values:
            raise NotImplementedError("Loop whose condition depends on the data")
        condition = values[condition_out]
        carried = {body_inputs[2 + k]: values[out] for k, out in enumerate(carried_outs) if out in values}
    if len(trips) > MAX_TRIPS:
        raise NotImplementedError(f"Loop that does not end within {MAX_TRIPS} trips on its constants")
    return trips


def _outer_reads(body: onnx.GraphProto) -> list[str]:
    """The values `body` reads from the graph around it (neither its inputs, its constants nor its nodes' outputs)."""
    defined = {value.name for value in body.input} | {init.name for init in body.initializer}
    defined |= {out for node in body.node for out in node.output}
    reads = [name for node in body.node for name in node.input if name and name not in defined]
    reads += [value.name for value in body.output if value.name not in defined]
    return list(dict.fromkeys(reads))


def _body_model(body: onnx.GraphProto, graph: OnnxGraph, opsets) -> tuple[onnx.ModelProto, list[str]]:
    """The body as a model of its own: the outer values it reads become inputs after its own (outer
    constants are copied in), every output the output of a node of its own (an Identity: onnx2torch
    returns outputs by node). Returns it and the outer values it takes, in order."""
    body = onnx.GraphProto.FromString(body.SerializeToString())
    outer = []
    for name in _outer_reads(body):
        if name in graph.initializers:
            body.initializer.append(numpy_helper.from_array(graph.initializers[name].to_torch().numpy(), name))
        else:
            info = graph.value_info.get(name)
            body.input.append(info if info is not None else helper.make_empty_tensor_value_info(name))
            outer.append(name)
    renamed = []
    for k, value in enumerate(body.output):
        new = f"{value.name}/loop_output_{k}"
        body.node.append(helper.make_node("Identity", [value.name], [new], name=f"loop_output_{k}"))
        renamed.append(helper.make_value_info(new, value.type))
    del body.output[:]
    body.output.extend(renamed)
    model = helper.make_model(body, opset_imports=opsets)
    return model, outer


def _convert(node: OnnxNode, graph: OnnxGraph, version: int) -> OperationConverterResult:
    import onnx2torch

    body = next(attribute.g for attribute in node.proto.attribute if attribute.name == "body")
    trips = _trips(node, body, graph)
    if not trips:
        raise NotImplementedError("Loop that runs no trip")
    # The body is read under the opset tf2onnx writes by default, or the Loop's own version where later: the
    # outer model's opset does not reach a converter. Right for the opsets tf2onnx is asked for here (13–16);
    # a body of a later opset with an op changed since would be read by the older op's converter.
    opsets = [helper.make_opsetid("", max(BODY_OPSET, version))]
    model, outer = _body_model(body, graph, opsets)
    carried = len(node.input_values) - 2
    scans = len(body.output) - 1 - carried
    try:
        body_module = onnx2torch.convert(model)
    except Exception as exc:  # noqa: BLE001 — whatever the body's converters raise, one kind the caller names
        raise NotImplementedError(f"Loop body: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}") from exc
    static_slices(body_module)  # as in the outer graph (`to_fx.convert`): constants read once, not traced
    static_pads(body_module)
    module = OnnxLoop(body_module, trips, carried, scans)  # trips: each one's known counters
    mapping = OnnxMapping(inputs=tuple(node.input_values[2:]) + tuple(outer), outputs=node.output_values)
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)


for _version in (11, 13, 16, 19, 21, 23):
    add_converter("Loop", _version)(lambda node, graph, version=_version: _convert(node, graph, version))
