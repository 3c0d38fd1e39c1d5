"""What a converted model is traced, probed, exported and compiled with: zero tensors of its inputs' shapes."""

from __future__ import annotations

import torch

from pipeline.data.feeds import Sample, shapes_of


def example_tensors(sample: Sample, batch: int, device=None) -> tuple[torch.Tensor, ...]:
    """Zero float32 tensors of `batch` rows, one per input of `sample` (one input's shape, or a `feeds.Layout`)."""
    return tuple(torch.zeros((batch, *shape), dtype=torch.float32, device=device) for shape in shapes_of(sample))
