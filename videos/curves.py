"""The learning curve of a run: episodic return against environment steps, as a PNG (matplotlib, Agg)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from common.files import atomic_write

CURVE_FILE = "learning_curve.png"


def read_episodes(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(global_steps [N] int64, returns [N] float64)`` of the finished episodes in an ``episodes.csv``.

    A missing or empty file gives ``N = 0``; rows that cannot be parsed (a line cut short by a crash) are
    skipped.
    """
    steps: list[int] = []
    returns: list[float] = []
    path = Path(path)
    if path.is_file():
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    step, value = int(float(row["global_step"])), float(row["return"])
                except (KeyError, TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    steps.append(step)
                    returns.append(value)
    return np.asarray(steps, dtype=np.int64), np.asarray(returns, dtype=np.float64)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of ``values [N]`` over ``window`` points (fewer at the start): ``[N]``."""
    if len(values) == 0:
        return values.astype(np.float64)
    window = max(1, int(window))
    sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def default_window(num_episodes: int) -> int:
    """Smoothing window: a tenth of the episodes, between 1 and 20 (the window of the progress bar's
    recent return; a wider one lags far behind when many short early episodes come first)."""
    return int(min(20, max(1, num_episodes // 10)))


def plot_learning_curve(run_dir: str | os.PathLike, window: int | None = None) -> Path:
    """Write ``run_dir/learning_curve.png`` from ``run_dir/episodes.csv``.

    Episodic return (raw, unscaled) against environment steps (summed over envs): every episode as a thin
    transparent line and their trailing moving average (``window`` episodes, default
    :func:`default_window`). The title names the environment id and seed from ``run_dir/config.json``.
    With no finished episode yet the PNG says so. The PNG is written to a temporary file and renamed.

    Args:
        run_dir: a run directory (``episodes.csv``, ``config.json``; either may be missing).
        window: smoothing window in episodes.

    Returns:
        The path of the PNG.

    Raises:
        OSError: ``run_dir`` cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    steps, returns = read_episodes(run_dir / "episodes.csv")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    title = str(config.get("environment_id", run_dir.name))
    if "seed" in config:
        title += f", seed {config['seed']}"

    # Figure + Agg canvas, not pyplot: no global state, no backend switch for the caller.
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel("environment steps")
    axes.set_ylabel("episodic return")
    if len(returns) == 0:
        axes.text(0.5, 0.5, "no finished episodes yet", ha="center", va="center", transform=axes.transAxes,
                  fontsize=14, color="0.4")
        axes.set_xticks([])
        axes.set_yticks([])
    else:
        window = window or default_window(len(returns))
        count = len(returns)
        axes.plot(steps, returns, color="tab:blue", alpha=0.3, linewidth=0.7,
                  marker="." if count <= 100 else None, label=f"{count} episode{'s' * (count != 1)}")
        axes.plot(steps, moving_average(returns, window), color="tab:blue", linewidth=2.0,
                  label=f"moving average over {window} episode{'s' * (window != 1)}")
        axes.legend(loc="best")
        axes.grid(alpha=0.3)
    figure.tight_layout()

    return atomic_write(run_dir / CURVE_FILE, lambda temporary: figure.savefig(temporary, format="png"))
