"""The Brax backend (wrappers/brax_backend.py): SAME_STEP autoreset, time limits and episode statistics.

Needs the optional packages of requirements-brax.txt; skipped without them. Two envs: brax's trivial
``fast`` (position/velocity of a point, reward = position, never terminates; compiles in about a second)
for the bookkeeping, and ``ant`` (real physics, terminates when it falls or jumps out of its healthy
height range) for one run of random actions. Compiling the ant step on a 2-core CPU takes 20-40 s, once
for the module.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("jax", reason="the Brax backend needs jax: pip install -r requirements-brax.txt")
pytest.importorskip("brax", reason="the Brax backend needs brax: pip install -r requirements-brax.txt")

from conftest import train_with_backend  # noqa: E402
from common.errors import UsageError  # noqa: E402
from wrappers.brax_backend import make_brax_vector_env  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:Brax System, piplines and environments are not actively being"),
    pytest.mark.filterwarnings("ignore:Accessing `.*` directly from `Data` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:JAXopt is no longer maintained:DeprecationWarning"),
]

NUM_ENVS = 4
EPISODE_LENGTH = 20


@pytest.fixture(scope="module")
def fast_envs():
    envs = make_brax_vector_env("brax/fast", NUM_ENVS, seed=0, episode_length=EPISODE_LENGTH)
    yield envs
    envs.close()


@pytest.fixture(scope="module")
def ant_envs():
    envs = make_brax_vector_env("brax/ant", NUM_ENVS, seed=0, episode_length=EPISODE_LENGTH)
    yield envs
    envs.close()


def run_and_check_episodes(envs, num_steps: int, actions_fn) -> dict[str, int]:
    """Step ``envs`` with ``actions_fn()``, checking SAME_STEP and episode statistics against our own count.

    Returns how many steps ended in a termination, a truncation, and a time-limit end.
    """
    observations, infos = envs.reset(seed=0)
    assert infos == {}
    counted_lengths = np.zeros(NUM_ENVS, dtype=np.int64)
    summed_rewards = np.zeros(NUM_ENVS, dtype=np.float64)
    counts = {"terminations": 0, "truncations": 0, "finished": 0}
    for _ in range(num_steps):
        observations, rewards, terminations, truncations, infos = envs.step(actions_fn())
        counted_lengths += 1
        summed_rewards += rewards.double().numpy()
        dones = (terminations | truncations).numpy()
        # The time limit is a truncation exactly at EPISODE_LENGTH steps, never before.
        np.testing.assert_array_equal(truncations.numpy(), counted_lengths == EPISODE_LENGTH)
        assert (counted_lengths[terminations.numpy()] <= EPISODE_LENGTH).all()
        np.testing.assert_array_equal(infos["_final_obs"].numpy(), dones)
        if dones.any():
            assert infos["_episode"].dtype == np.bool_
            np.testing.assert_array_equal(infos["_episode"], dones)
            np.testing.assert_array_equal(infos["episode"]["l"][dones], counted_lengths[dones])
            np.testing.assert_allclose(infos["episode"]["r"][dones], summed_rewards[dones], rtol=1e-5, atol=1e-4)
            # SAME_STEP: the returned observation already starts the next episode.
            final = infos["final_obs"][torch.as_tensor(dones)]
            assert not torch.equal(final, observations[torch.as_tensor(dones)])
            counted_lengths[dones] = 0
            summed_rewards[dones] = 0.0
            counts["finished"] += int(dones.sum())
        else:
            assert "_episode" not in infos
        counts["terminations"] += int(terminations.sum())
        counts["truncations"] += int(truncations.sum())
    return counts


def test_unknown_or_malformed_ids_raise_usage_error():
    with pytest.raises(UsageError, match="unknown Brax environment 'brax/no-such-env'"):
        make_brax_vector_env("brax/no-such-env", 2)
    with pytest.raises(UsageError, match="brax/<name>"):
        make_brax_vector_env("Ant-v5", 2)
    with pytest.raises(UsageError, match="num_envs"):
        make_brax_vector_env("brax/fast", 0)


def test_missing_jax_raises_usage_error_with_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # makes `import jax` fail
    with pytest.raises(UsageError, match=r"pip install -r requirements-brax.txt"):
        make_brax_vector_env("brax/ant", 2)


def test_interface_shapes_dtypes_and_devices(fast_envs):
    envs = fast_envs
    assert envs.num_envs == NUM_ENVS
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert envs.single_observation_space == gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    assert envs.single_action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    assert envs.observation_space.shape == (NUM_ENVS, 2) and envs.action_space.shape == (NUM_ENVS, 1)
    observations, _ = envs.reset(seed=1)
    assert observations.shape == (NUM_ENVS, 2) and observations.dtype == torch.float32
    stepped = envs.step(torch.ones(NUM_ENVS, 1))
    observations, rewards, terminations, truncations, infos = stepped
    for tensor, shape, dtype in ((observations, (NUM_ENVS, 2), torch.float32), (rewards, (NUM_ENVS,), torch.float32),
                                 (terminations, (NUM_ENVS,), torch.bool), (truncations, (NUM_ENVS,), torch.bool),
                                 (infos["final_obs"], (NUM_ENVS, 2), torch.float32),
                                 (infos["_final_obs"], (NUM_ENVS,), torch.bool)):
        assert isinstance(tensor, torch.Tensor) and tensor.shape == shape and tensor.dtype == dtype
        assert tensor.device == torch.device("cpu")
    # fast: velocity += 0.02 where action > 0, position += velocity * 0.02, reward = position.
    np.testing.assert_allclose(observations.numpy(), [[0.0004, 0.02]] * NUM_ENVS, rtol=1e-5)
    np.testing.assert_allclose(rewards.numpy(), [0.0004] * NUM_ENVS, rtol=1e-5)


def test_actions_are_handed_to_jax_without_a_copy(fast_envs):
    actions = torch.rand(NUM_ENVS, 1)
    as_jax = fast_envs._to_jax(actions)
    assert as_jax.unsafe_buffer_pointer() == actions.data_ptr()
    assert torch.from_dlpack(as_jax).data_ptr() == actions.data_ptr()


def test_time_limit_truncates_and_statistics_match_counted_steps(fast_envs):
    generator = torch.Generator().manual_seed(0)
    counts = run_and_check_episodes(fast_envs, 2 * EPISODE_LENGTH + 5,
                                    lambda: torch.rand(NUM_ENVS, 1, generator=generator) * 2 - 1)
    # fast never terminates: every env is truncated at steps 20 and 40.
    assert counts == {"terminations": 0, "truncations": 2 * NUM_ENVS, "finished": 2 * NUM_ENVS}


def test_ant_random_actions_same_step_autoreset(ant_envs):
    envs = ant_envs
    assert envs.single_observation_space.shape == (27,) and envs.single_action_space.shape == (8,)
    generator = torch.Generator().manual_seed(0)
    counts = run_and_check_episodes(envs, 10 * EPISODE_LENGTH,
                                    lambda: torch.rand(NUM_ENVS, 8, generator=generator) * 2 - 1)
    # Every env ends at least every 20 steps; brax's ant also terminates (torso height out of [0.2, 1.0])
    # every few dozen random steps (4 times in the first 60 steps here), without truncation.
    assert counts["finished"] >= 10 * NUM_ENVS
    assert counts["terminations"] > 0


def test_ant_reset_seed_reproduces_initial_states(ant_envs):
    first, _ = ant_envs.reset(seed=3)
    first = first.clone()
    again, _ = ant_envs.reset(seed=3)
    other, _ = ant_envs.reset(seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # every env draws its own initial state


def test_main_py_trains_and_evaluates_with_env_backend_brax(tmp_path):
    # brax/fast: brax's trivial test env, compiled in about a second on a CPU.
    run_dir = train_with_backend(tmp_path, "brax/fast", "brax", num_envs=4, num_steps=16, total_timesteps=128,
                                 eval_episodes=1)
    metrics = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(metrics) == 1 + 2  # header and 2 iterations of 64 steps


def test_brax_ids_and_the_brax_backend_go_together(cli):
    result = cli("main.py", "--environment-id", "brax/fast")
    assert result.returncode == 2 and result.stderr.strip() == "main.py: error: brax/fast needs --env-backend brax"
    result = cli("main.py", "--env-backend", "brax")
    assert result.returncode == 2 and "takes brax/<name> ids" in result.stderr
