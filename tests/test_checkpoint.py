"""Checkpoints: round trip in a fresh process, exact resume, atomic writes, safe loading."""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from ppo.checkpoint import load_checkpoint, save_checkpoint
from common.errors import CheckpointError
from tests.conftest import start_and_signal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--environment-id", "CartPole-v1", "--deterministic-torch", "--num-threads", "1", "--no-progress",
          "--eval-episodes", "1", "--checkpoint-interval", "5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small Pendulum run (observation normalization and reward scaling on)."""
    from tests.conftest import run_cli
    out = tmp_path_factory.mktemp("runs")
    result = run_cli("main.py", "--environment-id", "Pendulum-v1", "--num-envs", "2", "--num-steps-collected",
                     "64", "--num-mini-batches", "4", "--total-timesteps", "512", "--normalize-observations",
                     "--normalize-rewards", "--output-dir", str(out), "--run-name", "p", "--no-progress",
                     "--eval-episodes", "1")
    assert result.returncode == 0, result.stderr
    return out / "p" / "checkpoints" / "final.pt"


def test_checkpoint_round_trip_in_a_fresh_process(trained, tmp_path):
    # the parent computes deterministic actions on fixed observations; a fresh process loads the file,
    # rebuilds the agent and must produce identical parameters, statistics and actions
    script = f"""
import sys, torch, json
sys.path.insert(0, {ROOT!r})
import main
from ppo.checkpoint import load_checkpoint
from ppo.entry import load_policy
_, _, agent = load_policy(main.ENTRY, load_checkpoint({str(trained)!r}), "final.pt")
torch.manual_seed(0)
observations = torch.randn(16, 3) * 3
with torch.inference_mode():
    actions = agent.act(observations, deterministic=True)
torch.save({{"actions": actions.clone(), "model": agent.state_dict()}}, {str(tmp_path / "out.pt")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    child = torch.load(tmp_path / "out.pt", weights_only=True)
    state = load_checkpoint(trained)
    for key, value in state["model"].items():
        assert torch.equal(child["model"][key], value), key
    assert state["model"]["normalizer.count"] > 0  # the statistics travelled with the weights
    assert state["reward_scaler"]["count"] > 1  # so did the reward scaler's

    import main
    from ppo.entry import load_policy
    _, _, agent = load_policy(main.ENTRY, state, str(trained))
    torch.manual_seed(0)
    observations = torch.randn(16, 3) * 3
    with torch.inference_mode():
        assert torch.equal(agent.act(observations, deterministic=True), child["actions"])


def test_resume_after_sigint_equals_uninterrupted(cli, tmp_path):
    full = cli("main.py", *COMMON, "--total-timesteps", "40960", "--output-dir", str(tmp_path), "--run-name",
               "full")
    assert full.returncode == 0, full.stderr
    process, stderr = start_and_signal([*COMMON, "--total-timesteps", "40960", "--output-dir", str(tmp_path),
                                        "--run-name", "cut"], tmp_path / "cut", signal.SIGINT, after_rows=12)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    latest = tmp_path / "cut" / "checkpoints" / "latest.pt"
    stale = latest.parent / ".latest.left-by-kill.tmp.pt"  # what a kill -9 during a save leaves behind
    stale.write_bytes(b"partial")
    interrupted_at = torch.load(latest, weights_only=True)["global_step"]
    assert 0 < interrupted_at < 40960

    resumed = cli("main.py", "--resume", str(latest), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert not stale.exists()
    a = torch.load(tmp_path / "full" / "checkpoints" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "final.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, values in a["optimizer"]["state"].items():
        for key, value in values.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    # the curves carry on from the saved step without gaps or duplicates
    def rows(path, columns):
        return [",".join(line.split(",")[i] for i in columns) for line in path.read_text().splitlines()]
    assert rows(tmp_path / "cut" / "metrics.csv", [0, 1, 4, 6, 7]) == \
        rows(tmp_path / "full" / "metrics.csv", [0, 1, 4, 6, 7])
    assert rows(tmp_path / "cut" / "episodes.csv", [0, 2]) == rows(tmp_path / "full" / "episodes.csv", [0, 2])


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"format": "ppo-checkpoint", "payload": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="refused|cannot be read"):
        load_checkpoint(path)
    torch_path = tmp_path / "evil_torch.pt"
    torch.save({"format": "ppo-checkpoint", "payload": Exploit()}, torch_path)
    with pytest.raises(CheckpointError):
        load_checkpoint(torch_path)
    assert not marker.exists()


def test_kill_during_save_leaves_previous_checkpoint_readable(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": -1, "weights": torch.zeros(10)})
    script = f"""
import sys, torch
sys.path.insert(0, {ROOT!r})
from ppo.checkpoint import save_checkpoint
step = 0
print("ready", flush=True)
while True:
    save_checkpoint({str(path)!r}, {{"step": step, "weights": torch.full((2_000_000,), float(step))}})
    step += 1
"""
    for delay in (0.3, 0.55, 0.8, 1.1):
        process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        process.stdout.readline()
        time.sleep(delay)
        process.kill()  # SIGKILL: no cleanup runs
        process.wait()
        state = load_checkpoint(path)
        assert torch.all(state["weights"] == float(state["step"])) or state["step"] == -1
    leftovers = [name for name in os.listdir(tmp_path) if name != "latest.pt" and ".tmp" not in name]
    assert leftovers == []


def test_bad_checkpoint_files_are_refused(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(other)
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"weights": torch.zeros(1000)})
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(truncated)
    # the good file is untouched by the failed reads of the others, and still loads
    assert hashlib.sha256(good.read_bytes()).hexdigest() == digest
    assert torch.equal(load_checkpoint(good)["weights"], torch.zeros(1000))
    assert load_checkpoint(good)["weights"].shape == (1000,)
