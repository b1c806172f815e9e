"""Shared fixtures: the repository root on sys.path and a helper to run the CLIs."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")


def run_cli(script: str, *args: str, cwd: Path | None = None, timeout: float = 600, in_process: bool = True
            ) -> subprocess.CompletedProcess:
    """Run ``python script args`` (``main.py`` or ``main_atari.py``) and capture its exit code and output.

    In-process by default: ``ppo.cli.main(ENTRY, args)`` with stdout and stderr captured, which skips the
    interpreter's start-up; ``in_process=False`` starts a real process (``timeout`` applies only there), for
    tests of the process boundary itself.
    """
    if not in_process:
        return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd or ROOT, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    from ppo.cli import main
    entry = importlib.import_module(Path(script).stem).ENTRY
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd or ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(entry, list(args))
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def train_with_backend(tmp_path: Path, environment_id: str, backend: str, num_envs: int, num_steps: int,
                       total_timesteps: int, eval_episodes: int) -> Path:
    """A tiny ``main.py`` run (2 minibatches, 1 epoch) with ``--env-backend backend``; checks that it
    exits 0 having written its config, final checkpoint and evaluation; returns the run directory."""
    result = run_cli("main.py", "--environment-id", environment_id, "--env-backend", backend,
                     "--num-envs", str(num_envs), "--num-steps-collected", str(num_steps), "--num-mini-batches", "2",
                     "--num-epochs", "1", "--total-timesteps", str(total_timesteps),
                     "--eval-episodes", str(eval_episodes), "--no-progress", "--output-dir", str(tmp_path),
                     "--run-name", "run")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text())["env_backend"] == backend
    assert json.loads((run_dir / "evaluation.json").read_text())["episodes"] == eval_episodes
    assert (run_dir / "checkpoints" / "final.pt").exists()
    return run_dir


def start_and_signal(args: list, run_dir: Path, sig: int, after_rows: int, timeout: float = 120
                     ) -> tuple[subprocess.Popen, str]:
    """Start ``python main.py args``, wait until ``run_dir/metrics.csv`` has more than ``after_rows`` lines,
    send ``sig``, wait for the exit; returns the process and its stderr."""
    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) > after_rows):
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=timeout)
    return process, stderr


def make_trainer(environment_id: str = "CartPole-v1", **overrides: Any) -> tuple[Any, Any]:
    """A small :class:`ppo.loop.Trainer` (2 envs x 16 steps, 2 minibatches, 1 epoch, 64 steps, lr 1e-3, with
    ``overrides``) of an MLP agent seeded with 0 on the CPU; returns ``(trainer, agent)``."""
    import torch

    from networks import MLPActorCritic
    from ppo.config import PPOConfig
    from ppo.loop import Trainer
    from wrappers import describe_environment, make_vector_env
    config = PPOConfig(**{"environment_id": environment_id, "num_envs": 2, "num_steps_collected": 16,
                          "num_mini_batches": 2, "num_epochs": 1, "total_timesteps": 64, "learning_rate": 1e-3,
                          **overrides})
    info = describe_environment(config.environment_id)
    envs = make_vector_env(config.environment_id, config.num_envs)
    torch.manual_seed(0)
    agent = MLPActorCritic(info.observation_space.shape, info.action_space,
                           normalize_observations=config.normalize_observations)
    return Trainer(config, envs, agent, torch.device("cpu")), agent


@pytest.fixture
def cli():
    return run_cli
