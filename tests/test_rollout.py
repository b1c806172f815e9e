"""Rollouts on a scripted env: truncations bootstrap with V(final observation), terminations do not,
and every stored step is a real transition (no autoreset step enters the buffer)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from networks.actor_critic import ActorCritic
from networks.heads import CategoricalHead
from ppo.config import PPOConfig
from ppo.reward_scaling import RewardScaler
from ppo.loop import Trainer
from wrappers import make_vector_env

GAMMA = 0.5


class CounterEnv(gym.Env):
    """Observation = steps taken in this episode; reward 1 per step; terminates after `terminate_at` steps
    if given (otherwise only the registered time limit of 3 steps ends episodes)."""

    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)
    step_calls = 0
    observations_acted_on: list = []

    def __init__(self, terminate_at=None):
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        CounterEnv.step_calls += 1
        CounterEnv.observations_acted_on.append(self.t)
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {}


gym.register("TestCounter-v0", entry_point=CounterEnv, max_episode_steps=3)
gym.register("TestCounterTerminating-v0", entry_point=CounterEnv, max_episode_steps=3,
             kwargs={"terminate_at": 2})


class LinearValueAgent(ActorCritic):
    """V(s) = 10 * s; actions from a Categorical head."""

    def __init__(self):
        super().__init__()
        self.action_head = CategoricalHead(1, 2)
        self.value_head = nn.Linear(1, 1)
        with torch.no_grad():
            self.value_head.weight.fill_(10.0)
            self.value_head.bias.zero_()

    def features(self, x):
        return x, x


def rollout(environment_id, num_steps=7, num_envs=2, trainer_out=None, **overrides):
    config = PPOConfig(environment_id=environment_id, num_envs=num_envs, num_steps_collected=num_steps,
                       num_mini_batches=1, total_timesteps=num_steps * num_envs, gae_gamma=GAMMA,
                       gae_lambda=1.0, normalize_observations=False,
                       **{"normalize_rewards": False, **overrides})
    envs = make_vector_env(environment_id, num_envs)
    CounterEnv.step_calls = 0
    CounterEnv.observations_acted_on = []
    trainer = Trainer(config, envs, LinearValueAgent(), torch.device("cpu"))
    trainer.seed_everything()
    trainer.collect_rollout()
    envs.close()
    if trainer_out is not None:
        trainer_out.append(trainer)
    return trainer.buffer


def test_truncation_adds_gamma_times_value_of_final_observation():
    buffer = rollout("TestCounter-v0")
    # time limit 3: steps 0,1,2 of each episode have observations 0,1,2; step 2 is truncated with
    # final observation 3, V = 30, so its reward is 1 + 0.5 * 30 = 16; the others keep reward 1.
    truncated = buffer.truncations.bool()
    assert truncated.sum().item() == 4  # steps 2 and 5 of both envs
    assert buffer.rewards[truncated].tolist() == pytest.approx([1 + GAMMA * 30.0] * 4)
    assert torch.all(buffer.rewards[~truncated] == 1.0)
    assert not buffer.terminations.any()


def test_reward_scaling_scales_env_rewards_but_not_the_bootstrap():
    trainers = []
    buffer = rollout("TestCounter-v0", trainer_out=trainers, normalize_rewards=True, reward_clip=100.0)
    scaler = trainers[0].collector.reward_scaler
    # Running returns with gamma 0.5 restart every 3 steps: 1, 1.5, 1.75, 1, 1.5, 1.75, 1 in both envs.
    expected = RewardScaler(2, GAMMA, 100.0, torch.device("cpu"))
    expected.update(torch.tensor([1.0, 1.5, 1.75, 1.0, 1.5, 1.75, 1.0] * 2))
    assert float(scaler.var) == pytest.approx(float(expected.var), rel=1e-9)
    assert scaler.discounted_returns.tolist() == [1.0, 1.0]  # the episodes running at the end
    scaled_reward = 1.0 / float(torch.sqrt(scaler.var + scaler.epsilon))
    assert scaled_reward != pytest.approx(1.0)
    truncated = buffer.truncations.bool()
    # V(final observation 3) = 30 is in the critic's (scaled) units: it is added after scaling.
    assert buffer.rewards[truncated].tolist() == pytest.approx([scaled_reward + GAMMA * 30.0] * 4)
    assert buffer.rewards[~truncated].tolist() == pytest.approx([scaled_reward] * 10)


def test_termination_does_not_bootstrap():
    buffer = rollout("TestCounterTerminating-v0")
    terminated = buffer.terminations.bool()
    assert terminated.sum().item() == 6  # every second step of 7, in 2 envs
    assert torch.all(buffer.rewards == 1.0)
    # the GAE chain is cut: the advantage of a terminal step is r - V(s) = 1 - 10
    assert torch.allclose(buffer.advantages[terminated], torch.tensor(1.0 - 10.0))


def test_no_autoreset_step_enters_the_buffer():
    buffer = rollout("TestCounter-v0", num_steps=7, num_envs=2)
    # every buffered step is one call of env.step, and the buffer holds exactly the observations the
    # envs acted on (0,1,2,0,1,2,0 in each env); the final observation 3 is never stored as a state
    assert CounterEnv.step_calls == 7 * 2
    stored = buffer.observations.squeeze(-1)
    assert stored[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert sorted(stored.flatten().tolist()) == sorted(CounterEnv.observations_acted_on)
    assert not (stored == 3).any()
