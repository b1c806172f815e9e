"""The run directory: claiming and locking it, files written into it atomically, the learning curve, and the
warnings of what could not be written there (a full disk must not end a training run for a video)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from common.errors import UsageError, write_failure
from common.files import atomic_write
from ppo.actions import record_videos
from ppo.config import PPOConfig
from ppo.entry import EntryPoint

def default_run_name(config: PPOConfig) -> str:
    """``ENV__SEED__YYYYmmdd-HHMMSS`` (``/`` of the id as ``_``), the run name when ``--run-name`` is not given."""
    return f"{config.environment_id.replace('/', '_')}__{config.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(config: PPOConfig, resume_dir: Path | None) -> Path:
    """The run directory: a resumed run's own (stale temporary files removed), or a new one that no other run
    has. Only ``--resume`` writes into an existing run directory: a ``--run-name`` whose directory exists is
    refused; without ``--run-name`` the directory is :func:`default_run_name`, with ``-2``, ``-3``, ... added
    when another run took that name (two runs started in the same second). Directories are claimed with an
    exclusive ``mkdir``, so concurrent runs (also several ranks' worth of runs) never share one.

    The run holds an exclusive lock on ``run_dir/.lock`` (its pid inside) until it ends, so a ``--resume`` of a
    run that is still going is refused; the kernel drops the lock of a process that dies, ``kill -9`` included.

    Raises:
        UsageError: the ``--run-name`` directory exists (naming ``--resume``), another live run holds the
            directory, or the directory cannot be created or written.
    """
    if resume_dir is not None:
        # Temporary files of a write cut short by kill -9 (checkpoints, config.json, a resume's trimmed CSVs;
        # the files themselves are intact). Locked first: a live run's own temporary files are not stale.
        lock_run_dir(resume_dir)
        for stale in [*(resume_dir / "checkpoints").glob(".*.tmp.*"), *resume_dir.glob(".*.tmp.*")]:
            stale.unlink(missing_ok=True)
        return resume_dir
    output_dir = Path(config.output_dir)
    run_dir = output_dir / (config.run_name or default_run_name(config))
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        if config.run_name is not None:
            try:
                run_dir.mkdir()
            except FileExistsError:
                latest = run_dir / "checkpoints" / "latest.pt"
                target = str(latest) if latest.is_file() else "CHECKPOINT"
                raise UsageError(f"run directory '{run_dir}' already exists; continue that run with --resume "
                                 f"{target}, or choose another --run-name") from None
        else:
            base, suffix = run_dir.name, 1
            while True:
                try:
                    run_dir.mkdir()
                    break
                except FileExistsError:
                    suffix += 1
                    run_dir = output_dir / f"{base}-{suffix}"
        lock_run_dir(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write the run directory '{run_dir}' ({error.strerror}); choose another "
                         "--output-dir") from error
    return run_dir


_RUN_DIR_LOCKS: list[int] = []  # descriptors of the run-directory locks this process holds


def lock_run_dir(run_dir: Path) -> None:
    """Take the exclusive advisory lock ``run_dir/.lock`` (flock) for the rest of the run; :func:`run_dir_locks`
    releases it, the kernel does when the process dies. Where flock is missing or unsupported (not POSIX, some
    network file systems) the run goes on unlocked.

    Raises:
        UsageError: another live process holds the lock.
    """
    try:
        import fcntl
    except ImportError:
        return
    descriptor = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() if isinstance(
            error, BlockingIOError) else ""
        os.close(descriptor)
        if isinstance(error, BlockingIOError):
            raise UsageError(f"run directory '{run_dir}' is in use by another run (pid {holder or 'unknown'}); "
                             "wait for it to end, or stop it first") from None
        return
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is only for the message of a refused run
    _RUN_DIR_LOCKS.append(descriptor)


@contextlib.contextmanager
def run_dir_locks() -> Iterator[None]:
    """Release the run-directory locks taken inside (:func:`lock_run_dir`) when the block ends."""
    held = len(_RUN_DIR_LOCKS)
    try:
        yield
    finally:
        while len(_RUN_DIR_LOCKS) > held:
            os.close(_RUN_DIR_LOCKS.pop())


class Warnings:
    """Warnings on stderr, each kind once per run (a full disk fails every curve and video after the first)."""

    def __init__(self) -> None:
        self.given: set[str] = set()

    def __call__(self, kind: str, message: str) -> None:
        if kind not in self.given:
            self.given.add(kind)
            print(f"warning: {message}", file=sys.stderr, flush=True)


def record_run_videos(entry: EntryPoint, config: PPOConfig, agent: torch.nn.Module, run_dir: Path, stage: str,
                   warn: Warnings) -> None:
    """:func:`ppo.actions.record_videos`; a video that cannot be written (disk full, ...) is a warning, once,
    and the run goes on."""
    try:
        record_videos(entry, config, agent, run_dir, stage)
    except (OSError, RuntimeError) as error:
        failure = write_failure(run_dir / "videos", error)
        warn("videos", f"could not write the {stage} videos under '{failure.path}' ({failure.reason}); the run "
                       "goes on without them")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as one line of JSON, atomically.

    Raises:
        WriteFailure: the file cannot be written.
    """
    try:
        atomic_write(path, lambda temporary: Path(temporary).write_text(json.dumps(data) + "\n"))
    except OSError as error:
        raise write_failure(path, error) from error


def learning_curve_writer(run_dir: Path, finished: Callable[[], bool], min_interval_s: float = 60.0,
                           warn: Callable[[str, str], None] | None = None) -> Callable[[Path], None]:
    """A :attr:`Trainer.on_checkpoint` hook that redraws ``learning_curve.png`` when episodes.csv changed:
    during training at most once per ``min_interval_s`` seconds (a plot costs tenths of a second, which
    short runs would feel), and always once ``finished()`` (the run ended or was interrupted): that last one is
    drawn by :func:`draw_deferred_curves` after the run's last line."""
    last_stamp: tuple[int, int] | None = None
    written = False
    last_time = time.monotonic()

    def write(_checkpoint: Path) -> None:
        nonlocal last_stamp, written, last_time
        if not finished() and time.monotonic() - last_time < min_interval_s:
            return
        episodes = run_dir / "episodes.csv"
        stamp = (episodes.stat().st_size, episodes.stat().st_mtime_ns) if episodes.exists() else None
        if written and stamp == last_stamp:
            return
        last_time = time.monotonic()

        def draw() -> None:
            from videos.curves import plot_learning_curve  # lazily: matplotlib stays off the training path
            try:
                plot_learning_curve(run_dir)
            except Exception as error:  # noqa: BLE001 - a missing plot must not end a training run
                failure = write_failure(run_dir / "learning_curve.png", error)
                (warn or Warnings())("curve", f"could not write '{failure.path}' ({failure.reason}); training goes on")
        if finished():  # matplotlib's import and the drawing (about 0.5 s) wait until the evaluation is printed
            _DEFERRED_CURVES.append(draw)
        else:
            draw()
        last_stamp, written = stamp, True

    return write


# The final drawings of :func:`learning_curve_writer`, made by :func:`ppo.run.run_training` once the run has printed its
# last line (the evaluation): the result is on the screen half a second sooner, the command takes as long.
_DEFERRED_CURVES: list[Callable[[], None]] = []


def draw_deferred_curves() -> None:
    """Draw the learning curves :func:`learning_curve_writer` kept for the end of the run."""
    while _DEFERRED_CURVES:
        _DEFERRED_CURVES.pop(0)()
