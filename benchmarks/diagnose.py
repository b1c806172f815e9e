"""Training diagnostics of several runs side by side, as one PNG: why does one seed fail where another learns?

    python -m benchmarks.diagnose RUN_DIR... --output docs/results/diagnostics/NAME.png --title T --note "what it shows"

Six panels against environment steps, one line per run: the training episodic return (mean of the episodes
that ended in the iteration), the policy entropy, the approximate KL divergence of each update, the clip
fraction, the explained variance of the value function and the value loss (all from the run's
``metrics.csv``, one row per iteration). A line's label is the run's directory name and its final deterministic
evaluation (``evaluation.json``), so the failing seed is easy to pick out. Typical readings: entropy
falling to its floor while the return is still low (the standard deviation collapsed before the task was
solved), a KL and clip fraction that stay high (policy steps too large), explained variance far below 1
(the value function, hence the advantages, is poor).

Beside the PNG goes ``NAME.json``: the title, the note, and for each run the command that reproduces it
(``python main.py --environment-id ENV --seed S`` plus the flags whose values differ from today's preset).
``python -m benchmarks.results render`` lists these figures in ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.files import atomic_write  # noqa: E402

PANELS = (("episodic_return_mean", "training episodic return"), ("entropy", "policy entropy (nats)"),
          ("approx_kl", "approx KL per update"), ("clipfrac", "clip fraction"),
          ("explained_variance", "explained variance"), ("value_loss", "value loss"))


def read_metrics(run_dir: Path) -> dict[str, list[float]]:
    """The columns of ``run_dir/metrics.csv`` as float lists (an empty cell is NaN).

    Raises:
        FileNotFoundError: the run directory has no ``metrics.csv``.
    """
    columns: dict[str, list[float]] = {}
    with (run_dir / "metrics.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, text in row.items():
                try:
                    value = float(text) if text not in ("", None) else math.nan
                except ValueError:
                    value = math.nan
                columns.setdefault(key, []).append(value)
    return columns


def evaluation_mean(run_dir: Path) -> float | None:
    """The final deterministic evaluation's mean return (``evaluation.json``), or None without one."""
    try:
        return float(json.loads((run_dir / "evaluation.json").read_text())["mean_return"])
    except (OSError, ValueError, KeyError):
        return None


def run_label(run_dir: Path) -> str:
    """``"RUN_NAME: evaluation M"`` (the evaluation only when the run has one)."""
    mean = evaluation_mean(run_dir)
    return run_dir.name if mean is None else f"{run_dir.name}: evaluation {mean:.1f}"


def run_command(run_dir: Path) -> str:
    """The command that reproduces the run of ``run_dir``: its entry script, environment and seed, and a flag for
    each hyperparameter whose value differs from today's preset of that environment.

    Raises:
        FileNotFoundError: the run directory has no ``config.json``.
    """
    from benchmarks.results import detect_family, expected_config, hyperparameters
    config = json.loads((run_dir / "config.json").read_text())
    environment_id = config["environment_id"]
    family = detect_family(environment_id)
    preset, _names = expected_config(environment_id, family)
    flags = []
    for name, value in hyperparameters(config).items():
        if value == preset.get(name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            flags.append(f"{flag} {value}")
    script = "main_atari.py" if family == "atari" else "main.py"
    return " ".join([f"python {script} --environment-id {environment_id} --seed {config['seed']}",
                     f"--run-name {run_dir.name}", *flags])


def plot(run_dirs: list[Path], output: Path, title: str | None = None, note: str = "") -> Path:
    """Write the six diagnostic panels of ``run_dirs`` to ``output`` (PNG, written to a temporary file and renamed)
    and, beside it, ``output`` with the suffix ``.json``: ``{"title", "note", "runs": [{"name", "command",
    "evaluation"}]}``.

    Raises:
        FileNotFoundError: a run directory has no ``metrics.csv``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 7), constrained_layout=True)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3).ravel()
    for run_dir in run_dirs:
        metrics, label = read_metrics(run_dir), run_label(run_dir)
        for axis, (column, _name) in zip(axes, PANELS):
            if column in metrics:  # NaN cells left out: with few envs, most iterations end no episode
                points = [(step, value) for step, value in zip(metrics["global_step"], metrics[column])
                          if not math.isnan(value)]
                axis.plot([step for step, _ in points], [value for _, value in points], label=label, linewidth=1.2)
    for axis, (column, name) in zip(axes, PANELS):
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("environment steps", fontsize=8)
        axis.grid(alpha=0.3)
        if column in ("approx_kl", "value_loss"):
            axis.set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.suptitle(title or run_dirs[0].name)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda temporary: figure.savefig(temporary, format="png", dpi=80))
    runs = [{"name": run_dir.name, "command": run_command(run_dir), "evaluation": evaluation_mean(run_dir)}
            for run_dir in run_dirs]
    description = {"title": title or run_dirs[0].name, "note": note, "runs": runs}
    atomic_write(output.with_suffix(".json"),
                 lambda temporary: Path(temporary).write_text(json.dumps(description, indent=1) + "\n"))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (metrics.csv, config.json)")
    parser.add_argument("--output", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", help="figure title (default: the first run's directory name)")
    parser.add_argument("--note", default="", help="what the figure shows (docs/results.md prints it below)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo ids are made once to read their action space
    try:
        print(plot(args.run_dirs, args.output, args.title, args.note))
    except FileNotFoundError as error:
        print(f"error: {error.filename}: no such file (is it a run directory?)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
