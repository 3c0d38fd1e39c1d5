"""The pipeline's one exception family, caught once by the CLI.

Exit codes: 0 success, 1 a check or gate failed (`CheckFailed`), 2 bad input or usage (`BadInput`).
"""


class PipelineError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 2


class BadInput(PipelineError):
    """A file, folder or option the user gave cannot be used. The message says what to do."""

    exit_code = 2


class ChecksumMismatch(BadInput):
    """A fetched or mirrored file does not have its published SHA-256."""


class NotApplicable(PipelineError):
    """A backend or check does not apply to this model (e.g. the hand-written ResNet8)."""

    exit_code = 2


class CheckFailed(PipelineError):
    """A comparison or quality gate failed: the conversion is not proven equal, or not good enough."""

    exit_code = 1


class WorkerCrashed(PipelineError):
    """The TensorFlow process died by a signal without a word: a crash inside TensorFlow (SIGSEGV, SIGABRT)
    or a kill. `signal` names it ("SIGSEGV"), `step` says what the process was doing ("" if unknown)."""

    def __init__(self, message: str, signal: str, step: str):
        super().__init__(message)
        self.signal = signal
        self.step = step
