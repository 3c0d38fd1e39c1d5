"""ONNX Runtime sessions on the CPU, with any inner tensors added as outputs."""

from __future__ import annotations


def session(proto, extra_outputs: list[str] = ()):
    """An ONNX Runtime CPU session of `proto` that also returns the tensors named in `extra_outputs`.

    `proto` is not changed: the outputs are added to a copy.
    """
    import onnx
    import onnxruntime as ort

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    existing = {o.name for o in proto.graph.output}
    for name in extra_outputs:
        if name not in existing:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
