"""The envpool backend (wrappers/envpool_backend.py) against the gymnasium path, under random actions:
SAME_STEP autoreset (final_obs exactly on done steps, the next observation a fresh reset), terminations
kept apart from time-limit truncations, episode statistics equal to the counted steps and summed rewards;
then the trainer end to end on envpool envs. Skipped where envpool is not installed (it is optional)."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import train_with_backend
from ppo.config import PPOConfig
from common.errors import EnvironmentProblem
from ppo.loop import Trainer
from wrappers import make_atari_vector_env, make_vector_env

ENVPOOL_REASON = "envpool is not installed (optional backend: pip install envpool)"

# Hopper: observations are qpos[1:] (height, angles) and qvel, starting at (1.25, 0, ..., 0) plus uniform
# noise of at most 5e-3. With a 25-step limit, random actions end episodes both ways.
HOPPER, NUM_ENVS, LIMIT, SEED = "Hopper-v4", 4, 25, 0
HOPPER_INIT = np.array([1.25] + [0.0] * 10)
# Asterix: 3 lives; random games last ~160-380 steps (a 200-step limit cuts some); catches score 50.
GAME, GAME_LIMIT, GAME_SEED = "ALE/Asterix-v5", 200, 3


@pytest.fixture(scope="module")
def envpool():
    return pytest.importorskip("envpool", reason=ENVPOOL_REASON)


@pytest.fixture(scope="module")
def backend(envpool):
    import wrappers.envpool_backend as backend
    return backend


def is_fresh_hopper(observation: np.ndarray) -> bool:
    return bool(np.abs(observation - HOPPER_INIT).max() <= 5e-3 + 1e-9)


def is_healthy_hopper(observation: np.ndarray) -> bool:
    """Hopper-v4's health rule on an observation: height > 0.7, |angle| < 0.2, every state entry in
    (-100, 100) (velocities are clipped to +-10 in observations, so only positions can break it)."""
    return bool(observation[0] > 0.7 and abs(observation[1]) < 0.2 and np.all(np.abs(observation[1:]) < 100))


@pytest.mark.parametrize("name", ["gymnasium", "envpool"])
def test_hopper_same_step_semantics_match_the_gymnasium_path(name, request):
    """The gymnasium path is the reference: both pass the same checks (the gymnasium run needs no envpool)."""
    if name == "envpool":
        backend = request.getfixturevalue("backend")
        envs = backend.make_envpool_training_env(HOPPER, NUM_ENVS, seed=SEED, max_episode_steps=LIMIT)
    else:
        envs = make_vector_env(HOPPER, NUM_ENVS, max_episode_steps=LIMIT)
    try:
        assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
        observations, _ = envs.reset(seed=SEED)
        envs.action_space.seed(SEED)
        assert observations.shape == (NUM_ENVS, 11) and all(map(is_fresh_hopper, observations))
        lengths, returns = np.zeros(NUM_ENVS, dtype=int), np.zeros(NUM_ENVS)
        ends = {"terminated": 0, "truncated": 0}
        for _ in range(300):
            previous = observations
            observations, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
            assert observations.shape == (NUM_ENVS, 11) and rewards.shape == (NUM_ENVS,)
            assert terminations.dtype == bool and truncations.dtype == bool
            lengths += 1
            returns += rewards
            done = terminations | truncations
            if not done.any():
                assert not infos.get("_final_obs", np.zeros(1, bool)).any()
                assert not infos.get("_episode", np.zeros(1, bool)).any()
                continue
            np.testing.assert_array_equal(infos["_final_obs"], done)
            np.testing.assert_array_equal(infos["_episode"], done)
            for i in np.flatnonzero(done):
                final = infos["final_obs"][i]
                assert final.shape == (11,)
                assert is_fresh_hopper(observations[i]), "the observation after a done is a reset"
                assert not is_fresh_hopper(final) and not np.array_equal(final, previous[i])
                assert truncations[i] == (lengths[i] == LIMIT), "truncation exactly at the time limit"
                if lengths[i] < LIMIT:
                    assert terminations[i] and not is_healthy_hopper(final), "termination: the hopper fell"
                elif name == "gymnasium":  # falling on the last step: terminated and truncated
                    assert terminations[i] == (not is_healthy_hopper(final))
                else:  # envpool flags one of the two: a fall on the last step is a truncation only
                    assert not terminations[i]
                ends["terminated" if terminations[i] else "truncated"] += 1
                assert infos["episode"]["l"][i] == lengths[i]
                assert infos["episode"]["r"][i] == pytest.approx(returns[i], rel=1e-9, abs=1e-9)
                lengths[i], returns[i] = 0, 0.0
            for i in np.flatnonzero(~done):  # the others go on: no reset in between
                assert not is_fresh_hopper(observations[i]) or lengths[i] < 3
        assert ends["terminated"] > 5 and ends["truncated"] > 2, ends
    finally:
        envs.close()


@pytest.mark.parametrize("environment_id", ["Hopper-v4", "Hopper-v5", "HalfCheetah-v4", "Humanoid-v5"])
def test_spaces_are_gymnasiums(environment_id, backend):
    envs = backend.make_envpool_vector_env(environment_id, 2, seed=SEED)
    reference = gym.make(environment_id)
    try:
        assert envs.single_observation_space == reference.observation_space
        assert envs.single_action_space == reference.action_space  # float32 bounds like gymnasium's
        assert envs.observation_space.shape == (2, *reference.observation_space.shape)
        observations, rewards, *_ = envs.step(np.zeros((2, *reference.action_space.shape), np.float32))
        assert observations.dtype == reference.observation_space.dtype and rewards.dtype == np.float64
    finally:
        envs.close()
        reference.close()


def test_seeds_reproduce_episodes_and_env_i_gets_seed_plus_i(backend):
    def trajectory(envs, seed):
        first, _ = envs.reset(seed=seed)
        steps = [envs.step(np.full((3, 3), 0.5, np.float32))[0] for _ in range(5)]
        return np.concatenate([first[None], np.stack(steps)])

    envs = backend.make_envpool_vector_env(HOPPER, 3, seed=123)
    try:
        a = trajectory(envs, 7)
        np.testing.assert_array_equal(a, trajectory(envs, 7))  # reset(seed) again: same episodes
        b = trajectory(envs, 8)
        assert not np.array_equal(a, b)
        np.testing.assert_array_equal(a[:, 1:], b[:, :2])  # env i of seed 7 is env i - 1 of seed 8
    finally:
        envs.close()


def test_unknown_ids_are_one_line_environment_problems(backend):
    for environment_id in ("CartPole-v1", "Hopper-v3", "ALE/NoSuchGame-v5", "dm_control/walker-walk-v0"):
        with pytest.raises(EnvironmentProblem, match="gymnasium backend") as error:
            backend.make_envpool_vector_env(environment_id, 1)
        assert "\n" not in str(error.value)
    assert backend.envpool_task_id("ALE/Pong-v5")[:2] == ("Pong-v5", True)
    assert backend.envpool_task_id("PongNoFrameskip-v4")[2]["repeat_action_probability"] == 0.0
    assert backend.envpool_task_id("ALE/TicTacToe3D-v5")[0] == "TicTacToe3d-v5"


def test_missing_envpool_is_a_one_line_environment_problem(monkeypatch):
    from wrappers.envpool_backend import make_envpool_training_env
    monkeypatch.setitem(sys.modules, "envpool", None)  # import envpool raises ImportError
    with pytest.raises(EnvironmentProblem, match="pip install envpool") as error:
        make_envpool_training_env(HOPPER, 1)
    assert "\n" not in str(error.value)


def fresh_stack(frames: np.ndarray) -> bool:
    """A frame stack right after a reset: its first three frames repeat the fourth (envpool) or are
    black (ale-py)."""
    return all(np.array_equal(frames[k], frames[3]) for k in range(3)) or not frames[:3].any()


@pytest.mark.parametrize("name", ["ale-py", "envpool"])
def test_atari_games_end_like_the_ale_py_path(name, request):
    """Evaluation envs (whole games, raw rewards): the checks of the Hopper test, on frames; envpool's games
    are also cut at a 200-step limit."""
    if name == "envpool":
        backend = request.getfixturevalue("backend")
        envs = backend.make_envpool_training_env(GAME, 2, seed=GAME_SEED, evaluation=True,
                                                 max_episode_steps=GAME_LIMIT)
    else:
        envs = make_atari_vector_env(GAME, 2, evaluation=True)
    try:
        observations, _ = envs.reset(seed=GAME_SEED)
        assert observations.shape == (2, 4, 84, 84) and observations.dtype == np.uint8
        assert all(map(fresh_stack, observations))
        rng = np.random.default_rng(GAME_SEED)
        lengths, returns = np.zeros(2, dtype=int), np.zeros(2)
        ends = {"terminated": 0, "truncated": 0}
        for _ in range(2000):
            previous = observations
            observations, rewards, terminations, truncations, infos = envs.step(rng.integers(0, 9, 2))
            lengths += 1
            returns += rewards
            done = terminations | truncations
            assert np.array_equal(infos.get("_final_obs", np.zeros(2, bool)), done) or not done.any()
            for i in np.flatnonzero(~done):  # the stack shifts by one frame
                np.testing.assert_array_equal(observations[i, :3], previous[i, 1:])
            for i in np.flatnonzero(done):
                final = infos["final_obs"][i]
                np.testing.assert_array_equal(final[:3], previous[i, 1:])  # the game's last stack
                assert fresh_stack(observations[i]) and not np.array_equal(observations[i], final)
                if name == "envpool":  # a game over on the last step is both (as gymnasium's TimeLimit)
                    assert truncations[i] == (lengths[i] == GAME_LIMIT)
                    assert terminations[i] == bool(infos["final_info"]["terminated"][i])
                else:
                    assert terminations[i] and not truncations[i]
                ends["terminated"] += int(terminations[i])
                ends["truncated"] += int(truncations[i])
                assert infos["_episode"][i] and infos["episode"]["l"][i] == lengths[i]
                assert infos["episode"]["r"][i] == returns[i]
                lengths[i], returns[i] = 0, 0.0
            if ends["terminated"] >= 2 and (name != "envpool" or ends["truncated"] >= 1):
                break
        assert ends["terminated"] >= 2 and (name != "envpool" or ends["truncated"] >= 1), ends
    finally:
        envs.close()


def test_atari_training_env_ends_learning_episodes_at_life_losses(backend):
    envs = backend.make_envpool_training_env(GAME, 2, seed=GAME_SEED, sticky_action_probability=0.25)
    try:
        assert envs.unwrapped.config["repeat_action_probability"] == pytest.approx(0.25)
        _, infos = envs.reset(seed=GAME_SEED)
        lives = infos["lives"].copy()
        rng = np.random.default_rng(GAME_SEED)
        life_losses = games = 0
        game_returns = np.zeros(2)
        for _ in range(1000):
            observations, rewards, terminations, truncations, infos = envs.step(rng.integers(0, 9, 2))
            assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
            assert not truncations.any()
            game_returns += infos["reward"]
            lost = (0 < infos["lives"]) & (infos["lives"] < lives)
            assert np.array_equal(terminations & lost, lost)
            for i in np.flatnonzero(lost):  # the game goes on: final observation = observation
                np.testing.assert_array_equal(infos["final_obs"][i], observations[i])
                life_losses += 1
            for i in np.flatnonzero(infos.get("_episode", np.zeros(2, bool))):  # full-game raw scores
                assert infos["episode"]["r"][i] == game_returns[i] and game_returns[i] % 50 == 0
                game_returns[i] = 0.0
                games += 1
            lives = infos["lives"].copy()
            if games >= 2:
                break
        assert games >= 2 and life_losses >= 2 * games
    finally:
        envs.close()


def test_trainer_runs_two_iterations_on_envpool_envs(backend):
    import main
    import main_atari
    from wrappers import describe_atari_environment, describe_environment

    for environment_id, entry, info, num_steps, options in [
            (HOPPER, main, describe_environment(HOPPER), 32, {"normalize_rewards": True}),
            (GAME, main_atari, describe_atari_environment(GAME), 8,
             {"normalize_observations": False, "normalize_rewards": False})]:
        config = PPOConfig(environment_id=environment_id, num_envs=2, num_steps_collected=num_steps,
                           num_mini_batches=2, num_epochs=1, total_timesteps=4 * num_steps, progress=False, **options)
        envs = backend.make_envpool_training_env(environment_id, config.num_envs, seed=config.seed)
        try:
            assert envs.single_observation_space == info.observation_space
            agent = entry.make_agent(config, info)
            trainer = Trainer(config, envs, agent, torch.device("cpu"))
            trainer.train()
            assert trainer.iteration == 2 and trainer.global_step == config.total_timesteps
            assert torch.isfinite(trainer.buffer.values).all()
            if environment_id == HOPPER:
                assert trainer.collector.recent_lengths, "random Hopper episodes end within 64 steps"
        finally:
            envs.close()


def test_main_py_trains_and_evaluates_with_env_backend_envpool(backend, tmp_path):
    run_dir = train_with_backend(tmp_path, "Hopper-v4", "envpool", num_envs=2, num_steps=64, total_timesteps=256,
                                 eval_episodes=2)
    assert np.isfinite(json.loads((run_dir / "evaluation.json").read_text())["mean_return"])
