"""The whole command, start-up to exit, side by side with Stable-Baselines3: ``python main.py`` (CartPole-v1,
its preset, 100k steps, the final evaluation, checkpoint, curve and TensorBoard log) against an SB3 script
with RL Zoo's CartPole-v1 hyperparameters (``benchmarks/compare.py``'s ZOO) that trains 100k steps, saves
the model and evaluates it on 10 episodes, as a user's script would.

    pip install -r benchmarks/requirements.txt
    python benchmarks/startup.py                   # 3 repeats each, alternating
    python benchmarks/startup.py --repeats 5 --our-flags "--eval-episodes 0"
    python benchmarks/startup.py --ours /tmp/before .     # two checkouts of ours (git worktree) and SB3

Each run is a fresh process (interpreter start-up, imports, training, evaluation, files, exit), timed by
wall clock from here; ours and SB3's alternate so both see the same machine state. For ours the training
time from its "Time:" line is printed too, so the rest (start-up and wind-down) shows. Check ``uptime``
first: on a busy machine the ratio holds better than the seconds. The medians and their ratio are the last
line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.compare import ZOO  # noqa: E402

SB3_SCRIPT = """
import json, sys, torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
settings, seed, directory, threads = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if threads > 0:
    torch.set_num_threads(threads)
kwargs = dict(settings["kwargs"])
kwargs["learning_rate"] = lambda progress, v=settings["linear_lr"]: progress * v
kwargs["clip_range"] = lambda progress, v=settings["linear_clip"]: progress * v
env = make_vec_env("CartPole-v1", n_envs=settings["n_envs"], seed=seed)
model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
model.learn(total_timesteps=settings["total"])
model.save(directory + "/ppo_cartpole")
mean, std = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=seed + 1000), n_eval_episodes=10)
print(json.dumps({"mean_return": mean, "std_return": std}))
"""


def timed(command: list[str], cwd: Path = ROOT) -> tuple[float, str]:
    """Run ``command`` in ``cwd``; returns (wall seconds, stdout).

    Raises:
        RuntimeError: the command failed (with the end of its stderr).
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited {result.returncode}: {result.stderr[-2000:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating (default: 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--our-flags", default="", help="flags added to 'python main.py'")
    parser.add_argument("--skip-sb3", action="store_true", help="time ours only")
    parser.add_argument("--sb3-threads", type=int, default=0, metavar="N",
                        help="torch threads of the SB3 script (default 0: torch's default, one per core; ours uses 1)."
                             " On a busy machine 1 avoids OpenMP threads waiting for descheduled ones")
    parser.add_argument("--ours", nargs="+", default=[str(ROOT)], metavar="DIR",
                        help="checkouts of this repository whose main.py to time, each in turn (default: this one)")
    args = parser.parse_args()
    settings = ZOO["CartPole-v1"]
    trees = [Path(tree).resolve() for tree in args.ours]
    ours: dict[Path, list[float]] = {tree: [] for tree in trees}
    training: dict[Path, list[float]] = {tree: [] for tree in trees}
    theirs: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        for repeat in range(1, args.repeats + 1):
            line = f"repeat {repeat}:"
            for tree in trees:
                command = [sys.executable, "main.py", "--seed", str(args.seed), "--output-dir", directory,
                           *shlex.split(args.our_flags)]
                seconds, stdout = timed(command, tree)
                ours[tree].append(seconds)
                match = re.search(r"^Time: .*total ([0-9.]+)s", stdout, re.MULTILINE)
                training[tree].append(float(match.group(1)) if match else float("nan"))
                line += f" ours{'' if len(trees) == 1 else ' ' + str(tree)} {seconds:.2f} s (training " \
                        f"{training[tree][-1]:.2f} s),"
            if not args.skip_sb3:
                seconds, _ = timed([sys.executable, "-c", SB3_SCRIPT, json.dumps(settings), str(args.seed),
                                    directory, str(args.sb3_threads)])
                theirs.append(seconds)
                line += f" SB3 {seconds:.2f} s"
            print(line.rstrip(","), flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"command: python benchmarks/startup.py --repeats {args.repeats} --seed {args.seed}"
          + (f" --our-flags {shlex.quote(args.our_flags)}" if args.our_flags else "")
          + (" --skip-sb3" if args.skip_sb3 else "")
          + (f" --sb3-threads {args.sb3_threads}" if args.sb3_threads else "")
          + (f" --ours {' '.join(args.ours)}" if len(trees) > 1 else ""))
    sb3 = statistics.median(theirs) if theirs else None
    for tree in trees:
        median, trained = statistics.median(ours[tree]), statistics.median(training[tree])
        summary = (f"CartPole-v1, 100,000 steps, whole command (median of {args.repeats}): python main.py "
                   f"{median:.2f} s (training {trained:.2f} s, the rest {median - trained:.2f} s)")
        if sb3 is not None:
            summary += f"; SB3 (RL Zoo) {sb3:.2f} s; SB3 / ours = {sb3 / median:.2f}"
        print(summary + ("" if len(trees) == 1 else f" [{tree}]"))


if __name__ == "__main__":
    main()
