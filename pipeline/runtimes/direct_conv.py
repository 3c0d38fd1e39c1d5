"""`k2t::conv2d_direct`: a convolution computed directly in the channels-last layout by our own AVX-512
kernel (`kernels/direct_conv.cpp`), for the batch-1 model of `model_aoti.pt2`: at one image, oneDNN's
per-call set-up and inductor's im2col + GEMM template leave ResNet8 at about half ONNX Runtime's speed
(docs/speed.md).

`load()` builds the kernel with this machine's compiler for this machine's processor (once; the library is
kept in a folder named after the source, the torch version and the flags) and registers the operator;
a package whose batch-1 model calls it needs it loaded first (`runtimes.aoti.load` does).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from pipeline.common import cpuinfo
from pipeline.common.errors import PipelineError
from pipeline.common.paths import cache_dir

SOURCE = Path(__file__).with_name("kernels") / "direct_conv.cpp"
FLAGS = ("-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden")
LANES = 16  # fp32 lanes of an AVX-512 register: output channels are packed in multiples of it
# The kernel's C entry point (kernels/direct_conv.cpp): its name, which a package that calls it holds in its
# code, and its declaration, which AOTInductor writes into that code (`shim_options`).
ENTRY = "aoti_torch_cpu_conv2d_direct"
SHIM = (f"AOTITorchError {ENTRY}(AtenTensorHandle x, AtenTensorHandle packed, AtenTensorHandle bias, int64_t out_channels, "
        "const int64_t* stride, int64_t stride_len_, const int64_t* padding, int64_t padding_len_, int32_t relu, "
        "AtenTensorHandle* residual, AtenTensorHandle* ret0)")


def library_path() -> Path:
    """Where this source, built for this torch and this processor with `FLAGS`, is kept (it is built there when
    missing). The processor is part of the name: `-march=native` code run on another one would crash."""
    import torch

    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), torch.__version__.encode(), " ".join(FLAGS).encode(),
                                      cpuinfo.field("flags").encode()])).hexdigest()[:16]
    return cache_dir("kernels") / key / "direct_conv.so"


def built() -> Path:
    """This machine's build of the kernel (`library_path`), built first where it is missing.

    Raises:
        PipelineError: it could not be built (no compiler, say); the message says why.
    """
    path = library_path()
    if not path.is_file():
        _build(path)
    return path


def _build(path: Path) -> None:
    import torch
    from torch.utils import cpp_extension

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"the direct-convolution kernel has nowhere to be built ({exc}); set PIPELINE_CACHE to a writable folder") from exc
    partial = path.with_suffix(f".{os.getpid()}.tmp")  # two processes may build at once: each renames its own
    includes = [f"-I{folder}" for folder in cpp_extension.include_paths()]
    libraries = [f"-L{folder}" for folder in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu", "-ltorch"]
    command = ["g++", *FLAGS, "-fopenmp", *includes, str(SOURCE), "-o", str(partial), *libraries,
               f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise PipelineError(f"the direct-convolution kernel did not build: {' '.join(detail.split())[:300]}") from exc
    os.replace(partial, path)


@functools.cache
def load(library: Path | None = None) -> bool:
    """Say whether the kernel runs here — False on a processor without AVX-512 (nothing is built: the batch-1
    model keeps inductor's GEMMs) — and where it does, load it and register `torch.ops.k2t.conv2d_direct`:
    from `library` where that file exists (the `model_aoti_kernels.so` the torch stage wrote beside a package,
    built for the processor the package was compiled for: no compiler needed), else this machine's own
    build, made if missing. Where the operator is registered already (loaded by hand, or by an earlier
    call), nothing is loaded again: a second registration would abort.

    Raises:
        PipelineError: the kernel had to be built and could not be (no compiler, say), or its library does not
            load; the message says why.
    """
    import torch

    if not cpuinfo.has_avx512():
        return False
    if not hasattr(torch.ops.k2t, "conv2d_direct"):
        path = Path(library) if library is not None and Path(library).is_file() else built()
        try:
            # Global: a package's model resolves the C entry point (SHIM) against the libraries already loaded.
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            torch.ops.load_library(str(path))
        except OSError as exc:  # cut short, or built for another torch: missing symbols
            raise PipelineError(f"the kernel library {path} does not load ({' '.join(str(exc).split())[:200]})") from exc
    _register_fake()
    return bool(torch.ops.k2t.conv2d_direct_available())


@functools.cache
def _register_fake() -> None:
    """The operator's output shape for tracing and export (once a process)."""
    import torch

    @torch.library.register_fake("k2t::conv2d_direct")
    def _shape(x, packed, bias, out_channels, stride, padding, relu, residual=None):  # noqa: ARG001 — the operator's signature
        n, _, height, width = x.shape
        out_h, out_w = output_size((height, width), packed.shape[:2], stride[0], padding)
        return x.new_empty((n, out_h, out_w, out_channels)).permute(0, 3, 1, 2)


def output_size(size: tuple[int, int], kernel: tuple[int, int], stride: int, padding) -> tuple[int, int]:
    """(Ho, Wo) of the kernel's convolution of an (H, W) input: `padding` (rows, columns) or (top, bottom, left,
    right), as `conv2d_direct` takes it."""
    top, bottom, left, right = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    return (size[0] + top + bottom - kernel[0]) // stride + 1, (size[1] + left + right - kernel[1]) // stride + 1


def shim_options() -> dict:
    """Inductor settings that make a package call the kernel through its C entry point, not the proxy executor
    (`load()` first)."""
    import torch

    return {"aot_inductor.custom_ops_to_c_shims": {torch.ops.k2t.conv2d_direct.default: [SHIM]}}


def pack(weight, bias):
    """A convolution's weight (Cout, Cin, kh, kw) as (kh, kw, Cin, Cout rounded up to LANES), and its bias (or
    zeros) likewise, the padding channels zero: what `conv2d_direct` takes."""
    import torch

    out_channels = weight.shape[0]
    padded = -(-out_channels // LANES) * LANES
    packed = torch.zeros((*weight.shape[2:], weight.shape[1], padded), dtype=torch.float32)
    packed[..., :out_channels] = weight.permute(2, 3, 1, 0)
    full_bias = torch.zeros(padded, dtype=torch.float32)
    if bias is not None:
        full_bias[:out_channels] = bias
    return packed.contiguous(), full_bias


if __name__ == "__main__":  # python -m pipeline.runtimes.direct_conv: build it here and say whether it runs
    print(library_path(), "runs here" if load() else "built, but this processor has no AVX-512")
    sys.exit(0)
