"""Load an AOTInductor package (`model_aoti.pt2`): the model compiled ahead of time to a shared library,
run without Python tracing, onnx2torch or a compiler in the process."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pipeline.common.errors import BadInput, PipelineError
from pipeline.common.paths import ModelPaths
from pipeline.runtimes import direct_conv

# The models inside our package (`converters.aot_compile`): `model` takes any batch and is what a loader
# takes by default; `batch1`, where there, is compiled for one image alone.
MODEL, BATCH1 = "model", "batch1"


def models(path: Path) -> list[str]:
    """The names of the models in the package `path` (`[]` for a file that is not a zip archive)."""
    try:
        with zipfile.ZipFile(path) as package:
            names = package.namelist()
    except (zipfile.BadZipFile, OSError):
        return []
    return sorted({parts[parts.index("aotinductor") + 1] for parts in (n.split("/") for n in names)
                   if "aotinductor" in parts[:-2]})


def calls_direct_kernel(path: Path) -> bool:
    """Whether a model of the package `path` calls our convolution kernel (`runtimes.direct_conv`), whose
    library must then be loaded before the package."""
    try:
        with zipfile.ZipFile(path) as package:
            return any(name.endswith("wrapper.cpp") and direct_conv.ENTRY.encode() in package.read(name) for name in package.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load(path: Path, single_threaded: bool = False):
    """The compiled model in `path`: a callable taking an NHWC float32 tensor, returning probabilities — a
    one-image batch run by the package's `batch1` model where it has one, any other by `model`.
    `single_threaded`: without the runtime's synchronisation between runs (CUDA events), which a CUDA graph
    cannot capture; for one calling thread only.

    Raises:
        BadInput: the file is not an AOTInductor package this torch can load, or its batch-1 model calls our
            convolution kernel and the kernel cannot run here (no AVX-512), or is neither beside the package
            (`model_aoti_kernels.so`, as the torch stage writes it) nor built here (no compiler).
    """
    import torch
    from torch._inductor.package import load_package

    if calls_direct_kernel(path):
        beside = ModelPaths(Path(path).parent).aoti_kernels
        try:
            runs = direct_conv.load(beside)  # the library beside it, where it is
        except PipelineError as exc:
            raise BadInput(f"{path} calls our convolution kernel, which is not beside it ({beside.name}) "
                           f"and does not build here ({exc}); rerun `make torch`") from exc
        if not runs:
            raise BadInput(f"{path} calls our AVX-512 convolution kernel and this processor has no AVX-512; rerun `make torch` here")
    try:
        package = torch._inductor.aoti_load_package(str(path), run_single_threaded=single_threaded)  # noqa: SLF001 — the documented entry point lives there
        run, (inputs, outputs) = package.loader.boxed_run, package.loader.get_call_spec()
        single = (load_package(str(path), BATCH1, run_single_threaded=single_threaded).loader.boxed_run
                  if BATCH1 in models(path) else None)
    except (RuntimeError, ValueError, OSError, KeyError, AttributeError) as exc:
        raise BadInput(f"{path} is not a loadable AOTInductor package ({' '.join(str(exc).split())[:160]}); rerun `make torch`") from exc
    if any(torch.utils._pytree.treespec_loads(spec).num_leaves != 1 for spec in (inputs, outputs)):  # noqa: SLF001
        return package  # several inputs or outputs (or not one of ours): its own __call__ takes and gives them in their structure
    # The package's own __call__ parses its input and output specs from JSON on every call (~20 µs, against
    # ONNX Runtime's ~0.3 ms for a whole batch-1 inference here); ours is one tensor in, one out, so the
    # compiled runner is called directly.
    if single is None:
        return lambda images: run([images])[0]
    return lambda images: (single if len(images) == 1 else run)([images])[0]
