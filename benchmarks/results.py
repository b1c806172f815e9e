"""The results table, ``docs/results.md``, from training runs, in two steps.

    python -m benchmarks.results collect runs/cartpole-s1 runs/cartpole-s2 ...   # one record per run
    python -m benchmarks.results render --readme README.md                       # docs/results.md + README rows

``collect`` reads a run directory's ``config.json``, ``evaluation.json`` and ``metrics.csv`` (training wall
time: the last ``wall_time_s``; steps: the last ``global_step``) and writes one small JSON record per run to
``docs/results/records/`` (run directories are not kept; records are), with its ``learning_curve.png`` beside
it. A record is named ``ENV__CONFIG__sSEED``: collecting a run of the same environment, hyperparameters and
seed again replaces it.

``render`` writes ``docs/results.md`` from every record whose hyperparameters are those the code gives
today for a plain ``python main.py --environment-id ENV --seed SEED`` (base defaults, family preset,
environment preset: ``ppo.presets.presets_for``). Records of a replaced preset, or of runs with other flags,
are left out (and named on stderr; ``--prune`` deletes them). With ``--readme FILE`` it also replaces the
short table between the ``results-table`` markers of that file; without, it prints that table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "docs" / "results"
RECORDS_DIR = RESULTS_DIR / "records"
DIAGNOSTICS_DIR = RESULTS_DIR / "diagnostics"  # written by python -m benchmarks.diagnose
RESULTS_PATH = ROOT / "docs" / "results.md"
README_BEGIN = "<!-- results-table:begin (python -m benchmarks.results render --readme README.md) -->"
README_END = "<!-- results-table:end -->"
# Settings that say how a run is carried out, not what it computes; used where ppo.config has no groups.
_RUN_ONLY = {"seed", "output_dir", "run_name", "progress", "num_threads", "checkpoint_interval", "capture_video",
             "use_gpu", "compile", "deterministic_torch", "eval_episodes", "manual_gradient", "learner"}
_RUN_GROUP = "System"  # the config fields of this group (ppo.config metadata) are run settings


# ---------------------------------------------------------------------------------------------- config
def _config_fields() -> dict[str, dataclasses.Field] | None:
    try:
        from ppo.config import PPOConfig
    except ImportError:
        return None
    return {f.name: f for f in dataclasses.fields(PPOConfig)}


def _is_run_setting(name: str, fields: dict[str, dataclasses.Field] | None) -> bool:
    if fields is not None and name in fields and "group" in fields[name].metadata:
        return fields[name].metadata["group"] == _RUN_GROUP or name == "seed"
    return name in _RUN_ONLY


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The values of ``config`` that decide what a run computes (not its seed, paths or threads), with the
    current defaults for fields it lacks and without fields the code no longer has."""
    fields = _config_fields()
    if fields is None:
        return {k: v for k, v in config.items() if not _is_run_setting(k, None)}
    values = {}
    for name, f in fields.items():
        if _is_run_setting(name, fields):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        values[name] = config.get(name, default)
    return values


def _short_hash(values: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def detect_family(environment_id: str) -> str:
    """The preset family of ``environment_id``: "atari" for ALE ids, else by its action space."""
    if environment_id.startswith("ALE/"):
        return "atari"
    if environment_id.startswith("brax/"):
        return "continuous"
    import gymnasium
    try:
        import shimmy  # noqa: F401 - registers dm_control/ ids
    except ImportError:
        pass
    env = gymnasium.make(environment_id)
    try:
        return "discrete" if isinstance(env.action_space, gymnasium.spaces.Discrete) else "continuous"
    finally:
        env.close()


def expected_config(environment_id: str, family: str) -> tuple[dict[str, Any], list[str]]:
    """``(hyperparameters, preset names)`` of a plain run of ``environment_id`` with today's code and presets."""
    from ppo.presets import presets_for
    fields = _config_fields() or {}
    values = {name: f.default for name, f in fields.items() if f.default is not dataclasses.MISSING}
    for _source, preset in presets_for(environment_id, family):
        values.update(preset)
    names = [name for name, present in _preset_tables(environment_id, family) if present]
    values["environment_id"] = environment_id
    return hyperparameters(values), names


def _preset_tables(environment_id: str, family: str) -> list[tuple[str, bool]]:
    from ppo.presets import load_presets
    data = load_presets()
    return [(family, family in data.get("family", {})),
            (environment_id, environment_id in data.get("environment", {}))]


# ---------------------------------------------------------------------------------------------- collect
def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count()}


