"""ONNX `ReverseSequence`: what tf2onnx makes of the backward half of a masked `Bidirectional` layer (tf-keras
reverses each sequence within its own length, the padding left in place). onnx2torch has no converter for it.

Each batch row's first `sequence_lens[b]` steps are reversed, the rest kept: one `gather` along the time axis
with the indices `length − 1 − t` below the length and `t` beyond it — no shape depends on the data, so
`torch.export` traces it with the sequence lengths as a tensor input.
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from pipeline.converters.onnx_ops import add_converter


class ReverseSequence(nn.Module, OnnxToTorchModule):
    """ONNX ReverseSequence (opset 10): along `time_axis`, each row of `batch_axis` reversed within its length."""

    def __init__(self, batch_axis: int, time_axis: int):
        super().__init__()
        self.batch_axis, self.time_axis = batch_axis, time_axis

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(x.shape[self.time_axis], device=x.device)
        lengths = lengths.to(steps.dtype)
        # (batch, time) on the axes where x has them, 1 elsewhere
        shape = [1] * x.dim()
        shape[self.batch_axis], shape[self.time_axis] = -1, x.shape[self.time_axis]
        if self.batch_axis < self.time_axis:
            index = torch.where(steps[None, :] < lengths[:, None], lengths[:, None] - 1 - steps[None, :], steps[None, :])
        else:
            index = torch.where(steps[:, None] < lengths[None, :], lengths[None, :] - 1 - steps[:, None], steps[:, None])
        return torch.gather(x, self.time_axis, index.reshape(shape).expand_as(x))


@add_converter("ReverseSequence", 10)
def _convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    batch_axis, time_axis = int(node.attributes.get("batch_axis", 1)), int(node.attributes.get("time_axis", 0))
    return OperationConverterResult(torch_module=ReverseSequence(batch_axis, time_axis),
                                    onnx_mapping=OnnxMapping(inputs=node.input_values, outputs=node.output_values))
