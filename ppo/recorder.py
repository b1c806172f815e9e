"""The run directory: config.json, metrics.csv, episodes.csv and TensorBoard events."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from common.errors import write_failure
from common.files import atomic_write
from ppo.config import PPOConfig

METRIC_COLUMNS = ("iteration", "global_step", "wall_time_s", "sps", "episodic_return_mean",
                  "episodic_length_mean", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                  "explained_variance", "learning_rate")
EPISODE_COLUMNS = ("global_step", "wall_time_s", "return", "length")


def _keep_rows_up_to(path: Path, columns: tuple[str, ...], global_step: int) -> None:
    """Drop rows logged after ``global_step`` (a resumed run repeats them), keeping the header. A last line
    without its line end (cut short by ``kill -9``) and rows that cannot be parsed are dropped too. The file
    is replaced atomically, so a kill during the resume itself loses nothing.

    Raises:
        OSError: the file cannot be read or written.
    """
    if not path.exists():
        return
    with path.open(newline="") as handle:
        text = handle.read()
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    rows = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        try:
            if int(float(row["global_step"])) <= global_step and None not in row.values():
                rows.append(row)
        except (KeyError, TypeError, ValueError):
            continue

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into :class:`common.errors.WriteFailure` naming it."""
    try:
        yield
    except OSError as error:
        raise write_failure(path, error) from error


def _quiet_tensorboard_thread() -> None:
    """TensorBoard's writer thread dies on a write error (disk full) and the error surfaces again in the main
    thread at the next ``add_scalar``, ``flush`` or ``close``, where it becomes a one-line WriteFailure; keep
    the thread's own traceback off stderr (a hook in front of whatever ``threading.excepthook`` is now)."""
    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, Exception):
            return
        previous(args)

    hook.quiets_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


class RunRecorder:
    """Writes one run's logs under ``run_dir``.

    ``metrics.csv`` gets one row per iteration (:data:`METRIC_COLUMNS`), ``episodes.csv`` one row per
    finished training episode with its raw return, ``tensorboard/`` the same scalars. Given
    ``resume_step``, rows after that step are dropped and TensorBoard purges its events after it, so the
    curves carry on from the checkpoint without duplicates. ``config.json`` holds the config and the
    ``resolved`` choices made at start-up (for example ``resolved_learner``).

    Every method raises :class:`common.errors.WriteFailure` (naming the file) when a file cannot be written:
    disk full, quota exceeded, read-only file system, I/O error.
    """

    def __init__(self, run_dir: Path, config: PPOConfig, resume_step: int | None = None,
                 tensorboard: bool = True, resolved: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self._metrics_file = self._episodes_file = None
        self.writer = None
        config_text = json.dumps({**dataclasses.asdict(config), **(resolved or {})}, indent=2) + "\n"
        with _writing(self.run_dir / "config.json"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.run_dir / "config.json", lambda temporary: Path(temporary).write_text(config_text))
        self.metrics_path, self.episodes_path = self.run_dir / "metrics.csv", self.run_dir / "episodes.csv"
        self.tensorboard_dir = self.run_dir / "tensorboard"
        if resume_step is not None:
            for path, columns in ((self.metrics_path, METRIC_COLUMNS), (self.episodes_path, EPISODE_COLUMNS)):
                with _writing(path):
                    _keep_rows_up_to(path, columns, resume_step)
        with _writing(self.metrics_path):
            self._metrics_file = self._open(self.metrics_path, METRIC_COLUMNS)
        with _writing(self.episodes_path):
            self._episodes_file = self._open(self.episodes_path, EPISODE_COLUMNS)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            _quiet_tensorboard_thread()
            with _writing(self.tensorboard_dir):
                # a queue of 1000 events: add_scalar rarely waits for the writer thread (29 against 47 us a call)
                self.writer = SummaryWriter(str(self.tensorboard_dir), purge_step=resume_step, max_queue=1000)

    @staticmethod
    def _open(path: Path, columns: tuple[str, ...]):
        new = not path.exists() or path.stat().st_size == 0
        handle = path.open("a", newline="")
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new:
            writer.writeheader()
        return handle, writer

    def log_iteration(self, metrics: dict[str, Any]) -> None:
        """One ``metrics.csv`` row; keys are :data:`METRIC_COLUMNS` (NaN is written as an empty cell)."""
        handle, writer = self._metrics_file
        with _writing(self.metrics_path):
            writer.writerow({key: _format(metrics.get(key, float("nan"))) for key in METRIC_COLUMNS})
            handle.flush()
        if self.writer is not None:
            step = metrics["global_step"]
            with _writing(self.tensorboard_dir):
                for key in METRIC_COLUMNS[3:]:
                    value = metrics.get(key)
                    if value is not None and not (isinstance(value, float) and math.isnan(value)):
                        section = "charts" if key.startswith("episodic") or key in ("sps", "learning_rate") \
                            else "losses"
                        self.writer.add_scalar(f"{section}/{key}", value, step)

    def log_episodes(self, episodes: list[tuple[int, float, float, int]]) -> None:
        """Rows ``(global_step, wall_time_s, return, length)`` of finished episodes."""
        if not episodes:
            return
        handle, writer = self._episodes_file
        with _writing(self.episodes_path):
            for global_step, wall_time, episode_return, length in episodes:
                writer.writerow({"global_step": global_step, "wall_time_s": f"{wall_time:.3f}",
                                 "return": f"{episode_return:.6g}", "length": length})
            handle.flush()
        if self.writer is not None:
            with _writing(self.tensorboard_dir):
                for global_step, _wall_time, episode_return, length in episodes:
                    self.writer.add_scalar("charts/episodic_return", episode_return, global_step)
                    self.writer.add_scalar("charts/episodic_length", length, global_step)

    def sync(self) -> None:
        """Put ``metrics.csv`` and ``episodes.csv`` on the disk (fsync), so that a checkpoint written next is
        never ahead of its rows, even after a power cut (a kill alone loses nothing written).

        Raises:
            WriteFailure: a file could not be written.
        """
        for path, opened in ((self.metrics_path, self._metrics_file), (self.episodes_path, self._episodes_file)):
            if opened is not None:
                with _writing(path):
                    opened[0].flush()
                    os.fsync(opened[0].fileno())

    def close(self, quiet: bool = False) -> None:
        """Flush and close every file; ``quiet`` (an error is already on its way) swallows write errors.

        Raises:
            WriteFailure: a file could not be flushed (unless ``quiet``).
        """
        first: BaseException | None = None
        targets = [(self.metrics_path, self._metrics_file and self._metrics_file[0]),
                   (self.episodes_path, self._episodes_file and self._episodes_file[0]),
                   (self.tensorboard_dir, self.writer)]
        for path, target in targets:
            if target is None:
                continue
            try:
                with _writing(path):
                    try:
                        target.flush()  # TensorBoard: raises what its writer thread met (close() would not)
                    finally:
                        target.close()
            except Exception as error:  # noqa: BLE001 - close every file, report the first failure
                first = first or error
        self._metrics_file = self._episodes_file = self.writer = None
        if first is not None and not quiet:
            raise first
