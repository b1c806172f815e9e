"""The run directory: config.json, metrics.csv, episodes.csv and TensorBoard events."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from ppo.config import PPOConfig

METRIC_COLUMNS = ("iteration", "global_step", "wall_time_s", "sps", "episodic_return_mean",
                  "episodic_length_mean", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                  "explained_variance", "learning_rate")
EPISODE_COLUMNS = ("global_step", "wall_time_s", "return", "length")


def _keep_rows_up_to(path: Path, columns: tuple[str, ...], global_step: int) -> None:
    """Drop rows logged after ``global_step`` (a resumed run repeats them), keeping the header."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(float(row["global_step"])) <= global_step]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


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
    """

    def __init__(self, run_dir: Path, config: PPOConfig, resume_step: int | None = None,
                 tensorboard: bool = True, resolved: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps({**dataclasses.asdict(config), **(resolved or {})},
                                                             indent=2) + "\n")
        metrics_path, episodes_path = self.run_dir / "metrics.csv", self.run_dir / "episodes.csv"
        if resume_step is not None:
            _keep_rows_up_to(metrics_path, METRIC_COLUMNS, resume_step)
            _keep_rows_up_to(episodes_path, EPISODE_COLUMNS, resume_step)
        self._metrics_file = self._open(metrics_path, METRIC_COLUMNS)
        self._episodes_file = self._open(episodes_path, EPISODE_COLUMNS)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # a queue of 1000 events: add_scalar rarely waits for the writer thread (29 against 47 us a call)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step, max_queue=1000)

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
        writer.writerow({key: _format(metrics.get(key, float("nan"))) for key in METRIC_COLUMNS})
        handle.flush()
        if self.writer is not None:
            step = metrics["global_step"]
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
        for global_step, wall_time, episode_return, length in episodes:
            writer.writerow({"global_step": global_step, "wall_time_s": f"{wall_time:.3f}",
                             "return": f"{episode_return:.6g}", "length": length})
            if self.writer is not None:
                self.writer.add_scalar("charts/episodic_return", episode_return, global_step)
                self.writer.add_scalar("charts/episodic_length", length, global_step)
        handle.flush()

    def close(self) -> None:
        """Flush and close every file."""
        for handle, _ in (self._metrics_file, self._episodes_file):
            handle.close()
        if self.writer is not None:
            self.writer.close()
