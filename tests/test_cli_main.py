"""End-to-end runs of main.py on real environments with tiny budgets."""

import csv
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ppo.config import FIELDS
from ppo.recorder import EPISODE_COLUMNS, METRIC_COLUMNS

TINY = ["--num-steps-collected", "16", "--num-mini-batches", "2", "--num-epochs", "2", "--eval-episodes", "2",
        "--no-progress"]

CASES = {
    "CartPole-v1": ["--num-envs", "2", "--total-timesteps", "128"],
    "Pendulum-v1": ["--num-envs", "2", "--total-timesteps", "128"],
    "LunarLander-v3": ["--num-envs", "2", "--total-timesteps", "128"],
    "InvertedPendulum-v4": ["--num-envs", "1", "--total-timesteps", "64"],
    "Humanoid-v4": ["--num-envs", "16", "--total-timesteps", "512", "--vectorization-mode", "sync"],
    "Acrobot-v1": ["--num-envs", "2", "--total-timesteps", "128", "--vectorization-mode", "async"],
}


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("environment_id", list(CASES))
def test_main_trains_and_evaluates(cli, tmp_path, environment_id):
    result = cli("main.py", "--environment-id", environment_id, "--output-dir", str(tmp_path),
                 "--run-name", "run", *TINY, *CASES[environment_id])
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    assert result.stdout.splitlines()[0] == f"Run directory: {run_dir}"

    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) == set(FIELDS) | {"resolved_learner"} and config["environment_id"] == environment_id
    # an MLP on the CPU: --learner auto takes the numpy learner, says so, and records it
    assert config["learner"] == "auto" and config["resolved_learner"] == "numpy"
    assert "Learner: numpy (auto: an MLP on the CPU)" in result.stdout.splitlines()
    metrics = read_csv(run_dir / "metrics.csv")
    assert tuple(metrics[0]) == METRIC_COLUMNS
    total = config["total_timesteps"]
    assert int(metrics[-1]["global_step"]) == total
    header = (run_dir / "episodes.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == EPISODE_COLUMNS
    # every metrics.csv row and episodes.csv row reached TensorBoard's event file by the end of the run
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert len(events.Scalars("charts/sps")) == len(metrics)
    logged = (len(events.Scalars("charts/episodic_return"))
              if "charts/episodic_return" in events.Tags()["scalars"] else 0)
    assert logged == len(read_csv(run_dir / "episodes.csv"))
    checkpoint = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert checkpoint["global_step"] == total

    evaluation = cli("main.py", "--evaluate", str(run_dir / "checkpoints" / "final.pt"), "--eval-episodes", "3")
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads(evaluation.stdout.strip().splitlines()[-1])
    assert set(report) == {"mean_return", "std_return", "episodes", "policy", "seconds"} and report["episodes"] == 3
    assert report["policy"] == "mode"  # the default outside Atari


def test_eval_episodes_zero_skips_the_final_evaluation(cli, tmp_path):
    result = cli("main.py", "--environment-id", "CartPole-v1", "--num-envs", "2", "--total-timesteps", "64",
                 "--output-dir", str(tmp_path), "--run-name", "r", *TINY, "--eval-episodes", "0")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r" / "checkpoints" / "final.pt").exists()
    assert not (tmp_path / "r" / "evaluation.json").exists() and "Evaluation" not in result.stdout


def test_flags_override_presets_and_aliases_work(cli, tmp_path):
    result = cli("main.py", "--env-id", "CartPole-v1", "--num-envs", "2", "--num-steps", "32",
                 "--num-mini-batches", "4", "--total-timesteps", "64", "--clip-coef", "0.3", "--no-anneal-lr",
                 "--output-dir", str(tmp_path), "--run-name", "r", "--no-progress", "--eval-episodes", "1")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    # flags typed win; untouched values come from the CartPole-v1 preset (5 epochs, gamma 0.98, lr 3e-3)
    assert (config["num_envs"], config["num_steps_collected"], config["clip_coeff"]) == (2, 32, 0.3)
    assert config["anneal_lr"] is False
    assert (config["num_epochs"], config["gae_gamma"], config["anneal_clip"]) == (5, 0.98, True)
    metrics = read_csv(tmp_path / "r" / "metrics.csv")
    assert float(metrics[0]["learning_rate"]) == float(metrics[-1]["learning_rate"]) == 3e-3
