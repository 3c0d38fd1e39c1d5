"""`model_aoti.pt2`, the AOTInductor package the torch stage compiles: the same predictions as ONNX Runtime
on the whole CIFAR-10 test set, one image at a time (MLPerf Tiny's way) and in batches of 256."""

import json

import numpy as np
import pytest

from pipeline.common.errors import BadInput
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
    (tmp_path / "model_aoti.pt2").write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not a loadable AOTInductor package"):
        aoti.load(tmp_path / "model_aoti.pt2")


@pytest.mark.real_data
def test_the_package_is_frozen_its_convolutions_fused_onednn_calls(real_run):
    """Freezing applies only with gradients off; with them on, inductor ignores it and the package calls
    ATen's generic convolution (3,548 instead of 3,974 img/s at batch 256 here, docs/speed.md)."""
    import re

    _, paths, _ = real_run
    calls = re.findall(r"(aoti_torch_cpu_\w+)\(", _wrapper(paths.pt2_aoti, aoti.MODEL))
    assert sum("mkldnn__convolution_pointwise" in c for c in calls) == 9  # ResNet8's nine, ReLU/Add fused in
    assert "aoti_torch_cpu_convolution" not in calls


def _wrapper(package_path, model: str) -> str:
    """The C++ wrapper of `model` in the AOTInductor package at `package_path`."""
    import zipfile

    with zipfile.ZipFile(package_path) as package:
        return "".join(package.read(n).decode() for n in package.namelist()
                       if n.endswith("wrapper.cpp") and f"/aotinductor/{model}/" in n)


@pytest.mark.real_data
def test_the_batch1_model_computes_its_convolutions_itself(real_run):
    """The package's batch-1 model: no oneDNN convolution (their per-call set-up is most of a batch-1
    inference); where our kernel runs, its nine convolutions are calls of the kernel's C entry point, not
    of the proxy executor (docs/speed.md); elsewhere im2col GEMMs compiled into the package."""
    from pipeline.runtimes import direct_conv

    _, paths, _ = real_run
    assert aoti.models(paths.pt2_aoti) == [aoti.BATCH1, aoti.MODEL]
    wrapper = _wrapper(paths.pt2_aoti, aoti.BATCH1)
    assert wrapper and "convolution" not in wrapper
    if direct_conv.load():
        assert wrapper.count(f"AOTI_TORCH_ERROR_CODE_CHECK({direct_conv.ENTRY}(") == 9  # ResNet8's nine, called directly
        assert aoti.calls_direct_kernel(paths.pt2_aoti)


def test_a_package_that_calls_the_kernel_says_so_where_it_cannot_run(real_run, monkeypatch):
    """On a processor without AVX-512 (here: `direct_conv.load` says so), loading a package whose batch-1 model
    calls our kernel is BadInput, with what to do, not a crash at the first call."""
    from pipeline.runtimes import direct_conv

    _, paths, _ = real_run
    if not aoti.calls_direct_kernel(paths.pt2_aoti):
        pytest.skip("this machine's package does not call the kernel (no AVX-512)")
    monkeypatch.setattr(direct_conv, "load", lambda library=None: False)
    with pytest.raises(BadInput, match="no AVX-512; rerun `make torch` here"):
        aoti.load(paths.pt2_aoti)


