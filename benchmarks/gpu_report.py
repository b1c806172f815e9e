"""Every GPU case of issue #20 in one run, side by side, as one table (``benchmarks/gpu.sh`` starts it).

    python3 benchmarks/gpu_report.py --out DIR [--budget 540] [--pong-seconds 240] [--skip tests brax ...]

Cases, in this order (each a child process under its own time limit, so one failure does not stop the rest;
a failed case shows the end of its error output):

- ``tests``: ``pytest tests/test_cuda_graph_learner.py`` (the CUDA-graph learner against the torch learner).
- ``ale-threads``: the threads ale-py's vector env starts for 64 Pong games on this machine.
- ``humanoid``: Humanoid-v4, 16 envs x 128 steps, 32 minibatches, 10 epochs, SB3's PPO settings (as
  ``benchmarks/compare.py speed``): ours on the CPU, ours ``--use-gpu`` (auto: the cuda-graph learner), ours
  ``--use-gpu --learner torch``, and SB3 on cuda.
- ``pong-speed``: ALE/Pong-v5 with the Atari family preset (8 envs x 128 steps, 4 minibatches, 4 epochs,
  sticky actions 0.25), 8 envs (cuda-graph and torch learners) and 64 envs (cuda-graph); targets end to end.
- ``brax``: brax/ant, 4096 envs, ``--env-backend brax --use-gpu`` (skipped when brax does not import);
  target on the steady steps/s (the first iteration holds Brax's JIT compilation).
- ``pong-learn`` (last): ``main_atari.py --environment-id ALE/Pong-v5 --use-gpu`` with Pong's preset, stopped
  (SIGINT) after ``--pong-seconds``; the mean of the last 20 full games of ``episodes.csv`` and when the
  mean of 20 first reached 20.

The table of the earlier cases is printed before ``pong-learn`` starts. Steps/s "end to end" is the run's
own ``sps`` (training steps over training time, first iteration included: graph capture, cuDNN autotuning,
JIT compilation); "steady" leaves out the first iteration. Logs go to ``--out``, the table to
``--out/gpu.md`` (rewritten after every case), each run's ``metrics.csv``, ``episodes.csv`` and ``config.json``
to ``--out/<run>/`` (the run directories themselves, with checkpoints, stay in a temporary folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.compare import SB3_SPEED  # noqa: E402

TIME_SPLIT = re.compile(r"Time: env ([\d.]+)s, inference ([\d.]+)s, update ([\d.]+)s, total ([\d.]+)s")
COMMON = ["--no-progress", "--eval-episodes", "0", "--checkpoint-interval", "0"]
# benchmarks/compare.py's flags for ours: SB3's PPO defaults, so no preset of ours changes the computation
SB3_SETTINGS = ["--gae-gamma", "0.99", "--gae-lambda", "0.95", "--clip-coeff", "0.2", "--value-loss-coeff", "0.5",
                "--max-gradient", "0.5", "--no-anneal-lr", "--no-clip-value-loss", "--normalize-advantages",
                "--hidden-size", "64", "--num-hidden-layers", "2", "--activation", "tanh", "--init-log-std", "0",
                "--normalize-observations", "--normalize-rewards"]
HUMANOID = dict(num_envs=16, num_steps=128, epochs=10, minibatches=32, lr=3e-4, ent=0.0, normalize=True)
HUMANOID_STEPS = 16384
# The [family.atari] preset, given explicitly (Pong's own preset is the many-env one of pong-learn).
ATARI_FAMILY = ["--num-steps-collected", "128", "--num-mini-batches", "4", "--num-epochs", "4",
                "--learning-rate", "2.5e-4", "--clip-coeff", "0.1", "--ent-loss-coeff", "0.01",
                "--sticky-action-probability", "0.25"]
CASES = ("tests", "ale-threads", "humanoid", "pong-speed", "brax", "pong-learn")


class Report:
    """The table so far, printed and written to ``out/gpu.md``."""

    def __init__(self, out: Path, budget: float) -> None:
        self.out, self.rows = out, []
        # Run directories (checkpoints, TensorBoard events) stay out of ``out``; their CSV files are copied there.
        self.runs = Path(tempfile.mkdtemp(prefix="gpu-report-runs-"))
        self.deadline = time.monotonic() + budget
        self.header = machine()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, case: str, variant: str, result: str, detail: str = "") -> None:
        self.rows.append((case, variant, result, detail))
        print(f"[{case}] {variant}: {result}" + (f" ({detail})" if detail else ""), flush=True)
        self.write()

    def table(self) -> str:
        lines = ["| case | variant | result | detail |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in self.rows]
        return "\n".join(lines)

    def write(self) -> None:
        (self.out / "gpu.md").write_text(f"# GPU cases (benchmarks/gpu.sh)\n\n{self.header}\n\n{self.table()}\n")

    def print(self, title: str) -> None:
        print(f"\n## {title}\n\n{self.header}\n\n{self.table()}\n", flush=True)


def machine() -> str:
    gpu = "no GPU"
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip() or gpu
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import torch
        versions = f"torch {torch.__version__} (CUDA {torch.version.cuda})"
    except ImportError:
        versions = "no torch"
    return (f"Machine: {gpu}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
            f"Python {platform.python_version()}, {versions}. Started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.")


def run(command: list[str], log: Path, timeout: float, interrupt_after: float | None = None
        ) -> tuple[int | None, str, float]:
    """Run ``command`` in the repository root with stdout and stderr into ``log``; returns ``(exit code or None
    when killed at ``timeout``, the output, seconds)``. ``interrupt_after``: send SIGINT then (the trainer stops
    at its next step and writes its files), and wait up to ``timeout`` in all."""
    started = time.monotonic()
    with log.open("w") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, text=True)
        code = None
        try:
            if interrupt_after is not None:
                try:
                    code = process.wait(timeout=max(interrupt_after, 1.0))
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGINT)
            if code is None:
                code = process.wait(timeout=max(timeout - (time.monotonic() - started), 1.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
    return code, log.read_text(errors="replace"), time.monotonic() - started


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def failed(report: Report, case: str, variant: str, code: int | None, output: str, limit: float) -> None:
    reason = f"timed out after {limit:.0f} s" if code is None else f"exit {code}"
    report.add(case, variant, f"FAILED ({reason})", "see log")
    print(f"----- end of {variant}'s output -----\n{tail(output)}\n-----", flush=True)


def keep_csv(report: Report, run_dir: Path) -> None:
    """Copy the run's ``metrics.csv``, ``episodes.csv`` and ``config.json`` to ``out/<run name>/``."""
    for name in ("metrics.csv", "episodes.csv", "config.json"):
        if (run_dir / name).exists():
            (report.out / run_dir.name).mkdir(exist_ok=True)
            shutil.copy(run_dir / name, report.out / run_dir.name / name)


