"""Every block of the README and of docs/ marked runnable (the line `<!-- runnable -->` right before it) runs word for
word, in order, from a folder laid out as a fresh clone after `make install` (the checkout's `.venv` and `tests/`
linked in): no documented command can rot. A bash block must exit 0; a Python block runs with `.venv/bin/python`."""

from __future__ import annotations

import re
import subprocess


import helpers

MARKER = "<!-- runnable -->"
_BLOCK = re.compile(re.escape(MARKER) + r"\n```(bash|python)\n(.*?)\n```", re.S)


def runnable_blocks() -> list[tuple[str, str, str]]:
    """(file, language, code) of every marked block, README first, then docs/ in name order."""
    files = [helpers.ROOT / "README.md", *sorted((helpers.ROOT / "docs").glob("*.md"))]
    return [(path.relative_to(helpers.ROOT).as_posix(), language, code)
            for path in files for language, code in _BLOCK.findall(path.read_text())]


def test_the_marker_is_followed_by_a_block_every_time():
    """A marker that is not right before a ```bash or ```python block would leave that block unrun, in silence."""
    for path in [helpers.ROOT / "README.md", *sorted((helpers.ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert text.count(MARKER) == len(_BLOCK.findall(text)), path.name
    assert runnable_blocks(), "the README shows no runnable block"


def test_every_runnable_block_runs_as_written(tmp_path):
    for name in (".venv", "tests", "pipeline", "Makefile", "pyproject.toml"):
        (tmp_path / name).symlink_to(helpers.ROOT / name)
    for where, language, code in runnable_blocks():
        command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [str(tmp_path / ".venv" / "bin" / "python"), "-c", code]
        completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert completed.returncode == 0, f"{where}, block:\n{code}\n--- stderr:\n{completed.stderr[-3000:]}"
