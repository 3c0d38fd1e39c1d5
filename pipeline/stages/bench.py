"""`make bench`: images/s of every way to run the model, in one run, same images, same threads.

Backends: Keras/TF `predict` (in its own process, TensorFlow pinned to the same thread count), ONNX
Runtime, onnx2torch's GraphModule as converted (eager), `model.pt2` (eager), `model_opt.pt2` (eager),
`model_opt.pt2` under `torch.compile` (inductor, freezing on) and `model_aoti.pt2` (AOTInductor). On a
CUDA GPU also: `model_opt.pt2` eager in channels-last, the compiled model replayed from a CUDA graph, the
model compiled with max_autotune (Triton convolution templates) replayed from a CUDA graph, and the
any-batch model compiled by AOTInductor for the GPU, called directly and from a CUDA graph; there the
images are copied to the GPU once and the models timed on them (the copy is timed apart). Each
throughput is the best of `repeats` passes over the images after a warm-up, the backends' passes
interleaved (`time_backends`); batch-1 latency (MLPerf Tiny's metric) is timed call by call, the
backends' calls interleaved in blocks, as p50 and p99 (`latencies`). Also measured in the same run: this machine's
sgemm GFLOP/s (torch.mm), the model's FLOPs per image from the ONNX graph (not typed in), so each
backend's effective GFLOP/s reads as a share of the machine's peak, and each backend's largest difference
from ONNX Runtime and argmax disagreements over the images (`agreement`), at the largest batch and one image
a call: a faster backend counts only if it computes the same thing.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.common import cpuinfo
from pipeline.common.atomic import write_text
from pipeline.common.errors import BadInput
from pipeline.common.paths import ModelPaths
from pipeline.data import checkset, cifar
from pipeline.data.feeds import Layout
from pipeline.keras_file.model import KerasModel

BATCH_SIZES = (1, 32, 256)
LATENCY_CALLS = 2_000  # single-image calls per backend for the p50/p99 (after WARMUP_IMAGES of warm-up)
# Images per pass at batch 1: one call per image, so the throughput is 1 / the mean call, which 2,000 calls
# time as well as 10,000, in a fifth of the time (eager torch on a GPU: ~1 ms a call, launch-bound).
BATCH1_IMAGES = 2_000
# Calls in a row per backend: a thread pool still spinning after one backend's last call (ONNX Runtime's
# do) slows only the first call of the next backend's block, which is not counted.
LATENCY_BLOCK = 100


@dataclass(frozen=True)
class BenchOptions:
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    images: int = 10_000
    repeats: int = 3
    threads: int = os.cpu_count() or 1
    device: str = "cpu"
    allow_tf32: bool = False
    with_keras: bool = True


@dataclass
class BenchResult:
    machine: dict
    model_flops_per_image: int
    results: list[dict] = field(default_factory=list)  # {backend, batch_size, images_per_s, effective_gflops}
    notes: dict = field(default_factory=dict)
    latency_us: dict = field(default_factory=dict)  # backend -> {"p50": µs, "p99": µs} of one image per call
    agreement: dict = field(default_factory=dict)  # backend -> {"max_abs", "argmax_flips"} against onnxruntime, largest batch
    agreement_batch1: dict = field(default_factory=dict)  # the same one image a call (a package's batch-1 model), BATCH1_IMAGES

    def images_per_s(self, backend: str, batch_size: int) -> float | None:
        return next((r["images_per_s"] for r in self.results if r["backend"] == backend and r["batch_size"] == batch_size), None)


def model_flops_per_image(onnx_path: Path) -> int:
    """2 × multiply-adds of every Conv, MatMul, Gemm and recurrent op (LSTM, GRU, RNN; not a Loop's body), from
    the ONNX graph's inferred shapes."""
    import onnx
    from onnx import shape_inference

    proto = onnx.load(str(onnx_path))
    for graph_input in proto.graph.input:  # every input at batch 1 (a model of several takes them together)
        dim = graph_input.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    proto = shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)}
    shapes.update({i.name: list(i.dims) for i in proto.graph.initializer})
    flops = 0
    for node in proto.graph.node:
        if node.op_type == "Conv":
            out, weight = shapes[node.output[0]], shapes[node.input[1]]  # (1, Cout, H, W), (Cout, Cin/g, kh, kw)
            flops += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("LSTM", "GRU", "RNN") and all(name in shapes for name in node.input[:3]):
            # X (T, 1, I) — (1, T, I) with layout=1; W (D, G·H, I), R (D, G·H, H): every gate's two products a step
            layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
            steps = shapes[node.input[0]][layout]
            directions, gates_hidden, features = shapes[node.input[1]]
            flops += 2 * steps * directions * gates_hidden * (features + shapes[node.input[2]][-1])
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            flops += 2 * int(np.prod(a[:-1])) * a[-1] * (b[0] if node.op_type == "Gemm" and any(
                at.name == "transB" and at.i for at in node.attribute) else b[-1])
    if not flops:
        raise BadInput(f"{onnx_path}: no Conv, MatMul or Gemm whose shape could be inferred")
    return flops


