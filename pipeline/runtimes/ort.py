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
    wanted = [name for name in extra_outputs if name not in existing]
    if wanted:
        # each output declared in its own element type: a mixed-precision model's inner tensors are float16
        inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
        types = {info.name: info.type.tensor_type.elem_type for info in inferred}
        for name in wanted:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, types.get(name) or onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
