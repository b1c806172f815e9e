"""Bad input, numerical faults, signals and determinism (issue: reliability)."""

import hashlib
import importlib.util
import json
import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch

import main as main_script
from ppo.checkpoint import save_checkpoint
from ppo.cli import main
from tests.conftest import start_and_signal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--num-envs", "2", "--num-steps-collected", "16", "--num-mini-batches", "2", "--num-epochs", "1",
        "--total-timesteps", "64", "--eval-episodes", "1", "--no-progress"]


class NaNEnv(gym.Env):
    """CartPole-like scripted env whose observations become NaN from step `nan_from` on, or whose reward is
    NaN exactly once at step `nan_once`."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, nan_from=None, nan_once=None):
        self.nan_from, self.nan_once, self.t, self.total = nan_from, nan_once, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        observation = np.full(2, 0.1 * action, np.float32)
        reward = 1.0
        if self.nan_from is not None and self.total >= self.nan_from:
            observation[:] = np.nan
        if self.nan_once is not None and self.total == self.nan_once:
            reward = float("nan")
        return observation, reward, False, self.t >= 10, {}


gym.register("TestNaNObservations-v0", entry_point=NaNEnv, kwargs={"nan_from": 20})
gym.register("TestNaNRewardOnce-v0", entry_point=NaNEnv, kwargs={"nan_once": 5})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real CartPole checkpoint; its bytes must never change through any bad command."""
    out = tmp_path_factory.mktemp("good")
    assert main(main_script.ENTRY, ["--output-dir", str(out), "--run-name", "good", *TINY]) == 0
    return out / "good" / "checkpoints" / "final.pt"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def crafted(tmp_path, checkpoint, kind):
    """Bad checkpoint files of several kinds, made next to the test."""
    path = tmp_path / f"{kind}.pt"
    data = checkpoint.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif kind == "corrupted":
        path.write_bytes(bytes(b ^ 0x5A for b in data[:4096]) + data[4096:])
    elif kind == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "text":
        path.write_text("hello")
    elif kind == "other-spaces":
        state = torch.load(checkpoint, weights_only=True)
        state["config"]["environment_id"] = "Acrobot-v1"
        save_checkpoint(path, {k: v for k, v in state.items() if k not in ("format", "version")})
    elif kind == "malicious":
        import pickle

        class Exploit:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'pwned'}",))
        path.write_bytes(pickle.dumps({"format": "ppo-checkpoint", "x": Exploit()}))
    return path


# (flags, expected exit code, a fragment of the one-line message)
BAD_INPUTS = [
    (["--num-envs", "0"], 2, "--num-envs must be a positive integer"),
    (["--num-envs", "-3"], 2, "--num-envs must be a positive integer"),
    (["--num-envs", "two"], 2, "invalid int value"),
    (["--learning-rate", "0"], 2, "--learning-rate must be a positive number"),
    (["--learning-rate", "nan"], 2, "--learning-rate must be a positive number"),
    (["--gae-gamma", "1.5"], 2, "--gae-gamma must lie in [0, 1]"),
    (["--gae-lambda", "-0.1"], 2, "--gae-lambda must lie in [0, 1]"),
    (["--clip-coeff", "0"], 2, "--clip-coeff must be a positive number"),
    (["--max-gradient", "-1"], 2, "--max-gradient must be a positive number"),
    (["--target-kl", "-0.01"], 2, "--target-kl must be a positive number"),
    (["--ent-loss-coeff", "-1"], 2, "--ent-loss-coeff must be zero or positive"),
    (["--num-mini-batches", "7"], 2, "must divide the batch"),
    (["--num-envs", "2", "--num-steps-collected", "16", "--num-mini-batches", "32"], 2, "minibatches of 1"),
    (["--total-timesteps", "10"], 2, "smaller than one rollout"),
    (["--init-log-std", "9"], 2, "--init-log-std must lie in [-5, 2]"),
    (["--activation", "sigmoid"], 2, "invalid choice"),
    (["--no-such-flag"], 2, "unrecognized arguments"),
    (["--run-name", "a/b"], 2, "--run-name must be a plain directory name"),
    (["--use-gpu"], 2, "no CUDA device"),
    (["--environment-id", "CartPol-v1"], 3, "Did you mean: `CartPole`"),
    (["--environment-id", "CartPole-v9"], 3, "doesn't exist"),
    (["--environment-id", "Nope/Thing-v0"], 3, "unknown environment id"),
    (["--environment-id", "ALE/Pong-v5"], 3, "main_atari.py"),
    (["--environment-id", "CarRacing-v3"], 3, "flat vector observations"),
    (["--output-dir", "{file}"], 2, "cannot write the run directory"),
    (["--evaluate", "{missing}"], 4, "does not exist"),
    (["--evaluate", "{truncated}"], 4, "cannot be read"),
    (["--evaluate", "{corrupted}"], 4, "cannot be read"),
    (["--evaluate", "{text}"], 4, "cannot be read"),
    (["--evaluate", "{not-a-checkpoint}"], 4, "not a checkpoint"),
    (["--evaluate", "{other-spaces}"], 4, "observation_shape"),
    (["--evaluate", "{malicious}"], 4, "unsafe"),
    (["--resume", "{missing}"], 4, "does not exist"),
    (["--resume", "{checkpoint}", "--learning-rate", "0.1"], 2, "remove --learning-rate"),
    (["--evaluate", "{checkpoint}", "--resume", "{checkpoint}"], 2, "cannot be combined"),
    (["--eval-episodes", "-1"], 2, "--eval-episodes must be zero or positive"),
    (["--evaluate", "{checkpoint}", "--eval-episodes", "0"], 2, "--eval-episodes must be a positive integer"),
]
if importlib.util.find_spec("shimmy") is None:
    BAD_INPUTS.append((["--environment-id", "dm_control/walker-walk-v0"], 3, "pip install shimmy"))


