"""The compile cache of `model_aoti.pt2` (`converters.aot_cache`): a package comes back only for the same
program, shape, settings and code, and only a complete one is kept."""

from pathlib import Path

import pytest

from pipeline.converters import aot_cache
from pipeline.stages import to_torch


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))


def _program(scale: float = 1.0, shape=(6, 6, 3)):
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


def test_the_key_is_the_same_for_the_same_program_and_follows_weights_shape_settings_and_code(tmp_path, monkeypatch):
    first = aot_cache.key(_program(), (6, 6, 3))
    assert aot_cache.key(_program(), (6, 6, 3)) == first  # exported again: same graph, same weights
    assert aot_cache.key(_program(scale=1.0 + 2**-20), (6, 6, 3)) != first  # one weight's last bits
    assert aot_cache.key(_program(shape=(8, 8, 3)), (8, 8, 3)) != first
    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE", "1")
    assert aot_cache.key(_program(), (6, 6, 3)) != first
    monkeypatch.delenv("TORCHINDUCTOR_MAX_AUTOTUNE")
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "direct_conv.cpp").write_text("// another kernel")
    monkeypatch.setattr(aot_cache, "KERNELS", kernels)
    assert aot_cache.key(_program(), (6, 6, 3)) != first


def _fake_compile(calls: list, why: str):
    def compile_aot(program, program_path, shape, path):
        calls.append(path)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"package %d" % len(calls))
        return 12.5, why

    return compile_aot


def test_a_complete_package_is_kept_and_given_back_without_a_compile(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(to_torch, "_compile_aot", _fake_compile(calls, ""))
    program = _program()
    assert to_torch._cached_aot(program, None, (6, 6, 3), tmp_path / "a" / "model_aoti.pt2") == (12.5, "", False)  # noqa: SLF001
    assert to_torch._cached_aot(program, None, (6, 6, 3), tmp_path / "b" / "model_aoti.pt2") == (12.5, "", True)  # noqa: SLF001
    assert len(calls) == 1 and (tmp_path / "b" / "model_aoti.pt2").read_bytes() == b"package 1"
    # another program is compiled, not given the first one's package
    assert to_torch._cached_aot(_program(scale=2.0), None, (6, 6, 3), tmp_path / "c" / "model_aoti.pt2")[2] is False  # noqa: SLF001
    assert len(calls) == 2


@pytest.mark.parametrize("why, kept", [(to_torch.NO_CONVOLUTION, True), ("not built (the batch-1 compile took over 1800 s)", False)])
def test_only_a_complete_package_is_kept(tmp_path, monkeypatch, why, kept):
    """A package without its batch-1 model because the compile failed is compiled again next time; one
    without it because the program has no convolution to rewrite is complete."""
    calls = []
    monkeypatch.setattr(to_torch, "_compile_aot", _fake_compile(calls, why))
    program = _program()
    for folder in ("a", "b"):
        to_torch._cached_aot(program, None, (6, 6, 3), tmp_path / folder / "model_aoti.pt2")  # noqa: SLF001
    assert len(calls) == (1 if kept else 2)
