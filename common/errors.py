"""Errors the command line turns into one-line messages and documented exit codes.

Exit codes (README, "Exit codes"): 0 done, 2 bad usage or flags, 3 environment problem,
4 checkpoint problem, 5 numerical failure, 6 a file could not be written (disk full, quota, read-only,
I/O error), 130 interrupted.
"""

from __future__ import annotations


class PPOError(Exception):
    """Base class: a problem the user can fix, reported as one line with ``exit_code``."""

    exit_code = 1


class UsageError(PPOError):
    """A flag value or combination is invalid (exit code 2)."""

    exit_code = 2


class EnvironmentProblem(PPOError):
    """The environment id is unknown, unsupported by this entry point, or cannot be built (exit code 3)."""

    exit_code = 3


class CheckpointError(PPOError):
    """A checkpoint file is missing, unreadable, not ours, or does not match the environment (exit code 4)."""

    exit_code = 4


class NumericalError(PPOError):
    """Training produced non-finite values repeatedly and was stopped (exit code 5)."""

    exit_code = 5


class WriteFailure(PPOError):
    """A file of the run (checkpoint, metrics, TensorBoard events, evaluation) could not be written: the disk
    is full (ENOSPC), a quota is exceeded (EDQUOT), the file system is read-only (EROFS) or failed (EIO), ...
    The message names the file and the last good checkpoint (exit code 6).

    Attributes:
        path: the file that could not be written.
        reason: the operating system's words for it ("No space left on device").
    """

    exit_code = 6

    def __init__(self, message: str, path: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


def write_failure(path: object, error: BaseException) -> WriteFailure:
    """A :class:`WriteFailure` for ``error`` (an OSError, or torch's RuntimeError of a failed stream) raised
    while writing ``path``: "could not write PATH (No space left on device)"."""
    text = str(error).strip()
    reason = getattr(error, "strerror", None) or (text.splitlines()[0][:200] if text else type(error).__name__)
    return WriteFailure(f"could not write '{path}' ({reason})", str(path), reason)


EXIT_INTERRUPTED = 130
