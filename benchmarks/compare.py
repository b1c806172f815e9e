"""Side-by-side speed and time-to-score of this trainer and Stable-Baselines3 on the same machine.

    pip install -r benchmarks/requirements.txt
    python benchmarks/compare.py speed                      # Hopper-v4, CartPole-v1, Humanoid-v4
    python benchmarks/compare.py speed --cases cartpole --repeats 3
    python benchmarks/compare.py speed --cases humanoid atari --use-gpu    # on a machine with a CUDA GPU
    python benchmarks/compare.py time-to-score --environment-id CartPole-v1 --seeds 1 2 3 4 5
    python benchmarks/compare.py time-to-score --environment-id Hopper-v4 --seeds 1 2 3 --max-seconds 600
    python benchmarks/compare.py scale                      # envpool vs gymnasium; 1 vs 2 torchrun processes
    python benchmarks/compare.py speed --repeats 3 --markdown docs/performance.md    # also as a markdown section

With ``--markdown FILE`` (``speed`` and ``time-to-score``) the results also go to FILE as a markdown section:
the machine, the exact command and a table with every repeat or seed. A section is keyed by its mode (and
``--use-gpu``/``--compile``, or the environment): the next run of the same kind replaces it, others stay.

Every measurement runs in a fresh child process, ours and SB3's alternating, so both see the same
machine state. Steps per second count training only (environment steps divided by the time from the
first rollout to the end of the last update), not interpreter start-up or the final evaluation. Peak
memory is the child's maximum resident set size.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common.errors import EXIT_INTERRUPTED  # noqa: E402

# name -> (environment id, hyperparameters shared by both libraries, total steps)
SPEED_CASES = {
    "hopper": ("Hopper-v4", dict(num_envs=1, num_steps=2048, epochs=10, minibatches=32, lr=3e-4, ent=0.0,
                                 normalize=True), 8192),
    "cartpole": ("CartPole-v1", dict(num_envs=4, num_steps=128, epochs=4, minibatches=4, lr=2.5e-4, ent=0.01,
                                     normalize=False), 32768),
    "humanoid": ("Humanoid-v4", dict(num_envs=16, num_steps=512, epochs=10, minibatches=32, lr=3e-4, ent=0.0,
                                     normalize=True), 16384),
    # Nature CNN on frames: main_atari.py (ale-py's vector env) against SB3's CnnPolicy with make_atari_env +
    # VecFrameStack(4), both with sticky actions 0.25 (ALE v5), clipped rewards and life loss as episode end.
    "atari": ("ALE/Breakout-v5", dict(num_envs=8, num_steps=128, epochs=4, minibatches=4, lr=2.5e-4, ent=0.01,
                                      normalize=False), 16384),
}

# RL Zoo (rl-baselines3-zoo hyperparams/ppo.yml) settings for SB3 in time-to-score mode.
ZOO = {
    "CartPole-v1": dict(n_envs=8, normalize=False, total=100_000, kwargs=dict(
        n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0),
        linear_lr=1e-3, linear_clip=0.2),
    "Hopper-v4": dict(n_envs=1, normalize=True, total=1_000_000, kwargs=dict(
        batch_size=32, n_steps=512, gamma=0.999, learning_rate=9.80828e-05, ent_coef=0.00229519,
        clip_range=0.2, n_epochs=5, gae_lambda=0.99, max_grad_norm=0.7, vf_coef=0.835671),
        policy_kwargs="dict(log_std_init=-2, ortho_init=False, activation_fn=torch.nn.ReLU, "
                      "net_arch=dict(pi=[256, 256], vf=[256, 256]))"),
}
THRESHOLDS = {"CartPole-v1": 475.0, "Hopper-v4": 2500.0}


def run_child_with_memory(command: list[str]) -> tuple[str, float]:
    """Run a child process; returns (stdout, its peak resident memory in MiB, from ``wait4``).

    Raises:
        RuntimeError: the child failed (with the end of its stderr).
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{stderr[-2000:]}")
    return stdout, usage.ru_maxrss / 1024