def _versions() -> dict[str, str]:
    from importlib import metadata
    found = {}
    for package in ("gymnasium", "torch", "numpy", "mujoco", "ale-py"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _last_metrics_row(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows[-1]


def record_name(environment_id: str, config: dict[str, Any], seed: int) -> str:
    return f"{environment_id.replace('/', '_')}__{_short_hash(hyperparameters(config))}__s{seed}"


def collect(run_dirs: list[Path], records_dir: Path = RECORDS_DIR) -> list[Path]:
    """Write one record per run directory (and copy its learning curve); returns the record paths."""
    records_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo ids are made once to read their action space
    written = []
    machine, versions = _machine(), _versions()
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            continue
        missing = [name for name in ("config.json", "evaluation.json", "metrics.csv") if not (run_dir / name).exists()]
        if missing:
            print(f"skipped {run_dir}: no {', '.join(missing)} (an unfinished run, or --eval-episodes 0)",
                  file=sys.stderr)
            continue
        config = json.loads((run_dir / "config.json").read_text())
        evaluation = json.loads((run_dir / "evaluation.json").read_text())
        last = _last_metrics_row(run_dir / "metrics.csv")
        environment_id, seed = config["environment_id"], int(config["seed"])
        name = record_name(environment_id, config, seed)
        curve = None
        if (run_dir / "learning_curve.png").exists():
            curve = f"{name}.png"
            shutil.copyfile(run_dir / "learning_curve.png", records_dir / curve)
        record = {"environment_id": environment_id, "seed": seed, "family": detect_family(environment_id),
                  "run_name": run_dir.name,
                  "evaluation": evaluation,
                  "training": {"global_step": int(float(last["global_step"])),
                               "wall_time_s": round(float(last["wall_time_s"]), 1)},
                  "learning_curve": curve, "versions": versions, "machine": machine, "config": config}
        path = records_dir / f"{name}.json"
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        written.append(path)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {environment_id} seed {seed}, "
              f"evaluation {evaluation['mean_return']:.1f}")
    return written


# ---------------------------------------------------------------------------------------------- render
def load_records(records_dir: Path = RECORDS_DIR) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text())) for path in sorted(records_dir.glob("*.json"))]