@pytest.mark.real_data
@pytest.mark.slow
def test_a_package_runs_with_its_kernel_library_beside_it_where_nothing_can_be_built(real_run, tmp_path):
    """Where no compiler is (here: an empty PATH, an empty cache folder), the package loads the kernel
    library the torch stage wrote beside it; without that file it is BadInput naming both ways out."""
    import os
    import shutil
    import subprocess
    import sys

    _, paths, _ = real_run
    if not aoti.calls_direct_kernel(paths.pt2_aoti):
        pytest.skip("this machine's package does not call the kernel (no AVX-512)")
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(paths.pt2_aoti, shipped)
    script = ("import sys, torch; from pipeline.runtimes import aoti; "
              "print(list(aoti.load(sys.argv[1])(torch.full((1, 32, 32, 3), 128.0)).shape))")
    env = {**os.environ, "PATH": "", "PIPELINE_CACHE": str(tmp_path / "empty cache")}

    def load() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, str(shipped / paths.pt2_aoti.name)], env=env, capture_output=True, text=True)

    alone = load()
    assert alone.returncode != 0 and "not beside it (model_aoti_kernels.so) and does not build here" in alone.stderr
    shutil.copy(paths.aoti_kernels, shipped)
    beside = load()
    assert beside.returncode == 0 and beside.stdout.strip() == "[1, 10]", beside.stderr[-2000:]


@pytest.mark.real_data
@pytest.mark.slow
def test_a_wrong_batch1_model_fails_the_torch_stage_check_at_batch_1_only(real_run, tmp_path):
    """A one-image batch runs on the package's batch1 model: a fault there shows at batch 1 and nowhere else."""
    import torch

    from pipeline.common.errors import CheckFailed
    from pipeline.converters import aot_compile, onnx_graph
    from pipeline.runtimes.pt2 import load_program
    from pipeline.stages import to_torch
    from pipeline.verifier.keras_reference import KerasReference

    _, paths, _ = real_run
    shape = onnx_graph.input_shape(paths.onnx)
    broken = load_program(paths.pt2_opt)  # its own tensors: the dynamic model below keeps the right weights
    name, weight = next((n, t) for n, t in broken.state_dict.items() if t.dim() == 4)
    with torch.no_grad():
        weight.mul_(1.02)  # the first convolution's weight 2 % off
    package = tmp_path / "model_aoti.pt2"
    aot_compile.compile_package(load_program(paths.pt2_opt), package, batch1=aot_compile.batch1_program(broken, shape))
    sets, outputs, classifier = to_torch._onnxruntime_reference(paths.onnx, KerasReference(paths.keras_reference))  # noqa: SLF001
    single = [k for k in sets if checkset.batch_size_of(k) == 1]
    assert single and len(single) < len(sets)

    def check(names):
        return to_torch.validate(package, paths.onnx, {k: sets[k] for k in names}, {k: outputs[k] for k in names}, classifier,
                                 backend="aoti")

    with pytest.raises(CheckFailed, match="disagrees"):
        check(single)
    assert check([k for k in sets if k not in single]).passed


class _ConvThenMatmul:
    """A convolution, then a product of two activations: a GEMM whose operands are both computed, which
    inductor's C++ template does not take (it packs a constant weight)."""

    @staticmethod
    def build():
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

            def forward(self, x):
                y = self.conv(x.permute(0, 3, 1, 2)).flatten(2)
                return torch.softmax((y @ y.transpose(1, 2)).flatten(1), dim=1)

        torch.manual_seed(0)
        return Net().eval()


def test_a_gemm_the_template_cannot_take_compiles_with_aten_beside_it(tmp_path, monkeypatch):
    import torch

    from pipeline.converters import aot_compile, to_fx

    net, x = _ConvThenMatmul.build(), torch.rand(3, 6, 6, 3)
    program = to_fx.export(net, (6, 6, 3))  # dynamic batch, as the torch stage exports
    tried = []
    compile_one = aot_compile.compile_model

    def recording(exported, settings):
        tried.append(settings)
        return compile_one(exported, settings)

    monkeypatch.setattr(aot_compile, "compile_model", recording)
    package = tmp_path / "model_aoti.pt2"
    aot_compile.compile_package(program, package, batch1=aot_compile.batch1_program(program, (6, 6, 3)))
    assert tried[1:] == [aot_compile.BATCH1_OPTIONS, aot_compile.BATCH1_FALLBACK]  # the template alone failed, then both
    assert aoti.models(package) == [aoti.BATCH1, aoti.MODEL]
    with torch.no_grad():
        assert torch.allclose(aoti.load(package)(x[:1]), net(x[:1]), atol=1e-6)
        assert torch.allclose(aoti.load(package)(x), net(x), atol=1e-6)


