"""The numpy-vectorized CartPole against gymnasium's single-env CartPole, transition by transition."""

import gymnasium as gym
import numpy as np
import pytest

from wrappers import make_vector_env
from wrappers.vector import SameStepCartPoleVectorEnv, find_wrapper, load_vector_env_state, vector_env_state


def _synchronise(single, state):
    single.reset()
    single.unwrapped.state = np.array(state, dtype=np.float64)


def test_vectorized_cartpole_steps_like_cartpole_env_and_resets_in_the_same_step():
    envs = make_vector_env("CartPole-v1", 3)
    vectorized = find_wrapper(envs, SameStepCartPoleVectorEnv)
    assert vectorized is not None and envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    observations, _ = envs.reset(seed=3)
    singles = [gym.make("CartPole-v1") for _ in range(3)]
    for single, state in zip(singles, vectorized.state.T):
        _synchronise(single, state)
    rng = np.random.default_rng(0)
    ends = {"terminated": 0, "truncated": 0}
    # a balancing controller with random actions mixed in (more in env 2): episodes end both by falling
    # and by the 500-step time limit
    for _ in range(3000):
        balance = (observations[:, 2] + 0.5 * observations[:, 3] > 0).astype(np.int64)
        actions = np.where(rng.random(3) < [0.02, 0.1, 0.5], rng.integers(0, 2, 3), balance)
        observations, rewards, terminations, truncations, infos = envs.step(actions)
        for index, single in enumerate(singles):
            expected, reward, terminated, truncated, _ = single.step(int(actions[index]))
            assert (reward, terminated, truncated) == (rewards[index], terminations[index], truncations[index])
            if terminated or truncated:
                ends["terminated" if terminated else "truncated"] += 1
                np.testing.assert_allclose(infos["final_obs"][index], expected, rtol=1e-6)
                assert infos["_final_obs"][index] and infos["_episode"][index]
                assert np.all(np.abs(observations[index]) <= 0.05)  # a fresh start, in the same step
                _synchronise(single, vectorized.state[:, index])
            else:
                np.testing.assert_allclose(observations[index], expected, rtol=1e-6)
    assert ends["terminated"] > 0 and ends["truncated"] > 0, ends


def test_vectorized_cartpole_state_round_trip_continues_identically():
    envs, copy = make_vector_env("CartPole-v1", 2), make_vector_env("CartPole-v1", 2)
    envs.reset(seed=0)
    copy.reset(seed=99)
    for _ in range(37):
        envs.step(np.array([0, 1]))
    assert load_vector_env_state(copy, vector_env_state(envs))
    for step in range(300):
        actions = np.array([step % 2, (step // 3) % 2])
        a, b = envs.step(actions), copy.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        assert ("episode" in a[4]) == ("episode" in b[4])
        if "episode" in a[4]:  # the running episode statistics were restored too
            np.testing.assert_array_equal(a[4]["episode"]["r"], b[4]["episode"]["r"])


def test_cartpole_action_check_agrees_with_gymnasium_multidiscrete():
    """The vectorized CartPole's cheaper ``action_space.contains`` (asserted by every step) gives
    ``MultiDiscrete``'s answers, and a bad action still fails the step."""
    envs = SameStepCartPoleVectorEnv(num_envs=3)
    reference = gym.spaces.MultiDiscrete([2, 2, 2])
    candidates = [np.array([0, 1, 1]), np.array([0, 2, 1]), np.array([-1, 0, 0]), np.array([0, 1]),
                  np.array([[0, 1, 1]]), np.array([0.0, 1.0, 1.0]), np.array([0, 1, 1], np.int32),
                  np.array([1, 1, 1], np.uint8), np.array([True, False, True]), [0, 1, 1],
                  np.array([0, 1, np.iinfo(np.int64).min])]
    for actions in candidates:
        assert envs.action_space.contains(actions) == reference.contains(actions), actions
    assert envs.action_space == reference
    envs.reset(seed=0)
    with pytest.raises(AssertionError):
        envs.step(np.array([0, 2, 1]))
