"""The compile cache of `model_aoti.pt2` (`converters.aot_cache`, used by the torch stage's `_aot_package`): a
package comes back only for the same program, shape, threads, settings and code; only a complete package
that passed its check is kept; a kept one that fails the check, or whose file changed, is compiled again."""

from pathlib import Path

import pytest

from pipeline.common import cpuinfo
from pipeline.common.errors import BadInput, CheckFailed, PipelineError
from pipeline.common.paths import ModelPaths, cache_dir
from pipeline.converters import aot_cache, aot_compile
from pipeline.stages import to_torch

SHAPE = (6, 6, 3)


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))


def _program(scale: float = 1.0, shape=SHAPE):
    import torch

    from pipeline.converters import to_fx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    with torch.no_grad():
        net[0].weight.mul_(scale)

    class Nhwc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2))

    return to_fx.export(Nhwc().eval(), shape)


def test_the_key_is_the_same_for_the_same_program_and_follows_weights_shape_threads_settings_and_code(tmp_path, monkeypatch):
    import torch

    program = _program()
    first = aot_cache.key(program, SHAPE)
    assert aot_cache.key(_program(), SHAPE) == first  # exported again: same graph, same weights
    assert aot_cache.key(_program(scale=1.0 + 2**-20), SHAPE) != first  # one weight's last bits
    assert aot_cache.key(program, (7, 7, 3)) != first  # the shape alone
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        assert aot_cache.key(program, SHAPE) != first
    finally:
        torch.set_num_threads(threads)
    with monkeypatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE", "1")
        assert aot_cache.key(program, SHAPE) != first
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "direct_conv.cpp").write_text("// another kernel")
    with monkeypatch.context() as patch:
        patch.setattr(aot_cache, "KERNELS", kernels)
        assert aot_cache.key(program, SHAPE) != first
    assert aot_cache.key(program, SHAPE) == first

    class Edited(aot_cache.ImportGraph):  # conv_direct.py as it would read after an edit
        def __init__(self, root):
            super().__init__(root)
            edited = tmp_path / "conv_direct.py"
            edited.write_bytes(self.files["pipeline.converters.conv_direct"].read_bytes() + b"\n# edited\n")
            self.files["pipeline.converters.conv_direct"] = edited

    monkeypatch.setattr(aot_cache, "ImportGraph", Edited)
    assert aot_cache.key(program, SHAPE) != first


def _fake_build(calls: list, why: str = ""):
    def build_package(program, program_path, shape, path):
        calls.append(path)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"package %d" % len(calls))
        return 12.5, why

    return build_package


def _passes(path):
    return "checked"


def _stage(program, folder: Path, check=_passes):
    paths = ModelPaths(folder)
    return to_torch._aot_package(program, SHAPE, paths, check), paths  # noqa: SLF001


@pytest.fixture
def kernel_built(monkeypatch, tmp_path):
    """On a processor with AVX-512, as after a compile that built our kernel (its library there)."""
    from pipeline.runtimes import direct_conv

    library = tmp_path / "built" / "direct_conv.so"
    library.parent.mkdir()
    library.write_bytes(b"the kernel")
    monkeypatch.setattr(cpuinfo, "has_avx512", lambda: True)
    monkeypatch.setattr(direct_conv, "library_path", lambda: library)
    return library


def test_a_complete_package_is_kept_and_given_back_without_a_compile(tmp_path, monkeypatch, kernel_built):
    calls = []
    monkeypatch.setattr(aot_compile, "build_package", _fake_build(calls))
    program = _program()
    assert _stage(program, tmp_path / "a")[0] == (12.5, "", False, "checked")
    (result, paths) = _stage(program, tmp_path / "b")
    assert result == (12.5, "", True, "checked") and len(calls) == 1 and paths.pt2_aoti.read_bytes() == b"package 1"
    assert _stage(_program(scale=2.0), tmp_path / "c")[0][2] is False and len(calls) == 2  # another program: compiled


@pytest.mark.parametrize("why, kept", [(aot_compile.NO_CONVOLUTION, True), ("not built (the batch-1 compile took over 1800 s)", False)])
def test_only_a_complete_package_is_kept(tmp_path, monkeypatch, kernel_built, why, kept):
    """A package without its batch-1 model because the compile failed is compiled again next time; one
    without it because the program has no convolution to rewrite is complete."""
    calls = []
    monkeypatch.setattr(aot_compile, "build_package", _fake_build(calls, why))
    for folder in ("a", "b"):
        _stage(_program(), tmp_path / folder)
    assert len(calls) == (1 if kept else 2)


