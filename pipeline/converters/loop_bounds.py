"""A `Loop`'s trip count and bounds read from tensor shapes, made constants before onnx2torch converts the graph.

tf2onnx writes a recurrent layer's loop as `t < T`, with T the number of steps read at run time from the
shape of the sequence (`Shape` → `Slice` → `Squeeze` → `Cast`) and passed in as the trip count, the first
condition or a carried value; in tf-keras's masked `Bidirectional` GRU the shape is of the previous
layer's output, which ONNX shape inference leaves unknown. The loop converter (`onnx_ops.loop`) works
the trips out from constants alone, and refused these.

For a model of fixed input shape (all but the batch), such a value is a constant of the model: a value
computed from shapes and constants only (`_from_shapes`) is run with ONNX Runtime at two batch sizes, and
where both agree it becomes an initializer. A value that depends on the data, or on the batch, is left as
it is (and the loop converter still refuses it, naming the op).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.converters import onnx_graph
from pipeline.converters.examples import example_tensors

# Ops through which a value computed from shapes stays one: shape arithmetic and comparisons.
_SHAPE_OPS = {"Shape", "Constant", "Cast", "Slice", "Squeeze", "Unsqueeze", "Gather", "Concat", "Identity", "Add", "Sub",
              "Mul", "Div", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal", "Min", "Max", "And", "Or", "Not",
              "ReduceProd", "Range", "Size"}
_PROBE_BATCHES = (2, 3)


def _leaves(name: str, producers: dict, known: set[str], seen: set[str] | None = None) -> set[str] | None:
    """What `name` is computed from: the op types of its leaves ("Shape", "Size", "Constant", "initializer"); None
    where it reads the data (an op beyond shape arithmetic, or a graph input). A `Shape` does not read its input's values."""
    seen = set() if seen is None else seen
    if name in known:
        return {"initializer"}
    if name in seen:
        return set()
    seen.add(name)
    node = producers.get(name)
    if node is None or node.op_type not in _SHAPE_OPS:
        return None
    if node.op_type in ("Shape", "Size", "Constant"):
        return {node.op_type}
    found: set[str] = set()
    for source in filter(None, node.input):
        leaves = _leaves(source, producers, known, seen)
        if leaves is None:
            return None
        found |= leaves
    return found


def _from_shapes(name: str, producers: dict, known: set[str]) -> bool:
    """Whether `name` is computed from tensor shapes (one at least) and constants alone; a value of constants
    alone the loop converter works out itself."""
    leaves = _leaves(name, producers, known)
    return leaves is not None and bool(leaves & {"Shape", "Size"})


def _loop_reads(proto) -> list[str]:
    """The outer values each Loop takes (trip count, first condition, carried values: a bound passed through) and
    that its body reads."""
    from pipeline.converters.onnx_ops.loop import _outer_reads

    reads = []
    for node in proto.graph.node:
        if node.op_type == "Loop":
            reads += [name for name in node.input if name]
            body = next(attribute.g for attribute in node.attribute if attribute.name == "body")
            reads += _outer_reads(body)
    return list(dict.fromkeys(reads))


def fold(proto, onnx_path: Path) -> int:
    """Make constant, in `proto` (the model at `onnx_path`, changed in place), every Loop bound computed from shapes
    that is the same at two batch sizes; return how many."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    producers = {out: node for node in proto.graph.node for out in node.output}
    known = {init.name for init in proto.graph.initializer}
    names = [name for name in _loop_reads(proto) if name in producers and producers[name].op_type != "Constant"
             and _from_shapes(name, producers, known)]
    if not names:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.extend(helper.ValueInfoProto(name=name) for name in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    sample = onnx_graph.input_sample(onnx_path)
    inputs = [value for value in proto.graph.input if value.name not in known]
    small, large = ({value.name: tensor.numpy().astype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
                     for value, tensor in zip(inputs, example_tensors(sample, batch), strict=True)} for batch in _PROBE_BATCHES)
    values_small, values_large = (dict(zip(names, session.run(names, feed), strict=True)) for feed in (small, large))
    folded = 0
    for name in names:
        if np.array_equal(values_small[name], values_large[name]):
            del_node = producers[name]
            constant = helper.make_node("Constant", [], [name], name=f"{del_node.name}__static",
                                        value=numpy_helper.from_array(np.asarray(values_small[name]), name))
            index = list(proto.graph.node).index(del_node)
            del_node.output[list(del_node.output).index(name)] = f"{name}__computed"  # the old value, now unread
            proto.graph.node.insert(index + 1, constant)
            folded += 1
    return folded
