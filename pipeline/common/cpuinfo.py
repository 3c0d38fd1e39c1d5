"""What /proc/cpuinfo says about this processor: its name for the bench's report, its feature flags for
the convolution kernel's build ("" where the file cannot be read, as off Linux)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def field(name: str) -> str:
    """The value of the first `name : value` line of /proc/cpuinfo; "" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def has_avx512() -> bool:
    """Whether this processor has AVX-512 (the foundation instructions our convolution kernel is written in)."""
    return "avx512f" in field("flags").split()
