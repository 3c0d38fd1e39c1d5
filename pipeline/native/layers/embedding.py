"""`Embedding`: token ids (the model's float input, whole numbers) looked up in `nn.Embedding`; the vectors
come out channels-first, (N, output_dim, steps), as every rank-3 tensor inside the generated model. With
`mask_zero`, id 0 is padding: the Keras mask `ids != 0` goes on to the layers after it (`Tensor.mask`)."""

from __future__ import annotations

from pipeline.native.layers.registry import Emitted, WeightRule, emits, kernel_of, unsupported


@emits("Embedding", ignores=("input_dim", "output_dim", "input_length"))  # both sizes restated by the weight; Keras 2's length by the input
def _embedding(layer, weights, inputs, context):
    if len(inputs) != 1:
        raise unsupported(layer, f"a call of {len(inputs)} inputs")
    config, (x,) = layer.config, inputs
    if x.rank != 2:
        raise unsupported(layer, f"token ids of rank {x.rank}")
    name, table = kernel_of(weights, "embeddings", "kernel")
    module = f"nn.Embedding({table.shape[0]}, {table.shape[1]})"
    return Emitted(module, f"channels_first(self.{context.attr}({x.var}.long()))", 3, {name: WeightRule("weight")},
                   mask=f"{x.var} != 0" if config.get("mask_zero") else None)
