"""Load an AOTInductor package (`model_aoti.pt2`): the model compiled ahead of time to a shared library,
run without Python tracing, onnx2torch or a compiler in the process."""

from __future__ import annotations

from pathlib import Path

from pipeline.common.errors import BadInput


def load(path: Path):
    """The compiled model in `path`: a callable taking an NHWC float32 tensor, returning probabilities.

    Raises:
        BadInput: the file is not an AOTInductor package this torch can load.
    """
    import torch

    try:
        return torch._inductor.aoti_load_package(str(path))  # noqa: SLF001 — the documented entry point lives there
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        raise BadInput(f"{path} is not a loadable AOTInductor package ({' '.join(str(exc).split())[:160]}); rerun `make torch`") from exc
