"""Compiled `model_aoti.pt2` packages kept for the next conversion of the same program: `make clean all`,
a second output folder or a test converting the model again takes the package back in well under a second
instead of compiling it again (13–21 s of the torch stage here; README, "Speed").

The key is everything the package is made from: the optimized program (its printed graph, signature and
input ranges, and every weight's bytes), the input shape, the versions of torch and Python, the
processor's flags (the kernel and inductor's code are built for this processor), the `TORCHINDUCTOR_*`
settings of the environment, and the source of every module the compile reaches (`common.import_graph`,
as the Makefile reads a stage's prerequisites — the inductor settings and our rewrites live there) and of
our kernel. Only a complete package is kept (its batch-1 model built, or none because the program has no
convolution to rewrite): a compile that failed or ran out of time is tried again next time.

The folder is `common.paths.cache_dir("aoti")`; delete it to compile everything again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

from pipeline.common import cpuinfo
from pipeline.common.import_graph import ImportGraph
from pipeline.common.paths import PACKAGE_ROOT, cache_dir

PACKAGE = "model_aoti.pt2"  # a kept package's name in its folder
INFO = "info.json"  # beside it: the compile's seconds and what the stage said of its batch-1 model
COMPILER = "pipeline.converters.aot_compile"  # the module whose reach is part of the key
KERNELS = PACKAGE_ROOT / "pipeline" / "runtimes" / "kernels"  # C++ sources the import graph does not see


def key(program, sample_shape: tuple[int, ...]) -> str:
    """The cache key of the package compiled from the ExportedProgram `program` for inputs of `sample_shape`."""
    import torch

    digest = hashlib.sha256()

    def part(label: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        digest.update(f"{label}:{len(data)}:".encode() + data)

    part("program", str(program))  # graph, shapes, signature, range constraints — no memory addresses
    for name, tensor in sorted({**program.state_dict, **program.constants}.items()):
        tensor = tensor.detach().contiguous().cpu()
        part(f"weight {name} {tensor.dtype} {tuple(tensor.shape)}", tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    part("shape", json.dumps(list(sample_shape)))
    part("versions", f"torch {torch.__version__} python {platform.python_version()}")
    part("processor", cpuinfo.field("flags"))
    inductor = sorted((k, v) for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR_") and k != "TORCHINDUCTOR_CACHE_DIR")
    part("environment", json.dumps(inductor))
    graph = ImportGraph(PACKAGE_ROOT)
    for module in sorted(graph.reach(COMPILER)):
        part(module, graph.files[module].read_bytes())
    for source in sorted(KERNELS.glob("*.cpp")):
        part(source.name, source.read_bytes())
    return digest.hexdigest()[:32]


def fetch(entry: str, path: Path) -> dict | None:
    """Copy the package kept under `entry` to `path` and return its `keep` info; None where none is kept."""
    folder = cache_dir("aoti") / entry
    try:
        info = json.loads((folder / INFO).read_text())
    except (OSError, ValueError):
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.copyfile(folder / PACKAGE, partial)
    os.replace(partial, path)
    return info


def keep(entry: str, path: Path, info: dict) -> None:
    """Keep the package `path` under `entry`, with `info` (JSON); the folder appears whole or not at all."""
    root = cache_dir("aoti")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".partial-") as scratch:
        shutil.copyfile(path, Path(scratch) / PACKAGE)
        (Path(scratch) / INFO).write_text(json.dumps(info))
        try:
            os.rename(scratch, root / entry)  # another process kept the same package first: theirs stays
        except OSError:
            return
        os.mkdir(scratch)  # for TemporaryDirectory's clean-up, which expects its folder back