def classify(records: list[tuple[Path, dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[Path]]:
    """``(current records with "preset" and "preset_names" added, paths of the others)``."""
    current, stale = [], []
    expected: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {}
    for path, record in records:
        key = (record["environment_id"], record["family"])
        if key not in expected:
            expected[key] = expected_config(*key)
        values, names = expected[key]
        if hyperparameters(record["config"]) == values:
            current.append({**record, "preset": _short_hash(values), "preset_names": names})
        else:
            stale.append(path)
    return current, stale


def _steps(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 100 else f"{s:,.0f} s"


def _published(environment_id: str) -> tuple[str, str]:
    from ppo.presets import published_result
    published = published_result(environment_id)
    if not published:
        return "", ""
    return f"{published['mean_return']:g} at {_steps(int(published['steps']))}", published.get("source", "")


# The worst seed must reach this fraction of the published return (for a negative return, a cost: at most
# 1 / WORST_FRACTION times the published cost).
WORST_FRACTION = 0.7


def target_verdict(environment_id: str, median: float, worst: float, budget: int) -> str:
    """"met" when the median evaluation return is at least the published PPO number at the same budget and the
    worst seed reaches :data:`WORST_FRACTION` of it; otherwise what falls short; "" without a published number."""
    from ppo.presets import published_result
    published = published_result(environment_id)
    if not published or int(published["steps"]) != budget:
        return ""
    target = float(published["mean_return"])
    worst_target = target * WORST_FRACTION if target >= 0 else target / WORST_FRACTION
    misses = ([f"median < {target:g}"] if median < target else []) + \
        ([f"worst < {worst_target:.0f}"] if worst < worst_target else [])
    return "met" if not misses else "no: " + ", ".join(misses)


def _command(record: dict[str, Any]) -> str:
    script = "main_atari.py" if record["family"] == "atari" else "main.py"
    return f"python {script} --environment-id {record['environment_id']} --seed {record['seed']}"


def _preset_label(record: dict[str, Any]) -> str:
    c = record["config"]
    return (f"`{record['preset']}`: {' + '.join(record['preset_names']) or 'defaults'} "
            f"({c['num_envs']} envs x {c['num_steps_collected']} steps, {c['num_epochs']} epochs)")


def _by_environment(current: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(current, key=lambda r: (r["environment_id"], r["seed"])):
        groups.setdefault(record["environment_id"], []).append(record)
    return groups


def summary_rows(current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per environment: preset, budget, seeds, median and worst evaluation mean, published number."""
    rows = []
    for environment_id, records in _by_environment(current).items():
        means = [r["evaluation"]["mean_return"] for r in records]
        worst = min(records, key=lambda r: r["evaluation"]["mean_return"])
        published, source = _published(environment_id)
        rows.append({"environment_id": environment_id, "preset": records[0]["preset"],
                     "preset_names": records[0]["preset_names"],
                     "preset_label": _preset_label(records[0]),
                     "budget": _steps(int(records[0]["config"]["total_timesteps"])),
                     "seeds": [r["seed"] for r in records], "median": statistics.median(means),
                     "worst": worst["evaluation"]["mean_return"], "worst_seed": worst["seed"],
                     "published": published, "source": source,
                     "target": target_verdict(environment_id, statistics.median(means), min(means),
                                              int(records[0]["config"]["total_timesteps"])),
                     "median_wall_time_s": statistics.median(r["training"]["wall_time_s"] for r in records)})
    return rows


def _seeds(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def readme_table(current: list[dict[str, Any]]) -> str:
    """The short table of the README: one row per environment."""
    lines = ["| environment | preset | budget | seeds | evaluation return: median (worst seed) | published PPO | "
             "target met |", "|---|---|---|---|---|---|---|"]
    for row in summary_rows(current):
        published = f"{row['published']}, {row['source']}" if row["published"] else ""
        lines.append(f"| {row['environment_id']} | {' + '.join(row['preset_names'])} (`{row['preset']}`) | "
                     f"{row['budget']} | {_seeds(row['seeds'])} | {row['median']:.1f} ({row['worst']:.1f}) | "
                     f"{published} | {row['target']} |")
    return "\n".join(lines) + "\n"


def results_markdown(current: list[dict[str, Any]], records_dir: Path = RECORDS_DIR) -> str:
    relative = os.path.relpath(records_dir, RESULTS_PATH.parent)
    groups = _by_environment(current)
    lines = ["# Results", "",
             "Written by `python -m benchmarks.results render` from the records in",
             f"[`{relative}/`]({relative}/), which `python -m benchmarks.results collect RUN_DIR...` writes from",
             "run directories. Every row is one plain run, `python main.py --environment-id ENV --seed SEED`",
             "(the environment's preset and nothing else), followed by its deterministic evaluation at the end",
             "of training (greedy actions, frozen normalization, fresh environments). Only runs whose",
             "hyperparameters are today's presets appear; `preset` is a hash of those hyperparameters",
             "(base defaults, family and environment presets: [presets.md](presets.md)).", "",
             "`target met`: the median of the seeds is at least the published PPO return at the same budget, and",
             f"the worst seed reaches {WORST_FRACTION:.0%} of it (for a negative return, a cost: at most "
             f"{1 / WORST_FRACTION:.2f} times the published cost).", "",
             "To reproduce a table section, run its seeds, then collect and render:", "", "```bash"]
    for environment_id, records in groups.items():
        seeds = " ".join(str(r["seed"]) for r in records)
        run = environment_id.replace("/", "_")
        script = "main_atari.py" if records[0]["family"] == "atari" else "main.py"
        lines.append(f"for s in {seeds}; do python {script} --environment-id {environment_id} --seed $s "
                     f"--run-name {run}-s$s; done")
    globs = " ".join(f"runs/{environment_id.replace('/', '_')}-s*" for environment_id in groups)
    lines += [f"python -m benchmarks.results collect {globs}", "python -m benchmarks.results render --readme README.md",
              "```", "", "## Summary", "",
              "| environment | preset | budget | seeds | median evaluation return | worst seed | "
              "median training wall time | published PPO | source | target met |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary_rows(current):
        lines.append(f"| {row['environment_id']} | {row['preset_label']} | {row['budget']} | {_seeds(row['seeds'])} "
                     f"| {row['median']:.1f} | {row['worst']:.1f} (seed {row['worst_seed']}) | "
                     f"{_seconds(row['median_wall_time_s'])} | {row['published']} | {row['source']} | "
                     f"{row['target']} |")
    lines += ["", "## Every run", "",
              "| environment | gymnasium | preset | budget | seed | evaluation mean ± std (episodes) | "
              "training wall time | published PPO | source | learning curve |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for environment_id, records in groups.items():
        published, source = _published(environment_id)
        for r in records:
            e = r["evaluation"]
            curve = f"[png]({relative}/{r['learning_curve']})" if r.get("learning_curve") else ""
            lines.append(f"| {environment_id} | {r['versions'].get('gymnasium', '')} | `{r['preset']}` | "
                         f"{_steps(int(r['config']['total_timesteps']))} | {r['seed']} | "
                         f"{e['mean_return']:.1f} ± {e['std_return']:.1f} ({e['episodes']}) | "
                         f"{_seconds(r['training']['wall_time_s'])} | {published} | {source} | {curve} |")
    lines += diagnostics_markdown()
    machines: dict[str, list[str]] = {}
    for r in current:
        m, v = r.get("machine", {}), r.get("versions", {})
        key = (f"{m.get('cores', '?')} cores ({m.get('cpu_model') or 'CPU model unknown'}), "
               + ", ".join(f"{package} {version}" for package, version in sorted(v.items())))
        machines.setdefault(key, []).append(r["environment_id"])
    lines += ["", "## Machine", "",
              "Training wall time is the last `wall_time_s` of the run's `metrics.csv`: from the first rollout",
              "to the end of the last update, on this machine and these package versions. Runs shared the machine",
              "with other runs (up to six at a time on 2 cores), so these times are upper bounds; speed measured",
              "alone is in [performance.md](performance.md).", ""]
    for key, environments in machines.items():
        lines.append(f"- {key}: {', '.join(sorted(set(environments)))}")
    return "\n".join(lines) + "\n"


def diagnostics_markdown(diagnostics_dir: Path = DIAGNOSTICS_DIR) -> list[str]:
    """The "Diagnostics" section: each figure of ``benchmarks.diagnose`` (``NAME.png`` with ``NAME.json``) with
    its note and the commands of its runs; no lines without figures."""
    descriptions = sorted(diagnostics_dir.glob("*.json"))
    if not descriptions:
        return []
    relative = os.path.relpath(diagnostics_dir, RESULTS_PATH.parent)
    lines = ["", "## Diagnostics", "",
             "Training curves (return, entropy, approx KL, clip fraction, explained variance, value loss) of runs",
             "side by side, by `python -m benchmarks.diagnose RUN_DIR... --output docs/results/diagnostics/NAME.png`",
             "from the runs of the commands below each figure."]
    for path in descriptions:
        description = json.loads(path.read_text())
        lines += ["", f"### {description['title']}", "", f"![{description['title']}]({relative}/{path.stem}.png)", ""]
        if description.get("note"):
            lines += [description["note"], ""]
        lines += ["```bash", *(run["command"] for run in description["runs"]), "```"]
    return lines


def readme_block(text: str) -> str | None:
    """The text between the ``results-table`` markers of a README, or None without markers."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        return None
    return text[begin + len(README_BEGIN):end].lstrip("\n")


def replace_readme_block(path: Path, table: str) -> None:
    text = path.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{path}: no '{README_BEGIN}' ... '{README_END}' markers to put the table between")
    path.write_text(text[:begin + len(README_BEGIN)] + "\n" + table + text[end:])


def render(records_dir: Path = RECORDS_DIR, readme: Path | None = None, prune: bool = False,
           output: Path = RESULTS_PATH) -> int:
    current, stale = classify(load_records(records_dir))
    for path in stale:
        if prune:
            path.unlink()
            path.with_suffix(".png").unlink(missing_ok=True)
        print(f"{'deleted' if prune else 'left out'} {path.name}: not today's preset for its environment",
              file=sys.stderr)
    output.write_text(results_markdown(current, records_dir))
    print(f"wrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output} "
          f"({len(current)} runs)", file=sys.stderr)
    table = readme_table(current)
    if readme is not None:
        replace_readme_block(readme, table)
        print(f"updated the results table of {readme}", file=sys.stderr)
    else:
        print(table, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("collect", help="write a record for each run directory")
    c.add_argument("run_dirs", nargs="+", type=Path)
    c.add_argument("--records", type=Path, default=RECORDS_DIR)
    r = sub.add_parser("render", help="write docs/results.md from the records")
    r.add_argument("--records", type=Path, default=RECORDS_DIR)
    r.add_argument("--readme", type=Path, default=None, help="also replace the table between the markers here")
    r.add_argument("--prune", action="store_true", help="delete records that are not today's presets")
    r.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    if args.mode == "collect":
        collect(args.run_dirs, args.records)
        return 0
    return render(args.records, args.readme, args.prune, args.output)


if __name__ == "__main__":
    sys.exit(main())