def sgemm_gflops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    """Best fp32 matrix-multiply throughput of this machine with `threads` threads (torch.mm)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


WARMUP_IMAGES = 1024  # enough for allocators, oneDNN primitive caches and thread pools to settle


def time_backends(runners: dict, images: np.ndarray, batch_size: int, repeats: int) -> dict[str, float]:
    """Best images/s of each runner over `repeats` passes of `images` in batches of `batch_size`.

    Passes are interleaved (A, B, C, A, B, C, ...) after one warm-up each, so a slow spell of this
    shared machine hits every backend alike instead of one backend's whole measurement. At batch 1 a pass
    is the first `BATCH1_IMAGES` images.
    """
    if batch_size == 1:
        images = images[:BATCH1_IMAGES]
    batches = list(checkset.batches(images, batch_size))

    def one_pass(run_batch, chosen):
        for batch in chosen:
            run_batch(batch)

    for run_batch in runners.values():
        one_pass(run_batch, batches[: max(1, WARMUP_IMAGES // batch_size)])
    best = {name: float("inf") for name in runners}
    for _ in range(repeats):
        for name, run_batch in runners.items():
            best[name] = min(best[name], _seconds(lambda r=run_batch: one_pass(r, batches)))
    return {name: len(images) / seconds for name, seconds in best.items()}


def latencies(runners: dict, images: np.ndarray, calls: int = LATENCY_CALLS) -> dict[str, dict[str, float]]:
    """p50 and p99 microseconds of one image per call, for each runner: `calls` calls each after a warm-up,
    interleaved in blocks of LATENCY_BLOCK calls (A, B, C, A, ...) so a slow spell of this shared machine
    hits every backend alike."""
    singles = [images[i % len(images)][None] for i in range(max(calls, WARMUP_IMAGES))]
    for run_batch in runners.values():
        for one in singles[:WARMUP_IMAGES]:
            run_batch(one)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for start in range(0, calls, LATENCY_BLOCK):
        block = singles[start: start + LATENCY_BLOCK]
        for name, run_batch in runners.items():
            run_batch(block[0])  # the block's first call: another backend's threads may still be spinning
            times[name].extend(_seconds(lambda r=run_batch, one=one: r(one)) for one in block)
    return {name: {"p50": round(float(np.percentile(t, 50)) * 1e6, 1), "p99": round(float(np.percentile(t, 99)) * 1e6, 1)}
            for name, t in times.items()}


class DeviceImages:
    """NumPy batches as the model's input tensors on `device`, a tuple of one per input (a batch of several
    inputs is packed: `layout`, `feeds`). On a GPU each batch is copied there once and kept, so the models are
    timed on images already in its memory, as a GPU's throughput is quoted; the copy itself is timed apart
    (`host_copy_gb_s`)."""

    def __init__(self, device, layout: Layout | None = None):
        self.device = device
        self.layout = layout if layout is not None and layout.several else None
        self._copies: dict = {}  # (address, shape) -> (the NumPy batch, kept alive so the address stays its, tensors)

    def __call__(self, batch: np.ndarray) -> tuple:
        import torch

        def tensors():
            parts = self.layout.unpack(batch) if self.layout is not None else [batch]
            return tuple(torch.from_numpy(np.ascontiguousarray(part)).to(self.device) for part in parts)

        if self.device.type == "cpu":
            return tensors()
        key = (batch.__array_interface__["data"][0], batch.shape)
        if key not in self._copies:
            self._copies[key] = (batch, tensors())
        return self._copies[key][1]


def host_copy_gb_s(images: np.ndarray, device) -> dict[str, float]:
    """GB/s of copying `images` from host memory to the GPU `device`, from ordinary (pageable) and from pinned
    memory: what a GPU figure of `DeviceImages` leaves out."""
    import torch

    pageable = torch.from_numpy(np.ascontiguousarray(images))
    pinned = pageable.pin_memory()
    speeds = {}
    for name, source in (("pageable", pageable), ("pinned", pinned)):
        source.to(device)
        torch.cuda.synchronize()
        seconds = min(_seconds(lambda s=source: (s.to(device, non_blocking=True), torch.cuda.synchronize())) for _ in range(3))
        speeds[name] = round(source.nbytes / seconds / 1e9, 1)
    return speeds


def torch_runner(module, device, images: DeviceImages | None = None):
    """`module` as a runner of NumPy batches (turned into tensors on `device` by `images`): inference mode,
    synchronised on CUDA."""
    import torch

    images = images or DeviceImages(device)

    def run_batch(batch):
        with torch.inference_mode():
            out = module(*images(batch))
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

    return run_batch


def cuda_graph_runner(module, images: DeviceImages, warmups: list[np.ndarray]):
    """`module` replayed from CUDA graphs, one per input shape, captured after warm-up calls on a side stream
    (as CUDA requires): a call is one graph launch instead of one launch per kernel. The shapes of `warmups`
    are captured here, so that a capture that fails raises here; any other on its first call. The output is
    the graph's own buffer, overwritten by the next call of the same shape."""
    import torch

    graphs = {}

    def capture(batch: np.ndarray) -> None:
        with torch.inference_mode():
            examples = tuple(tensor.clone() for tensor in images(batch))
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    module(*examples)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = module(*examples)
        graphs[batch.shape] = (graph, examples, output)

    def run_batch(batch):
        if batch.shape not in graphs:  # the last, shorter batch of a pass
            capture(batch)
        graph, examples, output = graphs[batch.shape]
        with torch.inference_mode():  # the input buffers are inference tensors
            for example, tensor in zip(examples, images(batch), strict=True):
                example.copy_(tensor)
        graph.replay()
        torch.cuda.synchronize()
        return output

    for warmup in warmups:
        capture(warmup)
    return run_batch