def metrics(run_dir: Path) -> tuple[float, float | None]:
    """``(end-to-end sps of the last row, steady sps leaving out the first iteration or None)``."""
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    last = rows[-1]
    steady = None
    if len(rows) >= 2:
        first = rows[0]
        seconds = float(last["wall_time_s"]) - float(first["wall_time_s"])
        if seconds > 0:
            steady = (int(last["global_step"]) - int(first["global_step"])) / seconds
    return float(last["sps"]), steady


def ours(report: Report, case: str, variant: str, script: str, flags: list[str], limit: float,
         target: float | None = None, steady_target: bool = False) -> float | None:
    """One run of ours; adds its row (steps/s, time split; against ``target``: end to end, or with
    ``steady_target`` leaving out the first iteration); returns its end-to-end steps/s."""
    limit = min(limit, report.remaining())
    if limit < 20:
        report.add(case, variant, "skipped: out of time")
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{case}-{variant}")
    run_dir = report.runs / name
    command = [sys.executable, script, *flags, *COMMON, "--output-dir", str(run_dir.parent), "--run-name", name]
    code, output, seconds = run(command, report.out / f"{name}.log", limit)
    keep_csv(report, run_dir)
    if code != 0 or not (run_dir / "metrics.csv").exists():
        failed(report, case, variant, code, output, limit)
        return None
    sps, steady = metrics(run_dir)
    learner = re.search(r"Learner: (.+)", output)
    split = TIME_SPLIT.search(output)
    detail = [f"learner {learner.group(1)}" if learner else "",
              f"steady {steady:,.0f}/s" if steady else "",
              (f"env {split.group(1)} s, inference {split.group(2)} s, update {split.group(3)} s of "
               f"{split.group(4)} s" if split else ""), f"wall {seconds:.0f} s with start-up"]
    measured = steady if steady_target else sps
    verdict = "" if target is None else " (target >= {:,.0f}{}: {})".format(
        target, " steady" if steady_target else " end to end",
        "met" if measured is not None and measured >= target else "NOT met")
    report.add(case, variant, f"{sps:,.0f} steps/s{verdict}", "; ".join(d for d in detail if d))
    return sps


