import json

import numpy as np

import pytest

import helpers

from pipeline.stages import bench
from pipeline.common.errors import BadInput


@pytest.mark.real_data
def test_flops_from_graph_match_resnet8(real_run):
    _, paths, _ = real_run
    assert bench.model_flops_per_image(paths.onnx) == pytest.approx(25.0e6, rel=0.01)  # 12.50 M multiply-adds


def test_bench_writes_json_and_png(tiny_converted, tiny_data):
    model, _, paths, _, _ = tiny_converted
    options = bench.BenchOptions(batch_sizes=(1, 32), images=64, repeats=1, threads=2)
    result = bench.run(model, paths.dir, tiny_data, options, progress=False)
    saved = json.loads(paths.bench_json.read_text())
    backends = {r["backend"] for r in saved["results"]}
    assert backends == {"onnxruntime", "onnx2torch eager", "model.pt2 eager", "model_opt.pt2 eager",
                        "model_opt.pt2 compiled", "keras predict"}
    assert len(saved["results"]) == len(backends) * 2 and all(r["images_per_s"] > 0 for r in saved["results"])
    assert saved["machine"]["sgemm_gflops"] > 0 and saved["machine"]["threads"] == 2
    assert saved["model_flops_per_image"] == result.model_flops_per_image > 0
    assert paths.bench_png.read_bytes()[:4] == b"\x89PNG"
    assert "vs onnxruntime" in bench.table(result)
    assert set(saved["agreement"]) == set(saved["agreement_batch1"]) == backends - {"onnxruntime", "keras predict"}


def test_cuda_without_gpu_is_bad_input(tiny_converted, tiny_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this test is about machines without a GPU")
    model, _, paths, _, _ = tiny_converted
    with pytest.raises(BadInput, match="no CUDA device"):
        bench.run(model, paths.dir, tiny_data, bench.BenchOptions(device="cuda", with_keras=False), progress=False)


def test_agreement_names_a_backend_that_computes_something_else(tiny_converted, tiny_data):
    """`agreement` (the bench's column against ONNX Runtime) is near zero for the real backends, and shows a
    backend 2 % off in its largest difference and one with two classes swapped in its argmax flips."""
    import numpy as np
    import torch

    from pipeline.data import cifar
    from pipeline.runtimes.pt2 import load_module

    _, _, paths, _, _ = tiny_converted
    images = cifar.load(tiny_data).images.astype(np.float32)
    right = bench.torch_runner(load_module(paths.pt2_opt), torch.device("cpu"))
    outputs = right(images)
    top = int(outputs.argmax(-1)[0])
    other = (top + 1) % outputs.shape[-1]
    swap = torch.arange(outputs.shape[-1])
    swap[[top, other]] = swap[[other, top]]
    runners = {"onnxruntime": bench.onnxruntime_runner(paths.onnx, threads=2), "model_opt.pt2 eager": right,
               "2 % off": lambda batch: right(batch) * 1.02, "classes swapped": lambda batch: right(batch)[:, swap]}
    agree = bench.agreement(runners, images, batch_size=32)
    assert agree["model_opt.pt2 eager"]["max_abs"] < 1e-5 and agree["model_opt.pt2 eager"]["argmax_flips"] == 0
    assert agree["2 % off"]["max_abs"] == pytest.approx(0.02 * float(outputs.max()), rel=0.01)
    assert agree["2 % off"]["argmax_flips"] == 0  # a uniform scale moves no argmax: the difference column is what shows it
    flipped = int((outputs.argmax(-1) == top).sum() + (outputs.argmax(-1) == other).sum())
    assert flipped >= 1 and agree["classes swapped"]["argmax_flips"] == flipped


def test_the_gpu_package_path_compiles_and_agrees_on_the_cpu(tiny_converted, tmp_path):
    """`compile_for_device` (how `make bench --device cuda` builds `model_aoti_cuda.pt2`): re-exported on the
    device, compiled, packaged; run here with the CPU as the device, it agrees with `model_opt.pt2`."""
    import torch

    from pipeline.converters import aot_compile, onnx_graph
    from pipeline.runtimes import aoti
    from pipeline.runtimes.pt2 import load_module, load_program

    _, _, paths, _, _ = tiny_converted
    package = tmp_path / "model_aoti_cuda.pt2"
    aot_compile.compile_for_device(load_program(paths.pt2_opt), onnx_graph.input_shape(paths.onnx), torch.device("cpu"), package)
    assert aoti.models(package) == [aoti.MODEL]
    images = torch.rand(5, *onnx_graph.input_shape(paths.onnx)) * 255
    with torch.inference_mode():
        assert torch.allclose(aoti.load(package, single_threaded=True)(images), load_module(paths.pt2_opt)(images), atol=1e-5)


def test_a_text_model_is_timed_on_token_ids_not_images(tiny_data):
    """`make bench` on a model that does not take CIFAR-10 images: its inputs are drawn as its check sets
    are — token ids below the Embedding's 50 — even with the test images at hand."""
    from pipeline.keras_file.model import KerasModel

    model = KerasModel.open(helpers.ROOT / "tests" / "data" / "fuzz_bases" / "recurrent_text.h5")
    inputs = bench.bench_inputs(model.input_shape, model, tiny_data, 300)
    assert inputs.shape == (300, 20) and np.array_equal(inputs, np.round(inputs)) and 0 <= inputs.min() and inputs.max() < 50
