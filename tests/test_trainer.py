"""Trainer set-up: optimizer groups and learning-rate annealing."""

import pytest
import torch

from networks import MLPActorCritic
from ppo.config import PPOConfig
from ppo.trainer import Trainer
from wrappers import describe_environment, make_vector_env


def make_trainer(**overrides):
    config = PPOConfig(environment_id="CartPole-v1", num_envs=2, num_steps_collected=16, num_mini_batches=2,
                       num_epochs=1, total_timesteps=64, learning_rate=1e-3, **overrides)
    info = describe_environment(config.environment_id)
    envs = make_vector_env(config.environment_id, config.num_envs)
    agent = MLPActorCritic(info.observation_space.shape, info.action_space)
    return Trainer(config, envs, agent, torch.device("cpu")), agent


def test_one_learning_rate_is_one_optimizer_group_over_every_parameter():
    trainer, agent = make_trainer()
    (group,) = trainer.optimizer.param_groups
    assert group["lr"] == 1e-3
    assert {id(p) for p in group["params"]} == {id(p) for p in agent.parameters()}
    trainer.envs.close()


def test_value_learning_rate_gets_its_own_group_and_both_anneal():
    trainer, agent = make_trainer(value_learning_rate=5e-4)
    policy, value = trainer.optimizer.param_groups
    assert (policy["lr"], value["lr"]) == (1e-3, 5e-4)
    assert {id(p) for p in value["params"]} == {id(p) for p in agent.value_parameters()}
    trainer.train()  # 2 iterations: the second starts at half of each base rate
    assert (policy["lr"], value["lr"]) == pytest.approx((0.5e-3, 2.5e-4))
    trainer.envs.close()