def test_a_package_whose_kernel_did_not_build_is_not_kept(tmp_path, monkeypatch):
    """On a processor with AVX-512, a batch-1 model built while our kernel could not be (its im2col fallback)
    is compiled again next time, not kept for good."""
    from pipeline.runtimes import direct_conv

    calls = []
    monkeypatch.setattr(aot_compile, "build_package", _fake_build(calls))
    monkeypatch.setattr(cpuinfo, "has_avx512", lambda: True)
    monkeypatch.setattr(direct_conv, "library_path", lambda: tmp_path / "never built" / "direct_conv.so")
    for folder in ("a", "b"):
        _stage(_program(), tmp_path / folder)
    assert len(calls) == 2


def test_a_package_from_the_cache_gets_the_kernel_library_beside_it(tmp_path, monkeypatch, kernel_built):
    """A kept package whose batch-1 model calls our kernel comes with the kernel's library beside it, as a
    compiled one does (what a C++ program loads first)."""
    from pipeline.runtimes import aoti

    monkeypatch.setattr(aot_compile, "build_package", _fake_build([]))
    monkeypatch.setattr(aoti, "calls_direct_kernel", lambda path: True)
    _stage(_program(), tmp_path / "a")
    (result, paths) = _stage(_program(), tmp_path / "b")
    assert result[2] is True and paths.aoti_kernels.read_bytes() == b"the kernel"


@pytest.mark.parametrize("failure", [CheckFailed("disagrees with ONNX Runtime"), BadInput("not a loadable AOTInductor package")])
def test_a_kept_package_that_fails_its_check_is_dropped_and_compiled_again(tmp_path, monkeypatch, kernel_built, failure):
    calls, checks = [], []

    def check(path):
        checks.append(Path(path).read_bytes())
        if checks[-1] == b"package 1" and len(checks) > 1:  # the kept package, checked again later, fails
            raise failure
        return "checked"

    monkeypatch.setattr(aot_compile, "build_package", _fake_build(calls))
    program = _program()
    _stage(program, tmp_path / "a", check)
    (result, paths) = _stage(program, tmp_path / "b", check)
    assert result == (12.5, "", False, "checked") and paths.pt2_aoti.read_bytes() == b"package 2" and len(calls) == 2
    assert _stage(program, tmp_path / "c", check)[0][2] is True  # the new one is kept in its place


def test_a_kept_package_whose_file_changed_is_compiled_again(tmp_path, monkeypatch, kernel_built):
    calls = []
    monkeypatch.setattr(aot_compile, "build_package", _fake_build(calls))
    program = _program()
    _stage(program, tmp_path / "a")
    (kept,) = (folder for folder in cache_dir("aoti").iterdir() if not folder.name.startswith("."))
    (kept / aot_cache.PACKAGE).write_bytes(b"package 1, altered")
    assert _stage(program, tmp_path / "b")[0][2] is False and len(calls) == 2
    assert _stage(program, tmp_path / "c")[0][2] is True  # the new one kept in its place


def test_a_cache_folder_others_can_write_or_own_is_refused(tmp_path, monkeypatch):
    """What the cache holds is loaded and run: a folder anyone may write in, or someone else's, is not used,
    and the message says what to do."""
    import os

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("PIPELINE_CACHE", str(shared))
    with pytest.raises(PipelineError, match="not this user's alone .* set PIPELINE_CACHE to a folder only you can write"):
        cache_dir("aoti")
    shared.chmod(0o700)
    assert cache_dir("aoti") == shared / "aoti"
    monkeypatch.setattr(os, "getuid", lambda: os.stat(shared).st_uid + 1)
    with pytest.raises(PipelineError, match="not this user's alone"):
        cache_dir("aoti")


def test_the_cache_folder_it_makes_is_its_own_whatever_the_umask(tmp_path, monkeypatch, kernel_built):
    """Made under a group-writable umask (002, common), the folder must still pass its own check next time."""
    import os

    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "new" / "cache"))
    monkeypatch.setattr(aot_compile, "build_package", _fake_build([]))
    previous = os.umask(0o002)
    try:
        _stage(_program(), tmp_path / "a")
    finally:
        os.umask(previous)
    assert _stage(_program(), tmp_path / "b")[0][2] is True


def test_the_torch_stage_refuses_a_shared_cache_folder_in_one_line(tiny_converted, tmp_path, monkeypatch):
    import helpers

    _, _, paths, _, _ = tiny_converted
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("PIPELINE_CACHE", str(shared))
    completed = helpers.run_cli("torch", "--onnx", str(paths.onnx), "--out", str(tmp_path / "out"))
    helpers.assert_one_line_error(completed, "not this user's alone", "set PIPELINE_CACHE")
