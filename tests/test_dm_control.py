"""DM Control through shimmy: flattened Dict observations, end-to-end training, exact resume."""

import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("shimmy")
pytest.importorskip("dm_control")

import gymnasium as gym  # noqa: E402

from wrappers.vector import (describe_environment, load_vector_env_state, make_vector_env,  # noqa: E402
                             register_namespace, vector_env_state)

WALKER = "dm_control/walker-walk-v0"
# 2 envs x 16 steps per iteration; no annealing, so a run cut after 2 iterations and resumed to 4 follows
# the same schedule as an uninterrupted run of 4
TINY = ["--environment-id", WALKER, "--num-envs", "2", "--num-steps-collected", "16", "--num-mini-batches", "2",
        "--num-epochs", "1", "--eval-episodes", "1", "--no-progress", "--no-anneal-lr", "--deterministic-torch",
        "--num-threads", "1"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Two iterations of walker-walk (64 steps): its run directory."""
    from tests.conftest import run_cli
    out = tmp_path_factory.mktemp("runs")
    result = run_cli("main.py", *TINY, "--total-timesteps", "64", "--output-dir", str(out), "--run-name", "short")
    assert result.returncode == 0, result.stderr
    return out / "short"


def test_dict_observations_are_flattened_to_one_float_vector():
    register_namespace(WALKER)
    raw = gym.make(WALKER)
    parts = raw.observation_space
    assert isinstance(parts, gym.spaces.Dict)
    size = sum(int(np.prod(space.shape)) for space in parts.values())  # height 1 + orientations 14 + velocity 9
    info = describe_environment(WALKER)
    assert info.flatten_observations and info.observation_space.shape == (size,) == (24,)

    envs = make_vector_env(WALKER, 2)
    try:
        observations, _ = envs.reset(seed=3)
        raw_observation, _ = raw.reset(seed=3)
        assert observations.shape == (2, size) and observations.dtype.kind == "f"
        # the Dict parts in the space's key order, each raveled (height is a scalar)
        expected = np.concatenate([np.ravel(raw_observation[key]) for key in parts])
        assert np.array_equal(observations[0], expected)
        observations, *_ = envs.step(np.zeros((2, 6)))
        assert observations.shape == (2, size) and np.isfinite(observations).all()
    finally:
        envs.close()
        raw.close()


def test_main_trains_and_evaluates_walker_walk(cli, short_run):
    for name in ("config.json", "metrics.csv", "episodes.csv", "evaluation.json", "checkpoints/final.pt",
                 "checkpoints/latest.pt"):
        assert (short_run / name).exists(), name
    assert json.loads((short_run / "config.json").read_text())["environment_id"] == WALKER
    assert len((short_run / "metrics.csv").read_text().splitlines()) == 1 + 2  # header + 2 iterations
    assert set(json.loads((short_run / "evaluation.json").read_text())) >= {"mean_return", "std_return"}

    result = cli("main.py", "--evaluate", str(short_run / "checkpoints" / "final.pt"), "--eval-episodes", "1")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["episodes"] == 1 and np.isfinite(line["mean_return"])
    assert 0 <= line["mean_return"] <= 1000  # DM Control rewards lie in [0, 1], episodes last 1000 steps


@pytest.mark.parametrize("environment_id, steps_before", [
    (WALKER, 990),                          # the continuation crosses dm_control's 1000-step limit and resets
    ("dm_control/reacher-easy-v0", 40),     # the target's position is in the model, drawn at episode start
])
def test_env_state_restores_dm_control_exactly(environment_id, steps_before):
    rng = np.random.default_rng(0)
    envs = make_vector_env(environment_id, 2)
    envs.reset(seed=5)
    actions = rng.uniform(-1, 1, size=(steps_before + 20, *envs.action_space.shape))
    for action in actions[:steps_before]:
        envs.step(action)
    buffer = io.BytesIO()
    torch.save(vector_env_state(envs), buffer)  # as in a checkpoint: plain data, loadable with weights_only
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["envs"] is not None
    expected = [envs.step(action) for action in actions[steps_before:]]
    envs.close()

    fresh = make_vector_env(environment_id, 2)
    try:
        fresh.reset(seed=123)  # another episode, other targets: all of it must be overwritten
        assert load_vector_env_state(fresh, state)
        for action, (observations, rewards, terminations, truncations, _) in zip(actions[steps_before:],
                                                                                 expected):
            got = fresh.step(action)
            assert np.array_equal(got[0], observations) and np.array_equal(got[1], rewards)
            assert np.array_equal(got[2], terminations) and np.array_equal(got[3], truncations)
    finally:
        fresh.close()
    if environment_id == WALKER:
        assert any(truncations.any() for _, _, _, truncations, _ in expected)


def test_resume_continues_walker_exactly(cli, short_run, tmp_path):
    full = cli("main.py", *TINY, "--total-timesteps", "128", "--output-dir", str(tmp_path), "--run-name", "full")
    assert full.returncode == 0, full.stderr
    resumed = cli("main.py", "--resume", str(short_run / "checkpoints" / "latest.pt"), "--total-timesteps",
                  "128", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "cannot be restored" not in resumed.stdout
    a = torch.load(tmp_path / "full" / "checkpoints" / "final.pt", weights_only=True)
    b = torch.load(short_run / "checkpoints" / "final.pt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 128
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, values in a["optimizer"]["state"].items():
        for key, value in values.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