def ours_speed(environment_id: str, p: dict, total: int, workdir: Path, seed: int, extra: tuple[str, ...] = (),
               processes: int = 1) -> dict:
    """Our trainer with ``p``'s hyperparameters (and ``extra`` flags), under torchrun with ``processes`` > 1."""
    run = workdir / f"ours-{environment_id.replace('/', '_')}-{seed}-{len(list(workdir.iterdir()))}"
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    atari = environment_id.startswith("ALE/")
    command = [*launcher, "main_atari.py" if atari else "main.py", "--environment-id", environment_id,
               "--num-envs", str(p["num_envs"]),
               "--num-steps-collected", str(p["num_steps"]), "--num-epochs", str(p["epochs"]),
               "--num-mini-batches", str(p["minibatches"]), "--learning-rate", str(p["lr"]),
               "--ent-loss-coeff", str(p["ent"]), "--total-timesteps", str(total), "--seed", str(seed),
               "--no-progress", "--eval-episodes", "0", "--checkpoint-interval", "0",
               "--output-dir", str(workdir), "--run-name", run.name,
               # everything else as SB3's PPO defaults, so no preset of ours changes the computation
               "--gae-gamma", "0.99", "--gae-lambda", "0.95", "--clip-coeff", "0.2", "--value-loss-coeff", "0.5",
               "--max-gradient", "0.5", "--no-anneal-lr", "--no-clip-value-loss", "--normalize-advantages"]
    if not atari:  # SB3's MlpPolicy
        command += ["--hidden-size", "64", "--num-hidden-layers", "2", "--activation", "tanh", "--init-log-std", "0"]
    flag = "--" if p["normalize"] else "--no-"
    command += [f"{flag}normalize-observations", f"{flag}normalize-rewards", *extra]
    stdout, peak = run_child_with_memory(command)
    with (run / "metrics.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    split = re.search(r"Time: env ([\d.]+)s, inference ([\d.]+)s, update ([\d.]+)s, total ([\d.]+)s", stdout)
    env_s, inference_s, update_s, total_s = (float(x) for x in split.groups())
    return {"sps": float(last["sps"]), "peak_mib": peak, "env_s": env_s, "inference_s": inference_s,
            "update_s": update_s, "total_s": total_s}


SB3_SPEED = """
import json, sys, time, torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
env_id, n_envs, n_steps, epochs, minibatches, lr, ent, normalize, total, seed, device = sys.argv[1:]
n_envs, n_steps, epochs, minibatches, total, seed = map(int, (n_envs, n_steps, epochs, minibatches, total, seed))
if env_id.startswith("ALE/"):
    import ale_py, gymnasium
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack
    gymnasium.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=seed, env_kwargs={"frameskip": 1}), n_stack=4)
    policy = "CnnPolicy"
else:
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    policy = "MlpPolicy"
if normalize == "True":
    env = VecNormalize(env, gamma=0.99)
model = PPO(policy, env, n_steps=n_steps, batch_size=n_envs * n_steps // minibatches, n_epochs=epochs,
            learning_rate=float(lr), ent_coef=float(ent), gamma=0.99, gae_lambda=0.95, clip_range=0.2,
            vf_coef=0.5, max_grad_norm=0.5, seed=seed, device=device, verbose=0)
start = time.perf_counter()
model.learn(total_timesteps=total)
elapsed = time.perf_counter() - start
print(json.dumps({"sps": model.num_timesteps / elapsed}))
"""


def sb3_speed(environment_id: str, p: dict, total: int, seed: int, device: str = "cpu") -> dict:
    command = [sys.executable, "-c", SB3_SPEED, environment_id, str(p["num_envs"]), str(p["num_steps"]),
               str(p["epochs"]), str(p["minibatches"]), str(p["lr"]), str(p["ent"]), str(p["normalize"]),
               str(total), str(seed), device]
    stdout, peak = run_child_with_memory(command)
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_mib": peak}


def speed(args: argparse.Namespace) -> None:
    print(f"# python benchmarks/compare.py speed --cases {' '.join(args.cases)} --repeats {args.repeats}"
          + (" --compile" if args.compile else "") + (" --use-gpu" if args.use_gpu else "")
          + (f" --total-timesteps {args.total_timesteps}" if args.total_timesteps else ""))
    extra = ("--compile",) * args.compile + ("--use-gpu",) * args.use_gpu
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            environment_id, p, total = SPEED_CASES[name]
            total = args.total_timesteps or total
            ours, theirs = [], []
            for repeat in range(args.repeats):  # alternate: ours, SB3, ours, SB3, ...
                ours.append(ours_speed(environment_id, p, total, Path(tmp), seed=repeat + 1, extra=extra))
                theirs.append(sb3_speed(environment_id, p, total, seed=repeat + 1,
                                        device="cuda" if args.use_gpu else "cpu"))
            ours_sps = statistics.median(r["sps"] for r in ours)
            sb3_sps = statistics.median(r["sps"] for r in theirs)
            split = {key: statistics.median(r[key] for r in ours) for key in ("env_s", "inference_s",
                                                                                "update_s", "total_s")}
            print(f"{environment_id} ({p['num_envs']} envs x {p['num_steps']} steps, {p['epochs']} epochs, "
                  f"{p['minibatches']} minibatches, {total} steps, median of {args.repeats}): "
                  f"ours {ours_sps:,.0f} steps/s, SB3 {sb3_sps:,.0f} steps/s, ratio {ours_sps / sb3_sps:.2f}x; "
                  f"our time: env {split['env_s']:.1f}s, inference {split['inference_s']:.1f}s, "
                  f"update {split['update_s']:.1f}s of {split['total_s']:.1f}s; peak memory ours "
                  f"{max(r['peak_mib'] for r in ours):.0f} MiB, SB3 {max(r['peak_mib'] for r in theirs):.0f} MiB",
                  flush=True)
            measured.append((environment_id, p, total, ours, theirs))
    if args.markdown:
        key = "speed" + " --use-gpu" * args.use_gpu + " --compile" * args.compile
        write_markdown_section(args.markdown, key, speed_markdown(measured, args))


# name -> (environment id, hyperparameters, total steps, variants: label -> (extra flags, processes))
SCALE_CASES = {
    "hopper-backends": ("Hopper-v4", dict(num_envs=8, num_steps=256, epochs=10, minibatches=32, lr=3e-4, ent=0.0,
                                          normalize=True), 16384,
                        {"gymnasium sync": ((), 1), "gymnasium async": (("--vectorization-mode", "async"), 1),
                         "envpool": (("--env-backend", "envpool"), 1)}),
    "cartpole-processes": ("CartPole-v1", dict(num_envs=4, num_steps=128, epochs=4, minibatches=4, lr=2.5e-4,
                                               ent=0.01, normalize=False), 32768,
                           {"1 process": ((), 1), "torchrun 2 processes": ((), 2)}),
    "hopper-processes": ("Hopper-v4", dict(num_envs=1, num_steps=2048, epochs=10, minibatches=32, lr=3e-4,
                                           ent=0.0, normalize=True), 8192,
                         {"1 process": ((), 1), "torchrun 2 processes": ((), 2)}),
}


def scale(args: argparse.Namespace) -> None:
    """Our steps/s across environment backends and process counts (no SB3 counterpart)."""
    print(f"# python benchmarks/compare.py scale --cases {' '.join(args.cases)} --repeats {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            environment_id, p, total, variants = SCALE_CASES[name]
            results: dict[str, list[dict]] = {label: [] for label in variants}
            for repeat in range(args.repeats):  # alternate the variants
                for label, (extra, processes) in variants.items():
                    try:
                        results[label].append(ours_speed(environment_id, p, total, Path(tmp),
                                                         seed=repeat + 1, extra=extra, processes=processes))
                    except RuntimeError as error:
                        print(f"{label}: failed ({str(error).splitlines()[-1]})", flush=True)
            parts = [f"{label} {statistics.median(r['sps'] for r in runs):,.0f} steps/s"
                     for label, runs in results.items() if runs]
            print(f"{environment_id} ({p['num_envs']} envs x {p['num_steps']} steps per process, {p['epochs']} "
                  f"epochs, {p['minibatches']} minibatches, median of {args.repeats}): " + ", ".join(parts),
                  flush=True)


SB3_SCORE = """
import json, sys, time, collections, torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
settings = json.loads(sys.argv[1]); env_id = sys.argv[2]; seed = int(sys.argv[3]); threshold = float(sys.argv[4])
max_seconds = float(sys.argv[5]) if len(sys.argv) > 5 else float("inf")
env = make_vec_env(env_id, n_envs=settings["n_envs"], seed=seed)
if settings["normalize"]:
    env = VecNormalize(env, gamma=settings["kwargs"].get("gamma", 0.99))
kwargs = dict(settings["kwargs"])
if "linear_lr" in settings:
    kwargs["learning_rate"] = lambda progress, v=settings["linear_lr"]: progress * v
if "linear_clip" in settings:
    kwargs["clip_range"] = lambda progress, v=settings["linear_clip"]: progress * v
if "policy_kwargs" in settings:
    kwargs["policy_kwargs"] = eval(settings["policy_kwargs"])
class Stop(BaseCallback):
    def _on_training_start(self):
        self.returns, self.start, self.reached = collections.deque(maxlen=20), time.perf_counter(), None
        self.best = None
    def _on_step(self):
        if time.perf_counter() - self.start > max_seconds:
            return False
        for info in self.locals["infos"]:
            if "episode" in info:
                self.returns.append(info["episode"]["r"])
                if len(self.returns) == 20:
                    mean = sum(self.returns) / 20
                    self.best = round(max(mean, self.best if self.best is not None else mean), 1)
                    if mean >= threshold:
                        self.reached = (time.perf_counter() - self.start, self.num_timesteps)
                        return False
        return True
callback = Stop()
model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
model.learn(total_timesteps=settings["total"], callback=callback)
print(json.dumps({"seconds": callback.reached[0] if callback.reached else None,
                  "steps": callback.reached[1] if callback.reached else None,
                  "last_step": model.num_timesteps, "best_mean_20": callback.best}))
"""


def _score_progress(episodes_csv: Path, threshold: float) -> dict:
    """From ``episodes.csv``: ``seconds`` and ``steps`` of the first episode where the mean of the last 20
    returns is >= ``threshold`` (None if none), the last step logged and the best such 20-episode mean."""
    result = {"seconds": None, "steps": None, "last_step": 0, "best_mean_20": None}
    window: list[float] = []
    with episodes_csv.open() as handle:
        for row in csv.DictReader(handle):
            if not row.get("length"):
                break  # a row still being written
            window = (window + [float(row["return"])])[-20:]
            result["last_step"] = int(row["global_step"])
            if len(window) == 20:
                mean = sum(window) / 20
                best = result["best_mean_20"]
                result["best_mean_20"] = round(mean if best is None else max(mean, best), 1)
                if mean >= threshold:
                    result.update(seconds=float(row["wall_time_s"]), steps=int(row["global_step"]))
                    break
    return result


def ours_time_to_score(environment_id: str, seed: int, threshold: float, workdir: Path,
                       max_seconds: float | None = None, extra: tuple[str, ...] = (),
                       max_steps: int | None = None) -> dict:
    """Our trainer with its preset for ``environment_id`` (its full step budget, so schedules are those of a
    default run), interrupted (SIGINT) once ``episodes.csv`` shows the threshold reached, ``max_seconds``
    after that file appeared (about when training starts), or past ``max_steps`` environment steps (a cap
    that does not depend on the machine's load, for preset sweeps run side by side); the time is the
    ``wall_time_s`` of that episode, so the polling does not count. ``extra``: flags added to ours (they win
    over the preset). Returns ``seconds``, ``steps``, ``last_step`` and ``best_mean_20``."""
    run = workdir / f"score-{environment_id}-{seed}"
    command = [sys.executable, "main.py", "--environment-id", environment_id, "--seed", str(seed), "--no-progress",
               "--eval-episodes", "0", "--output-dir", str(workdir), "--run-name", run.name, *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    stderr = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True, env=env, cwd=ROOT)
    started = None  # when episodes.csv appears: about when training starts, as SB3's clock does
    result = {"seconds": None, "steps": None}
    while True:
        finished = process.poll() is not None
        if (run / "episodes.csv").exists():
            started = started or time.monotonic()
            result = _score_progress(run / "episodes.csv", threshold)
        if finished:
            break
        over_steps = max_steps is not None and result.get("last_step", 0) >= max_steps
        over_time = max_seconds is not None and started is not None and time.monotonic() - started > max_seconds
        if result["seconds"] is not None or over_steps or over_time:
            process.send_signal(signal.SIGINT)  # stops after this iteration, keeping a checkpoint
            process.wait()
            break
        time.sleep(0.5)
    with stderr:
        stderr.seek(0)
        if process.returncode not in (0, EXIT_INTERRUPTED, -signal.SIGINT):  # -SIGINT: before its handler
            raise RuntimeError(f"{' '.join(command[:4])} failed:\n{stderr.read()[-2000:]}")
    return result


def time_to_score(args: argparse.Namespace) -> None:
    environment_id = args.environment_id
    threshold = args.threshold or THRESHOLDS[environment_id]
    cap = args.max_seconds
    print(f"# python benchmarks/compare.py time-to-score --environment-id {environment_id} "
          f"--seeds {' '.join(map(str, args.seeds))}" + (f" --max-seconds {cap:g}" if cap else "")
          + (f" --max-steps {args.max_steps}" if args.max_steps else "")
          + (" --skip-sb3" if args.skip_sb3 else "") + (f" --our-flags={args.our_flags!r}" if args.our_flags else ""))
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            ours.append(ours_time_to_score(environment_id, seed, threshold, Path(tmp), cap,
                                           tuple(shlex.split(args.our_flags)), args.max_steps))
            if not args.skip_sb3:
                stdout, _ = run_child_with_memory([sys.executable, "-c", SB3_SCORE, json.dumps(ZOO[environment_id]),
                                                   environment_id, str(seed), str(threshold),
                                                   str(cap or float("inf"))])
                theirs.append(json.loads(stdout.strip().splitlines()[-1]))
            print(f"seed {seed}: ours {ours[-1]}" + ("" if args.skip_sb3 else f", SB3 (RL Zoo) {theirs[-1]}"),
                  flush=True)

    def median(results: list[dict]) -> str:
        times = [r["seconds"] if r["seconds"] is not None else float("inf") for r in results]
        return f"{statistics.median(times):.1f} s"
    sb3 = "" if args.skip_sb3 else f", SB3 with RL Zoo hyperparameters {median(theirs)}"
    print(f"{environment_id}: mean of the last 20 training episodes >= {threshold}: median wall-clock ours "
          f"{median(ours)}{sb3} (seeds {args.seeds}; "
          "inf = not reached within the step budget" + (f" or {cap:g} s" if cap else "") + ")")
    if args.markdown:
        key = (f"time-to-score {environment_id}" + (" --our-flags" if args.our_flags else "")
               + (" --skip-sb3" if args.skip_sb3 else ""))
        write_markdown_section(args.markdown, key, time_to_score_markdown(environment_id, threshold, ours,
                                                                          theirs, args))


PERFORMANCE_HEADER = """# Performance

This trainer and Stable-Baselines3 side by side on one machine, written by `benchmarks/compare.py` with
`--markdown docs/performance.md` (set-up: `pip install -r benchmarks/requirements.txt`). Each section
names its machine and the command that reproduces it; the next run of that command replaces the section.
Every measurement is a fresh child process, ours and SB3's alternating, with the same hyperparameters.
Steps per second count training only (environment steps over the time from the first rollout to the end
of the last update). Compare ratios within one section: steps/s move with the machine.

The sections and the commands that write them:

```bash
python benchmarks/compare.py speed --repeats 3 --markdown docs/performance.md
python benchmarks/compare.py speed --cases humanoid atari --use-gpu --markdown docs/performance.md
python benchmarks/compare.py time-to-score --environment-id CartPole-v1 --seeds 1 2 3 4 5 --markdown docs/performance.md
python benchmarks/compare.py time-to-score --environment-id Hopper-v4 --seeds 1 2 3 --max-seconds 240 --markdown docs/performance.md
```
"""


def machine_markdown() -> str:
    """One line: cores, CPU model, Python and the versions of the libraries being compared."""
    import platform
    from importlib import metadata
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    versions = []
    for package in ("torch", "gymnasium", "stable-baselines3", "mujoco", "numpy"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    gpu = ""
    try:
        import torch
        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return (f"Machine: {os.cpu_count()} cores ({model or 'CPU model unknown'}){gpu}, Python "
            f"{platform.python_version()}, " + ", ".join(versions) + ".")


def _command_line() -> str:
    return "python benchmarks/compare.py " + shlex.join(sys.argv[1:])


def _spread(values: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def speed_markdown(measured: list[tuple], args: argparse.Namespace) -> str:
    """The ``speed`` section: per case every repeat of both libraries, median (min-max) and the ratio."""
    device = "GPU" if args.use_gpu else "CPU"
    lines = [f"## Steps per second ({device}{', ours with --compile' if args.compile else ''})", "",
             machine_markdown(), "", "```bash", _command_line(), "```", "",
             "Each repeat is one run of each library with seed = repeat number. Ratio: ours over SB3, of the "
             "medians (and the lowest and highest ratio of the repeats, paired in order).", "",
             "| case | ours steps/s, each repeat | ours median (min-max) | SB3 steps/s, each repeat | "
             "SB3 median (min-max) | ratio (min-max) | our time: env / inference / update of total | "
             "peak memory ours / SB3 |",
             "|---|---|---|---|---|---|---|---|"]
    for environment_id, p, total, ours, theirs in measured:
        ours_sps = [r["sps"] for r in ours]
        sb3_sps = [r["sps"] for r in theirs]
        ratios = [a / b for a, b in zip(ours_sps, sb3_sps)]
        split = {key: statistics.median(r[key] for r in ours) for key in ("env_s", "inference_s", "update_s",
                                                                            "total_s")}
        case = (f"{environment_id}: {p['num_envs']} envs x {p['num_steps']} steps, {p['epochs']} epochs, "
                f"{p['minibatches']} minibatches, {total:,} steps")
        lines.append(
            f"| {case} | {', '.join(f'{v:,.0f}' for v in ours_sps)} | {_spread(ours_sps)} | "
            f"{', '.join(f'{v:,.0f}' for v in sb3_sps)} | {_spread(sb3_sps)} | "
            f"{statistics.median(ours_sps) / statistics.median(sb3_sps):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{split['env_s']:.1f} / {split['inference_s']:.1f} / {split['update_s']:.1f} "
            f"of {split['total_s']:.1f} s | "
            f"{max(r['peak_mib'] for r in ours):.0f} / {max(r['peak_mib'] for r in theirs):.0f} MiB |")
    return "\n".join(lines) + "\n"


def time_to_score_markdown(environment_id: str, threshold: float, ours: list[dict], theirs: list[dict],
                           args: argparse.Namespace) -> str:
    """The ``time-to-score`` section: one row per seed, then the medians."""
    def cell(result: dict) -> tuple[str, str]:
        if result.get("seconds") is None:
            best = result.get("best_mean_20")
            return (f"not reached (best 20-episode mean {best})" if best is not None else "not reached",
                    f"{result.get('last_step', 0):,} (all run)")
        return f"{result['seconds']:.1f} s", f"{result['steps']:,}"

    def median_seconds(results: list[dict]) -> str:
        times = [r["seconds"] if r.get("seconds") is not None else float("inf") for r in results]
        return f"{statistics.median(times):.1f} s"

    ours_label = "ours (preset" + (f" with {args.our_flags}" if args.our_flags else "") + ")"
    lines = [f"## Time to a mean return of {threshold:g}: {environment_id}", "", machine_markdown(), "",
             "```bash", _command_line(), "```", "",
             f"Wall-clock seconds of training until the mean of the last 20 training episodes reaches "
             f"{threshold:g}, and the environment steps by then. Ours: `python main.py --environment-id "
             f"{environment_id}` with its preset"
             + (f" and `{args.our_flags}`" if args.our_flags else "")
             + ("" if args.skip_sb3 else "; SB3: RL Zoo's hyperparameters for the environment") + "."
             + (f" Runs stop after {args.max_seconds:g} s." if args.max_seconds else "")
             + (f" Our runs stop past {args.max_steps:,} steps." if args.max_steps else ""), ""]
    header = f"| seed | {ours_label} seconds | {ours_label} steps |"
    rule = "|---|---|---|"
    if theirs:
        header += " SB3 (RL Zoo) seconds | SB3 (RL Zoo) steps |"
        rule += "---|---|"
    lines += [header, rule]
    for index, seed in enumerate(args.seeds[:len(ours)]):
        row = f"| {seed} | {' | '.join(cell(ours[index]))} |"
        if theirs:
            row += f" {' | '.join(cell(theirs[index]))} |"
        lines.append(row)
    median_row = f"| median | {median_seconds(ours)} | |"
    if theirs:
        median_row += f" {median_seconds(theirs)} | |"
    lines.append(median_row)
    return "\n".join(lines) + "\n"


def write_markdown_section(path: str, key: str, body: str) -> None:
    """Put ``body`` into ``path`` between the markers of section ``key``: replacing that section, or added at
    the end; a new file starts with :data:`PERFORMANCE_HEADER`."""
    target = Path(path)
    begin, end = f"<!-- compare.py: {key} -->", f"<!-- /compare.py: {key} -->"
    text = target.read_text() if target.exists() else PERFORMANCE_HEADER
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    start, stop = text.find(begin), text.find(end)
    if start >= 0 and stop > start:
        rest = text[stop + len(end):].lstrip("\n")
        text = text[:start] + block + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote the '{key}' section of {target}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("speed", help="steps/s with matched hyperparameters")
    s.add_argument("--cases", nargs="+", choices=list(SPEED_CASES), default=["hopper", "cartpole", "humanoid"])
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--compile", action="store_true", help="run ours with --compile")
    s.add_argument("--use-gpu", action="store_true", help="both on the CUDA device: ours --use-gpu, SB3 device='cuda'")
    s.add_argument("--total-timesteps", type=int, default=None, help="steps per run instead of the case's own")
    s.add_argument("--markdown", metavar="FILE", default=None,
                   help="also write the results as a section of this markdown file (e.g. docs/performance.md)")
    c = sub.add_parser("scale", help="our steps/s across env backends and torchrun process counts")
    c.add_argument("--cases", nargs="+", choices=list(SCALE_CASES), default=list(SCALE_CASES))
    c.add_argument("--repeats", type=int, default=2)
    t = sub.add_parser("time-to-score", help="wall-clock seconds until a return threshold")
    t.add_argument("--environment-id", choices=list(ZOO), default="CartPole-v1")
    t.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    t.add_argument("--threshold", type=float, default=None)
    t.add_argument("--max-seconds", type=float, default=None,
                   help="stop each run (ours and SB3's) after this many seconds; not reached counts as inf")
    t.add_argument("--max-steps", type=int, default=None,
                   help="stop our runs past this many environment steps (not reached counts as inf); for "
                        "preset sweeps, whose steps to the threshold do not depend on the machine's load")
    t.add_argument("--our-flags", default="", help="flags added to our run, e.g. '--num-epochs 4' (preset variants)")
    t.add_argument("--skip-sb3", action="store_true",
                   help="run ours only (for a change of ours, against SB3's times measured before on the machine)")
    t.add_argument("--markdown", metavar="FILE", default=None,
                   help="also write the results as a section of this markdown file (e.g. docs/performance.md)")
    args = parser.parse_args()
    {"speed": speed, "scale": scale, "time-to-score": time_to_score}[args.mode](args)


if __name__ == "__main__":
    main()