def test_a_batch1_model_that_fails_to_build_leaves_the_any_batch_model_and_says_why(tmp_path):
    """The batch-1 model compiles in a process of its own: there its failure (here, no program to read where
    the stage said one was) comes back as the reason, and the any-batch model ships."""
    import torch

    from pipeline.converters import aot_compile, to_fx

    net, x = _ConvThenMatmul.build(), torch.rand(3, 6, 6, 3)
    not_a_program = tmp_path / "model_opt.pt2"
    not_a_program.write_text("not a program")
    package = tmp_path / "model_aoti.pt2"
    seconds, why = aot_compile.build_package(to_fx.export(net, (6, 6, 3)), not_a_program, (6, 6, 3), package)
    assert why.startswith(f"not built (BadInput: {not_a_program} is not a loadable torch.export program") and seconds > 0
    assert aoti.models(package) == [aoti.MODEL]
    with torch.no_grad():
        assert torch.allclose(aoti.load(package)(x[:1]), net(x[:1]), atol=1e-6)


def test_the_batch1_compile_is_killed_when_the_stage_leaves_first(tmp_path, monkeypatch):
    """Where the any-batch compile fails, the batch-1 compile beside it does not run on: its process is killed."""
    import signal
    import subprocess

    import torch

    from pipeline.converters import aot_compile, to_fx

    program_path = tmp_path / "model_opt.pt2"
    torch.export.save(to_fx.export(_ConvThenMatmul.build(), (6, 6, 3)), str(program_path))
    started, popen = [], subprocess.Popen

    def recording(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(aot_compile.subprocess, "Popen", recording)
    with pytest.raises(RuntimeError, match="the any-batch compile failed"), aot_compile.batch1_beside(program_path, (6, 6, 3)):
        raise RuntimeError("the any-batch compile failed")
    (child,) = started
    assert child.returncode == -signal.SIGKILL  # killed, not finished (its import of torch alone takes seconds)


@pytest.mark.zoo  # a compile of ~40 s on CI's 2 cores; ResNet8's batch-1 model is checked in CI (tests above)
def test_a_zoo_member_gets_its_batch1_model_checked_by_the_torch_stage(zoo_member, tmp_path):
    """MobileNetV3Small (squeeze-excite, hard-swish, depthwise convolutions left to oneDNN) through the torch
    stage with the package: its batch-1 model is built — with inductor's epilogue fusion on, the GEMM
    template's code generation failed on it ("wrong ndim"), as on MobileNetV2, EfficientNetB0 and ResNet50 —
    and passes the stage's check against ONNX Runtime, one-image sets included."""
    import shutil

    from pipeline.common.paths import ModelPaths
    from pipeline.stages import to_torch
    from pipeline.verifier.keras_reference import KerasReference

    _, _, out = zoo_member("MobileNetV3Small")
    built, mine = ModelPaths(out / "MobileNetV3Small"), ModelPaths(tmp_path / "MobileNetV3Small")
    mine.dir.mkdir()
    for name in ("onnx", "keras_reference", "keras_reference_f64"):  # the check sets and the model's float32 noise
        shutil.copy(getattr(built, name), getattr(mine, name))
    result = to_torch.run(mine.onnx, mine.dir, aot=True)
    assert result.aoti_batch1 == "" and aoti.models(mine.pt2_aoti) == [aoti.BATCH1, aoti.MODEL]
    # The stage's check (it raises where the package disagrees) had one-image sets, which `aoti.load` runs on
    # the batch-1 model (tests/test_aoti.py: a wrong batch-1 model fails on exactly those).
    assert any(checkset.batch_size_of(name) == 1 for name in KerasReference(mine.keras_reference).set_names() if name.startswith("random_"))
