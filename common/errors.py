"""Errors the command line turns into one-line messages and documented exit codes.

Exit codes (README, "Exit codes"): 0 done, 2 bad usage or flags, 3 environment problem,
4 checkpoint problem, 5 numerical failure, 130 interrupted.
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


EXIT_INTERRUPTED = 130
