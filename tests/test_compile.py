"""--compile: the torch learner's torch.compile'd minibatch loss computes what the eager one does."""

import pytest
import torch

from networks import MLPActorCritic
from ppo.config import PPOConfig
from ppo.loop import Trainer
from wrappers import describe_environment, make_vector_env


def test_compiled_loss_and_gradients_equal_eager():
    config = PPOConfig(environment_id="Pendulum-v1", num_envs=2, num_steps_collected=32, num_mini_batches=2,
                       total_timesteps=64, compile=True)
    info = describe_environment(config.environment_id)
    envs = make_vector_env(config.environment_id, config.num_envs)
    try:
        agent = MLPActorCritic(info.observation_space.shape, info.action_space, normalize_observations=True)
        trainer = Trainer(config, envs, agent, torch.device("cpu"))
        trainer.seed_everything()
        trainer.collect_rollout()
        agent.update_normalizer(trainer.buffer.observations.flatten(0, 1))
    finally:
        envs.close()
    learner = trainer.learner
    assert learner.name == "torch"  # --compile runs the torch learner
    # a bound method equals another bound method of the same function and object; the compiled one does not
    assert learner.loss != learner.minibatch_loss
    batch = next(trainer.buffer.minibatches(2, torch.Generator().manual_seed(0)))

    def loss_and_gradients(loss_function):
        agent.zero_grad(set_to_none=True)
        losses = loss_function(batch, learner.clip_coeff)
        losses.loss.backward()
        return losses, [parameter.grad.clone() for parameter in agent.parameters()]

    eager, eager_gradients = loss_and_gradients(learner.minibatch_loss)
    compiled, compiled_gradients = loss_and_gradients(learner.loss)
    for name in eager._fields:
        assert getattr(compiled, name).item() == pytest.approx(getattr(eager, name).item(), rel=1e-5, abs=1e-6), name
    for expected, got in zip(eager_gradients, compiled_gradients):
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_an_eager_learner_calls_its_loss_uncompiled():
    config = PPOConfig(environment_id="Pendulum-v1", num_envs=2, num_steps_collected=32, num_mini_batches=2,
                       total_timesteps=64, learner="torch")
    info = describe_environment(config.environment_id)
    envs = make_vector_env(config.environment_id, config.num_envs)
    agent = MLPActorCritic(info.observation_space.shape, info.action_space)
    trainer = Trainer(config, envs, agent, torch.device("cpu"))
    envs.close()
    assert trainer.learner.loss == trainer.learner.minibatch_loss
