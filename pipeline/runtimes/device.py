"""Where torch runs: CPU by default, CUDA on request, with TF32 off unless asked for.

PyTorch runs fp32 convolutions on Ampere+ GPUs in TF32 by default; against the CPU result that flipped
3–4 of 10,000 ResNet8 predictions (max |Δprob| 8.5e-3, ../shared/NOTES.md). Off, the GPU agrees to 3e-6.
"""

from __future__ import annotations

from pipeline.common.errors import BadInput


def select(device: str = "cpu", allow_tf32: bool = False):
    """The torch.device to run on; sets the TF32 switches. BadInput if CUDA is asked for and absent."""
    import torch

    if device == "cpu":
        return torch.device("cpu")
    if device != "cuda":
        raise BadInput(f"unknown device {device!r}; use cpu or cuda")
    if not torch.cuda.is_available():
        raise BadInput("--device cuda was given but no CUDA device is available here; use --device cpu")
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return torch.device("cuda")