@pytest.mark.parametrize("flags,code,fragment", BAD_INPUTS, ids=[" ".join(c[0]) for c in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_code(flags, code, fragment, checkpoint, tmp_path, capsys):
    before = digest(checkpoint)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    names = {"file": str(blocker / "sub"), "missing": str(tmp_path / "missing.pt"),
             "checkpoint": str(checkpoint)}
    for kind in ("truncated", "corrupted", "not-a-checkpoint", "text", "other-spaces", "malicious"):
        if any("{" + kind + "}" in flag for flag in flags):
            names[kind] = str(crafted(tmp_path, checkpoint, kind))
    argv = [flag.format(**names) for flag in flags]
    if "--evaluate" not in argv and "--resume" not in argv:
        argv += ["--output-dir", str(tmp_path / "runs")] if "--output-dir" not in argv else []
    assert main(main_script.ENTRY, argv) == code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("main.py: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert digest(checkpoint) == before
    assert not (tmp_path / "pwned").exists()


def test_repeated_nan_observations_stop_with_exit_5(tmp_path, capsys):
    code = main(main_script.ENTRY, ["--environment-id", "TestNaNObservations-v0", "--output-dir", str(tmp_path),
                                    "--run-name", "nan", "--num-envs", "1", "--num-steps-collected", "8",
                                    "--num-mini-batches", "2", "--total-timesteps", "400", "--checkpoint-interval",
                                    "1", "--no-progress", "--normalize-observations"])
    assert code == 5
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "non-finite observations" in message[0]
    # the last good checkpoint (written before the NaNs began at step 20) is intact and finite
    state = torch.load(tmp_path / "nan" / "checkpoints" / "latest.pt", weights_only=True)
    assert 0 < state["global_step"] < 20
    assert all(torch.isfinite(value).all() for value in state["model"].values())


def test_a_single_nan_reward_skips_one_update_and_training_goes_on(tmp_path):
    code = main(main_script.ENTRY, ["--environment-id", "TestNaNRewardOnce-v0", "--output-dir", str(tmp_path),
                                    "--run-name", "once", "--num-envs", "1", "--num-steps-collected", "8",
                                    "--num-mini-batches", "2", "--total-timesteps", "64", "--no-progress"])
    assert code == 0
    state = torch.load(tmp_path / "once" / "checkpoints" / "final.pt", weights_only=True)
    assert all(torch.isfinite(value).all() for value in state["model"].values())
    rows = (tmp_path / "once" / "metrics.csv").read_text().splitlines()[1:]
    assert rows[0].split(",")[6] == ""  # first iteration: no update, losses left empty
    assert rows[1].split(",")[6] != ""


def test_two_seeded_runs_give_identical_metrics(cli, tmp_path):
    args = ["--environment-id", "Pendulum-v1", "--num-envs", "2", "--num-steps-collected", "64",
            "--num-mini-batches", "4", "--total-timesteps", "512", "--seed", "7", "--deterministic-torch",
            "--normalize-observations", "--normalize-rewards", "--no-progress", "--output-dir", str(tmp_path),
            "--eval-episodes", "2"]
    for name in ("a", "b"):
        assert cli("main.py", *args, "--run-name", name).returncode == 0

    def without_times(path):  # drop wall_time_s and sps
        return [line.split(",")[:2] + line.split(",")[4:] for line in path.read_text().splitlines()]
    assert without_times(tmp_path / "a" / "metrics.csv") == without_times(tmp_path / "b" / "metrics.csv")
    evaluations = [json.loads((tmp_path / name / "evaluation.json").read_text()) for name in ("a", "b")]
    for evaluation in evaluations:
        evaluation.pop("seconds")  # wall time
    assert evaluations[0] == evaluations[1]


def test_sigterm_writes_latest_and_exits_130(tmp_path):
    process, stderr = start_and_signal(["--output-dir", str(tmp_path), "--run-name", "term", "--no-progress"],
                                       tmp_path / "term", signal.SIGTERM, after_rows=3)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    state = torch.load(tmp_path / "term" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["global_step"] > 0