def torch_runners(paths: ModelPaths, onnx_path: Path, device, compile_warmup: np.ndarray,
                  batch_sizes: tuple[int, ...] = BATCH_SIZES, layout: Layout | None = None) -> tuple[dict, dict]:
    """{backend name: run_batch} for the torch backends, and notes (compile times, and on a GPU what could not
    be measured); the compiled models are compiled, and the CUDA graphs captured, for each of `batch_sizes`
    before any timing. `layout`: the model's several inputs, packed in each batch (`feeds`)."""
    import torch

    from pipeline.converters import to_fx
    from pipeline.runtimes.pt2 import load_module

    images = DeviceImages(device, layout)
    runners, notes = {}, {}
    runners["onnx2torch eager"] = torch_runner(to_fx.convert_raw(onnx_path).to(device), device, images)
    runners["model.pt2 eager"] = torch_runner(load_module(paths.pt2).to(device), device, images)
    optimized = load_module(paths.pt2_opt).to(device)
    runners["model_opt.pt2 eager"] = torch_runner(optimized, device, images)
    if device.type == "cuda":
        channels_last = load_module(paths.pt2_opt).to(device, memory_format=torch.channels_last)
        runners["model_opt.pt2 eager, channels-last"] = torch_runner(channels_last, device, images)
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant-fold weights and prepack them for oneDNN: inference only
    compiled = torch.compile(optimized)
    started = time.perf_counter()
    for size in batch_sizes:  # one compile per batch-size specialisation, before timing starts
        torch_runner(compiled, device, images)(compile_warmup[:size])
    notes["torch.compile seconds (all batch sizes)"] = round(time.perf_counter() - started, 1)
    runners["model_opt.pt2 compiled"] = torch_runner(compiled, device, images)
    if device.type == "cuda":
        warmups = [compile_warmup[:size] for size in batch_sizes]
        _add_cuda_graph(runners, notes, "model_opt.pt2 compiled, CUDA graph", compiled, images, warmups)
        # max_autotune: each convolution timed against inductor's Triton templates (their BiasAdd/ReLU/Add fused
        # in, fp32 without TF32 as cuDNN's), one compile per batch size.
        tuned = torch.compile(optimized, mode="max-autotune-no-cudagraphs", dynamic=False)
        started = time.perf_counter()
        for size in batch_sizes:
            torch_runner(tuned, device, images)(compile_warmup[:size])
        notes["torch.compile max-autotune seconds (all batch sizes)"] = round(time.perf_counter() - started, 1)
        _add_cuda_graph(runners, notes, "model_opt.pt2 max-autotune, CUDA graph", tuned, images, warmups)
        package = _gpu_package(paths, onnx_path, device, notes)
        if package is not None:
            runners["model_aoti_cuda.pt2"] = torch_runner(package, device, images)
            _add_cuda_graph(runners, notes, "model_aoti_cuda.pt2, CUDA graph", package, images, warmups)
    elif paths.pt2_aoti.is_file():  # the torch stage's package is compiled for the CPU
        from pipeline.runtimes import aoti

        runners["model_aoti.pt2"] = torch_runner(aoti.load(paths.pt2_aoti), device, images)
    return runners, notes


