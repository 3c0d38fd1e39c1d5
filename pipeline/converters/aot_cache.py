"""Compiled `model_aoti.pt2` packages kept for the next conversion of the same program: `make clean all`,
a second output folder or a test converting the model again takes the package back in well under a second
instead of compiling it again (docs/architecture.md, "Caches"; docs/speed.md for the seconds it saves).

The key is everything the package is made from: the optimized program (its printed graph, signature and
input ranges, and every weight's bytes), the input shape, the versions of torch and Python, the
processor's flags (the kernel and inductor's code are built for this processor), the thread counts
(inductor writes them into the code), the `TORCHINDUCTOR_*` settings of the environment, and the source
of every module the compile reaches (`common.import_graph`, as the Makefile reads a stage's
prerequisites — the inductor settings and our rewrites live there) and of our kernel. The torch stage
keeps only a complete package that passed its check, and drops a kept one that no longer does
(`stages.to_torch`).

The folder is `common.paths.cache_dir("aoti")`; delete it to compile everything again (nothing is removed
by itself: each change of the code the compile reaches adds entries). A folder that cannot be read or
written is no cache: the package is compiled, as without one.
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
from pipeline.common.checksums import sha256_of
from pipeline.common.import_graph import ImportGraph
from pipeline.common.paths import PACKAGE_ROOT, cache_dir
from pipeline.data.feeds import Sample, sample_json
from pipeline.runtimes import direct_conv

PACKAGE = "model_aoti.pt2"  # a kept package's name in its folder
INFO = "info.json"  # beside it: the package's SHA-256, the compile's seconds, what the stage said of its batch-1 model
COMPILER = "pipeline.converters.aot_compile"  # the module whose reach is part of the key
KERNELS = direct_conv.SOURCE.parent  # C++ sources the import graph does not see


def key(program, sample: Sample) -> str:
    """The cache key of the package compiled from the ExportedProgram `program` for inputs of `sample`."""
    import torch

    digest = hashlib.sha256()

    def part(label: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        digest.update(f"{label}:{len(data)}:".encode() + data)

    part("program", str(program))  # graph, shapes, signature, range constraints — no memory addresses
    for name, tensor in sorted({**program.state_dict, **program.constants}.items()):
        tensor = tensor.detach().contiguous().cpu()
        part(f"weight {name} {tensor.dtype} {tuple(tensor.shape)}", tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    part("shape", sample_json(sample))
    part("versions", f"torch {torch.__version__} python {platform.python_version()}")
    part("processor", cpuinfo.field("flags"))
    part("threads", f"{torch.get_num_threads()} of {os.cpu_count()}")
    inductor = sorted((k, v) for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR_") and k != "TORCHINDUCTOR_CACHE_DIR")
    part("environment", json.dumps(inductor))
    graph = ImportGraph(PACKAGE_ROOT)
    for module in sorted(graph.reach(COMPILER)):
        part(module, graph.files[module].read_bytes())
    for source in sorted(KERNELS.glob("*.cpp")):
        part(source.name, source.read_bytes())
    return digest.hexdigest()[:32]


def fetch(entry: str, path: Path) -> dict | None:
    """Copy the package kept under `entry` to `path` and return its `keep` info (`seconds`, `batch1`); None
    where none is kept or the folder cannot be read, and — the entry dropped — where the kept file is not the
    one kept (its SHA-256) or its info lacks a field."""
    folder = cache_dir("aoti") / entry
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        info = json.loads((folder / INFO).read_text())
        if sha256_of(folder / PACKAGE) != info.get("sha256") or not {"seconds", "batch1"} <= set(info):
            forget(entry)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / PACKAGE, partial)
        os.replace(partial, path)
    except (OSError, ValueError, AttributeError):
        partial.unlink(missing_ok=True)
        return None
    return info


def keep(entry: str, path: Path, info: dict) -> None:
    """Keep the package `path` under `entry`, with `info` (JSON) and its SHA-256; the folder appears whole or not
    at all, and not at all where the cache cannot be written (or another process kept the same entry first)."""
    root = cache_dir("aoti")
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    except OSError:
        return
    try:
        shutil.copyfile(path, scratch / PACKAGE)
        (scratch / INFO).write_text(json.dumps({**info, "sha256": sha256_of(scratch / PACKAGE)}))
        os.rename(scratch, root / entry)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)


def forget(entry: str) -> None:
    """Remove the package kept under `entry`, if any."""
    shutil.rmtree(cache_dir("aoti") / entry, ignore_errors=True)
