"""`model_aoti.pt2`, the AOTInductor package the torch stage compiles: the same predictions as ONNX Runtime
on the whole CIFAR-10 test set, one image at a time (MLPerf Tiny's way) and in batches of 256."""

import json

import numpy as np
import pytest

from pipeline.common.tolerances import ATOL_PROB
from pipeline.data import checkset, cifar
from pipeline.runtimes import aoti
from pipeline.stages import bench


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 256])
def test_aoti_package_agrees_with_onnxruntime_on_the_test_set(real_run, batch_size):
    import onnxruntime as ort
    import torch

    _, paths, data = real_run
    images = cifar.load(data).images.astype(np.float32)
    # One thread each: two thread pools taking turns call by call spin against each other (20,000 calls
    # took 21 min so, while another job ran); the values do not depend on the thread count.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(paths.onnx), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    compiled = aoti.load(paths.pt2_aoti)
    ours, theirs = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for batch in checkset.batches(images, batch_size):
                ours.append(compiled(torch.from_numpy(batch)).numpy())
                theirs.append(session.run(None, {name: batch})[0])
    finally:
        torch.set_num_threads(threads)
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    assert len(ours) == 10_000
    assert float(np.abs(ours - theirs).max()) <= ATOL_PROB
    assert int((ours.argmax(1) != theirs.argmax(1)).sum()) == 0


@pytest.mark.real_data
def test_verify_and_bench_take_the_aoti_package(real_run):
    _, paths, data = real_run
    saved = json.loads(paths.verify_json.read_text())
    assert "aoti" in saved["backends"] and any("aoti" in (p["a"], p["b"]) and p["passed"] for p in saved["pairs"])
    options = bench.BenchOptions(batch_sizes=(1, 32), images=64, repeats=1, threads=2, with_keras=False)
    result = bench.run(paths.dir.parent / "unused.h5", paths.dir, data, options, progress=False)
    assert result.images_per_s("model_aoti.pt2", 32) > 0
    assert set(result.latency_us) >= {"onnxruntime", "model_aoti.pt2"}
    assert all(0 < t["p50"] <= t["p99"] for t in result.latency_us.values())
    assert "model_aoti.pt2" in bench.table(result)


def test_a_file_that_is_not_a_package_is_bad_input(tmp_path):
    from pipeline.common.errors import BadInput

    (tmp_path / "model_aoti.pt2").write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not a loadable AOTInductor package"):
        aoti.load(tmp_path / "model_aoti.pt2")


@pytest.mark.real_data
def test_the_package_is_frozen_its_convolutions_fused_onednn_calls(real_run):
    """Freezing applies only with gradients off; with them on, inductor ignores it and the package calls
    ATen's generic convolution (3,548 instead of 3,974 img/s at batch 256 here, README "Speed")."""
    import re
    import zipfile

    _, paths, _ = real_run
    with zipfile.ZipFile(paths.pt2_aoti) as package:
        wrapper = "".join(package.read(n).decode() for n in package.namelist() if n.endswith("wrapper.cpp"))
    calls = re.findall(r"(aoti_torch_cpu_\w+)\(", wrapper)
    assert sum("mkldnn__convolution_pointwise" in c for c in calls) == 9  # ResNet8's nine, ReLU/Add fused in
    assert "aoti_torch_cpu_convolution" not in calls