def case_tests(report: Report) -> None:
    limit = min(180.0, report.remaining())
    code, output, seconds = run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                 "tests/test_cuda_graph_learner.py"], report.out / "tests.log", limit)
    summary = tail(output, 1)
    if code == 0:
        report.add("tests", "pytest tests/test_cuda_graph_learner.py", summary, f"{seconds:.0f} s")
    else:
        failed(report, "tests", "pytest tests/test_cuda_graph_learner.py", code, output, limit)
        print(tail(output, 60), flush=True)


def case_ale_threads(report: Report) -> None:
    probe = ("import os, gymnasium as gym, ale_py; gym.register_envs(ale_py); "
             "before = len(os.listdir('/proc/self/task')); "
             "envs = gym.make_vec('ALE/Pong-v5', num_envs=64, vectorization_mode='vector_entry_point'); "
             "print('threads', len(os.listdir('/proc/self/task')) - before, 'cpus', os.cpu_count())")
    code, output, _ = run([sys.executable, "-c", probe], report.out / "ale-threads.log", 60)
    found = re.search(r"threads (\d+) cpus (\d+)", output)
    if code == 0 and found:
        report.add("ale-threads", "ale-py vector env, 64 Pong games, num_threads=0",
                   f"{found.group(1)} threads on {found.group(2)} CPUs")
    else:
        failed(report, "ale-threads", "ale-py vector env", code, output, 60)


def case_humanoid(report: Report) -> None:
    p, steps = HUMANOID, HUMANOID_STEPS
    flags = ["--environment-id", "Humanoid-v4", "--num-envs", str(p["num_envs"]),
             "--num-steps-collected", str(p["num_steps"]), "--num-epochs", str(p["epochs"]),
             "--num-mini-batches", str(p["minibatches"]), "--learning-rate", str(p["lr"]),
             "--ent-loss-coeff", str(p["ent"]), "--total-timesteps", str(steps), "--seed", "1", *SB3_SETTINGS]
    case = f"Humanoid-v4 16x128, 32 mb, 10 epochs, {steps} steps"
    ours(report, case, "ours CPU (auto learner)", "main.py", flags, 150)
    gpu = ours(report, case, "ours --use-gpu (auto: cuda-graph)", "main.py", [*flags, "--use-gpu"], 120)
    ours(report, case, "ours --use-gpu --learner torch", "main.py", [*flags, "--use-gpu", "--learner", "torch"], 120)
    limit = min(180.0, report.remaining())
    if limit < 20:
        report.add(case, "SB3 cuda", "skipped: out of time")
        return
    command = [sys.executable, "-c", SB3_SPEED, "Humanoid-v4", str(p["num_envs"]), str(p["num_steps"]),
               str(p["epochs"]), str(p["minibatches"]), str(p["lr"]), str(p["ent"]), str(p["normalize"]),
               str(steps), "1", "cuda"]
    code, output, seconds = run(command, report.out / "humanoid-sb3-cuda.log", limit)
    sps = None
    for line in reversed(output.strip().splitlines()):  # its JSON line; warnings may come after it
        try:
            sps = float(json.loads(line)["sps"])
            break
        except (ValueError, KeyError, TypeError):
            continue
    if sps is None:
        failed(report, case, "SB3 cuda", code, output, limit)
        return
    ratio = f"; ours --use-gpu / SB3: {gpu / sps:.2f}x" if gpu else ""
    report.add(case, "SB3 2.9 cuda (same settings)", f"{sps:,.0f} steps/s", f"wall {seconds:.0f} s{ratio}")


def case_pong_speed(report: Report) -> None:
    base = ["--environment-id", "ALE/Pong-v5", "--use-gpu", "--seed", "1", *ATARI_FAMILY]
    eight = "ALE/Pong-v5 atari preset, 8 envs, 81920 steps"
    sixty_four = "ALE/Pong-v5 atari preset, 64 envs, 163840 steps"
    ours(report, eight, "ours --use-gpu (auto: cuda-graph)", "main_atari.py",
         [*base, "--num-envs", "8", "--total-timesteps", "81920"], 120, target=7000)
    ours(report, eight, "ours --use-gpu --learner torch", "main_atari.py",
         [*base, "--num-envs", "8", "--total-timesteps", "81920", "--learner", "torch"], 120)
    ours(report, sixty_four, "ours --use-gpu (auto: cuda-graph)", "main_atari.py",
         [*base, "--num-envs", "64", "--total-timesteps", "163840"], 120, target=30000)


