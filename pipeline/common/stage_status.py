"""A stage's last outcome, where that outcome may be no artifact at all: built, or why not.

The native stage writes one (`ModelPaths.native_status`) at the end of every run: `verify` then compares
the native model where it was built and says why not where it was not, without running the stage again,
and Make has a file that stands for "tried" whatever came of it. Written atomically, as plain JSON;
tied to the model file by its SHA-256, so an outcome recorded for another model is never read as this one's.

A failure already recorded is not written again: the file keeps its time, so a `make native` that fails
as the last run did leaves `verify.json` (which waits on the file) up to date. Make's own rule for the
file touches it after its recipe, as it must for a target whose prerequisites changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.common.atomic import write_text

NOT_BUILT = "not built — "  # how a backend whose stage built nothing for the model is reported, before the reason


@dataclass(frozen=True)
class StageStatus:
    stage: str
    model_sha256: str
    built: bool
    reason: str = ""  # why nothing was built: the stage's one-line error

    def write(self, path: Path) -> None:
        """Record this outcome at `path` — unless it is a failure `path` already records (see the module docstring)."""
        if not self.built and StageStatus.read(path) == self:
            return
        write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> StageStatus | None:
        """The status at `path`; None where there is none or it cannot be read (a stage then counts as not tried)."""
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def not_built(path: Path, model_sha256: str) -> str | None:
    """Why the stage recorded at `path` built nothing for the model of SHA-256 `model_sha256`; None where it
    built it, was never tried on that model, or its record is unreadable."""
    status = StageStatus.read(path)
    if status is None or status.built or status.model_sha256 != model_sha256:
        return None
    return status.reason


def built(path: Path, model_sha256: str) -> bool:
    """Whether the stage recorded at `path` built its artifacts for the model of SHA-256 `model_sha256`
    (a folder left from another model, or from before the record, is not taken for this model's)."""
    status = StageStatus.read(path)
    return status is not None and status.built and status.model_sha256 == model_sha256
