"""Matplotlib without a screen, and figures saved like every other artifact (temp file, then rename)."""

from __future__ import annotations

from pathlib import Path

from pipeline.common.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    # A font cache written by another matplotlib install can lack the math fonts of log-scale tick labels;
    # matplotlib then falls back to DejaVu Sans, rightly, but prints a line per glyph on stderr.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int = 110) -> None:
    """Lay out, write `fig` as PNG atomically to `path`, and free it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