def case_brax(report: Report) -> None:
    case = "brax/ant, 4096 envs, brax preset (80 steps, 32 mb, 4 epochs), 8 iterations"
    probe = [sys.executable, "-c", "import brax.envs, jax; brax.envs.get_environment('ant'); print(jax.devices())"]
    code, output, _ = run(probe, report.out / "brax-import.log", 120)
    if code != 0:
        last = tail(output, 1)
        report.add(case, "ours --env-backend brax --use-gpu", "skipped: brax does not import", last[-150:])
        return
    steps = 4096 * 80 * 8
    # steady: the first iteration holds the JIT compilation of Brax's step (tens of seconds)
    ours(report, case, "ours --env-backend brax --use-gpu (auto: cuda-graph)", "main.py",
         ["--env-backend", "brax", "--environment-id", "brax/ant", "--use-gpu", "--num-envs", "4096",
          "--total-timesteps", str(steps), "--seed", "1"], 240, target=450000, steady_target=True)


def case_pong_learn(report: Report, seconds: float) -> None:
    case = "ALE/Pong-v5 learning, Pong preset"
    seconds = min(seconds, report.remaining() - 20)
    if seconds < 30:
        report.add(case, "ours --use-gpu", "skipped: out of time")
        return
    name = "pong-learn"
    run_dir = report.runs / name
    command = [sys.executable, "main_atari.py", "--environment-id", "ALE/Pong-v5", "--use-gpu", "--seed", "1",
               "--no-progress", "--eval-episodes", "0", "--checkpoint-interval", "0",
               "--output-dir", str(run_dir.parent), "--run-name", name]
    code, output, wall = run(command, report.out / f"{name}.log", seconds + 40, interrupt_after=seconds)
    keep_csv(report, run_dir)
    episodes_csv = run_dir / "episodes.csv"
    if not episodes_csv.exists():
        failed(report, case, "ours --use-gpu", code, output, seconds)
        return
    with episodes_csv.open() as handle:
        episodes = [(int(r["global_step"]), float(r["wall_time_s"]), float(r["return"]))
                    for r in csv.DictReader(handle)]
    returns = [episode[2] for episode in episodes]
    reached = next(((step, t) for index, (step, t, _) in enumerate(episodes)
                    if index >= 19 and statistics.mean(returns[index - 19:index + 1]) >= 20.0), None)
    last20 = statistics.mean(returns[-20:]) if len(returns) >= 20 else float("nan")
    sps, steps = "", episodes[-1][0] if episodes else 0
    if (run_dir / "metrics.csv").exists():
        end_to_end, steady = metrics(run_dir)
        sps = f"{end_to_end:,.0f} steps/s" + (f" (steady {steady:,.0f})" if steady else "")
        with (run_dir / "metrics.csv").open() as handle:
            steps = max([steps, *(int(row["global_step"]) for row in csv.DictReader(handle))])
    presets = re.findall(r"preset: (.+)", output)  # the family's, then the game's own
    when = (f"mean of 20 reached 20 at {reached[1]:.0f} s, step {reached[0]:,}" if reached
            else "mean of 20 never reached 20")
    target = "met" if reached and reached[1] <= 300 else "NOT met"
    report.add(case, f"ours --use-gpu, stopped after {seconds:.0f} s",
               f"last 20 games: mean {last20:.1f} ({len(returns)} games; target >= 20 within 300 s: {target})",
               f"{when}; {steps:,} steps; {sps}; exit {code}; "
               f"preset: {presets[-1][:120] if presets else '?'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/gpu-report", help="logs and gpu.md go here")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all cases together")
    parser.add_argument("--pong-seconds", type=float, default=240.0, help="wall time of the Pong learning run")
    parser.add_argument("--skip", nargs="*", default=[], choices=CASES, help="cases to leave out")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, args.budget)
    print(report.header, flush=True)
    steps = {"tests": case_tests, "ale-threads": case_ale_threads, "humanoid": case_humanoid,
             "pong-speed": case_pong_speed, "brax": case_brax}
    for name, function in steps.items():
        if name in args.skip:
            continue
        try:
            function(report)
        except Exception as error:  # noqa: BLE001 - one broken case must not stop the others
            report.add(name, "driver", f"FAILED: {type(error).__name__}: {error}")
    report.print("Cases before the Pong learning run")
    if "pong-learn" not in args.skip:
        try:
            case_pong_learn(report, args.pong_seconds)
        except Exception as error:  # noqa: BLE001
            report.add("pong-learn", "driver", f"FAILED: {type(error).__name__}: {error}")
    report.print("All cases")


if __name__ == "__main__":
    main()