def _add_cuda_graph(runners: dict, notes: dict, name: str, module, images: DeviceImages, warmups: list) -> None:
    """Add `module` replayed from CUDA graphs as backend `name`; where capture fails, a note says why."""
    try:
        runners[name] = cuda_graph_runner(module, images, warmups)
    except RuntimeError as exc:
        notes[f"{name}: not measured"] = " ".join(str(exc).split())[:300]


def _gpu_package(paths: ModelPaths, onnx_path: Path, device, notes: dict):
    """`model_opt.pt2` compiled by AOTInductor for the GPU (any batch), loaded single-threaded (as a CUDA graph
    needs it); None, with a note saying why, where it does not compile. Written beside the CPU package as
    `model_aoti_cuda.pt2`."""
    from pipeline.converters import aot_compile, onnx_graph
    from pipeline.runtimes import aoti
    from pipeline.runtimes.pt2 import load_program

    started = time.perf_counter()
    try:
        aot_compile.compile_for_device(load_program(paths.pt2_opt), onnx_graph.input_sample(onnx_path), device,
                                       paths.pt2_aoti_cuda)
        package = aoti.load(paths.pt2_aoti_cuda, single_threaded=True)
    except Exception as exc:  # noqa: BLE001 — one backend fewer, said in the notes; the others are still timed
        notes["model_aoti_cuda.pt2: not measured"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return None
    notes["AOTInductor compile seconds (model_aoti_cuda.pt2)"] = round(time.perf_counter() - started, 1)
    return package


def agreement(runners: dict, images: np.ndarray, batch_size: int) -> dict[str, dict]:
    """Each backend's largest |difference| from ONNX Runtime's outputs over `images` (in batches of
    `batch_size`) and how many argmaxes differ."""
    outputs = {name: np.concatenate([_numpy(run(batch)) for batch in checkset.batches(images, batch_size)])
               for name, run in runners.items()}
    reference = outputs.pop("onnxruntime")
    return {name: {"max_abs": float(np.abs(out - reference).max()),
                   "argmax_flips": int((out.argmax(-1) != reference.argmax(-1)).sum())}
            for name, out in outputs.items()}


def _numpy(output) -> np.ndarray:
    """A backend's outputs as one float32 array (N, ...): ONNX Runtime's list or a torch tensor (on any device)
    as it is where there is one; several side by side, each flattened per sample."""
    parts = list(output) if isinstance(output, (list, tuple)) else [output]
    arrays = [np.asarray(part.detach().float().cpu().numpy() if hasattr(part, "detach") else part, dtype=np.float32) for part in parts]
    return arrays[0] if len(arrays) == 1 else np.concatenate([a.reshape(len(a), -1) for a in arrays], axis=1)


def onnxruntime_runner(onnx_path: Path, threads: int, layout: Layout | None = None):
    """ONNX Runtime on the CPU as a runner of NumPy batches (several inputs packed as `layout` says: `feeds`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if layout is None or not layout.several:
        return lambda batch: session.run(None, {names[0]: batch})
    return lambda batch: session.run(None, dict(zip(names, layout.unpack(batch), strict=True)))


def _takes_test_images(shape: tuple[int, ...], data: Path | None) -> bool:
    """Whether a model of input `shape` takes CIFAR-10 images and the data folder has them."""
    return tuple(shape) == cifar.INPUT_SHAPE and data is not None and cifar.resolve(data)[0] is not None


def bench_inputs(layout: Layout | tuple[int, ...], keras: KerasModel | None, data: Path | None, count: int) -> np.ndarray:
    """`count` inputs of the model's own kind (`layout`: its inputs' one-sample shapes as converted, or one
    input's shape): the CIFAR-10 test images for a model that takes them, else seeded random ones drawn as its
    check sets are — token ids for an Embedding's input and its stated range, from the Keras file `keras`
    where it is given —, several inputs packed (`feeds`)."""
    layout = layout if isinstance(layout, Layout) else Layout.of(["input"], [tuple(layout)])
    if not layout.several and _takes_test_images(layout.shapes[0], data):
        return cifar.load(data).images[:count].astype(np.float32)
    stated = keras.input_ranges if keras is not None else None
    tokens = keras.input_tokens if keras is not None else None
    ranges = checkset.choose_ranges(stated, None)
    return next(iter(checkset.random_sets(layout, ranges[:1], sizes=(count,), tokens=tokens).values()))


def require_built(*needed: Path) -> None:
    """BadInput naming the first of the artifacts `needed` that is not there."""
    for path in needed:
        if not path.is_file():
            raise BadInput(f"{path} does not exist; run `make torch` first")


def run(model: Path, out_dir: Path, data: Path, options: BenchOptions = BenchOptions(), progress: bool = True) -> BenchResult:
    """Time every backend at every batch size; write `bench.json` and `bench.png` into `out_dir`."""
    import onnxruntime
    import torch
    from tqdm import tqdm

    from pipeline.common.keras_job import KerasBench, KerasJob
    from pipeline.converters import onnx_graph
    from pipeline.runtimes import device as devices
    from pipeline.runtimes import keras as keras_runtime

    paths = ModelPaths(Path(out_dir))
    require_built(paths.onnx, paths.pt2, paths.pt2_opt)
    device = devices.select(options.device, options.allow_tf32)
    gpu = device.type == "cuda"
    if gpu:  # cuDNN times its algorithms for each shape on first use and keeps the fastest (same fp32 arithmetic)
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(options.threads)
    layout = onnx_graph.input_layout(paths.onnx)  # as converted: an open dimension at its checked length
    test_images = not layout.several and _takes_test_images(layout.shapes[0], data)
    keras = KerasModel.open(model) if Path(model).is_file() else None  # only its inputs' kind and Keras's timing need it
    images = bench_inputs(layout, keras, data, options.images)
    flops = model_flops_per_image(paths.onnx)
    machine = {
        "cpu": cpuinfo.field("model name") or platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "threads": options.threads, "device": str(device),
        "tf32": bool(options.allow_tf32) if gpu else None,
        "gpu": torch.cuda.get_device_name() if gpu else None,
        "cudnn_benchmark": True if gpu else None,
        "host_to_gpu_gb_s": host_copy_gb_s(images, device) if gpu else None,
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "sgemm_gflops": round(sgemm_gflops(options.threads), 1), "images": len(images), "repeats": options.repeats,
        "inputs": "test images" if test_images else "random inputs of the model's own kind"
                  + (f" ({layout.describe()})" if layout.several else ""),
    }
    result = BenchResult(machine, flops)
    runners = {"onnxruntime": onnxruntime_runner(paths.onnx, options.threads, layout)}
    torch_side, result.notes = torch_runners(paths, paths.onnx, device, images, options.batch_sizes, layout)
    runners.update(torch_side)
    speeds = {size: time_backends(runners, images, size, options.repeats)
              for size in tqdm(options.batch_sizes, desc="bench (batch sizes)", disable=not progress)}
    for name in runners:
        for size in options.batch_sizes:
            _record(result, name, size, speeds[size][name])
    if 1 in options.batch_sizes:
        result.latency_us = latencies(runners, images, min(LATENCY_CALLS, max(options.images, 1)))
    result.agreement = agreement(runners, images, max(options.batch_sizes))
    if 1 in options.batch_sizes and max(options.batch_sizes) > 1:  # where a batch-1 model of its own answers
        result.agreement_batch1 = agreement(runners, images[:BATCH1_IMAGES], 1)
    if options.with_keras:
        with tempfile.TemporaryDirectory() as scratch:
            own = Path(scratch) / "inputs.npy" if not test_images else None
            if own is not None:
                np.save(own, images)
            job = KerasJob(model, data=data, bench=KerasBench(tuple(options.batch_sizes), options.images, options.repeats, options.threads,
                                                              own))
            for size, speed in keras_runtime.run(job).bench.items():
                _record(result, "keras predict", int(size), speed)
    write_text(paths.bench_json, json.dumps(asdict(result), indent=2) + "\n")
    plot(result, paths.bench_png)
    return result


def _record(result: BenchResult, backend: str, batch_size: int, images_per_s: float) -> None:
    result.results.append({"backend": backend, "batch_size": batch_size, "images_per_s": round(images_per_s, 1),
                           "effective_gflops": round(images_per_s * result.model_flops_per_image / 1e9, 1)})


def table(result: BenchResult) -> str:
    """Markdown table: one row per backend — batch-1 latency p50/p99 and its ratio to ONNX Runtime's, images/s
    per batch size, GFLOP/s at the largest batch as a share of the machine's sgemm, the ratio to ONNX Runtime,
    and the largest difference from ONNX Runtime's outputs with the argmax disagreements, at the largest
    batch and, where measured, one image a call (what a package's batch-1 model computes)."""
    sizes = sorted({r["batch_size"] for r in result.results})
    backends = list(dict.fromkeys(r["backend"] for r in result.results))
    latency = result.latency_us
    lines = ["| backend | batch 1 p50 µs | p99 µs | vs onnxruntime (p50) | " + " | ".join(f"batch {s} img/s" for s in sizes)
             + f" | GFLOP/s @ {sizes[-1]} (of sgemm) | vs onnxruntime @ {sizes[-1]} | max abs diff (argmax flips) @ {sizes[-1]} |"
             + (" @ 1 |" if result.agreement_batch1 else ""),
             "|---|" + "---|" * (len(sizes) + 6 + bool(result.agreement_batch1))]
    reference = result.images_per_s("onnxruntime", sizes[-1])
    peak = result.machine["sgemm_gflops"]
    for backend in backends:
        speeds = [result.images_per_s(backend, s) for s in sizes]
        last = speeds[-1] or 0.0
        gflops = last * result.model_flops_per_image / 1e9
        mine, theirs = latency.get(backend), latency.get("onnxruntime")
        timing = (f"{mine['p50']:,.0f} | {mine['p99']:,.0f} | {theirs['p50'] / mine['p50']:.2f}×" if mine and theirs else "— | — | —")
        same = " | ".join(_agreement_cell(measured.get(backend)) for measured in (result.agreement, result.agreement_batch1) if measured)
        lines.append(f"| {backend} | {timing} | " + " | ".join(f"{v:,.0f}" if v else "—" for v in speeds)
                     + f" | {gflops:.1f} ({gflops / peak:.0%}) | {last / reference:.2f}× | {same or '—'} |")
    m = result.machine
    where = f"{m['cpu']}, {m['threads']} threads, device {m['device']}"
    if m.get("gpu"):
        where += (f" ({m['gpu']}, TF32 {'on' if m['tf32'] else 'off'}, cuDNN benchmark on; torch timed on images already"
                  f" on the GPU, host→GPU copy {m['host_to_gpu_gb_s']['pageable']} GB/s pageable,"
                  f" {m['host_to_gpu_gb_s']['pinned']} GB/s pinned)")
    lines.append(f"\n{where}; sgemm {m['sgemm_gflops']} GFLOP/s; model {result.model_flops_per_image / 1e6:.2f} MFLOP/image; "
                 f"{m['images']:,} {m.get('inputs', 'test images')}, best of {m['repeats']}.")
    lines.extend(f"{name}: {value}" for name, value in result.notes.items())
    return "\n".join(lines)


def _agreement_cell(agree: dict | None) -> str:
    return f"{agree['max_abs']:.1e} ({agree['argmax_flips']})" if agree else "—"


def plot(result: BenchResult, path: Path) -> None:
    """Grouped bars of images/s per backend at each batch size; beside them, batch-1 latency p50 and p99."""
    from pipeline.common import figures

    plt = figures.pyplot()

    sizes = sorted({r["batch_size"] for r in result.results})
    backends = list(dict.fromkeys(r["backend"] for r in result.results))
    width = 0.8 / len(backends)
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for i, backend in enumerate(backends):
        values = [result.images_per_s(backend, s) or 0 for s in sizes]
        ax.bar([x + i * width for x in range(len(sizes))], values, width, label=backend)
    ax.set_xticks([x + width * (len(backends) - 1) / 2 for x in range(len(sizes))], [f"batch {s}" for s in sizes])
    ax.set_ylabel("images / s")
    m = result.machine
    ax.set_title(f"throughput, {m['threads']} threads, {m['device']} ({m['cpu'][:40]})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    timed = [b for b in backends if b in result.latency_us]
    if timed:
        rows = range(len(timed))
        lat.barh([r + 0.2 for r in rows], [result.latency_us[b]["p50"] for b in timed], 0.4, label="p50")
        lat.barh([r - 0.2 for r in rows], [result.latency_us[b]["p99"] for b in timed], 0.4, label="p99")
        lat.set_yticks(list(rows), timed, fontsize=8)
        lat.set_xscale("log")
        lat.set_xlabel("µs per call, one image")
        lat.set_title("batch-1 latency (MLPerf Tiny's metric)", fontsize=10)
        lat.legend(fontsize=8)
        lat.grid(True, axis="x", alpha=0.3)
    else:
        lat.axis("off")
    figures.save(fig, path, dpi=110)
