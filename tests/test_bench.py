import json

import pytest

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


def test_cuda_without_gpu_is_bad_input(tiny_converted, tiny_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this test is about machines without a GPU")
    model, _, paths, _, _ = tiny_converted
    with pytest.raises(BadInput, match="no CUDA device"):
        bench.run(model, paths.dir, tiny_data, bench.BenchOptions(device="cuda", with_keras=False), progress=False)
