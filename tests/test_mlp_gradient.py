"""The hand-written PPO gradient (ppo/learners/numpy/gradient.py) against autograd over ppo.losses.ppo_loss."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from networks import MLPActorCritic
from ppo.losses import ppo_loss
from ppo.learners.numpy.gradient import MLPLossGradient
from ppo.learners.numpy.rollout_policy import numpy_unsupported_reason as unsupported_reason

BATCH = 96


def _agent_and_batch(discrete: bool, activation: str, num_hidden_layers: int, seed: int = 0,
                     init_log_std: float = 0.0):
    torch.manual_seed(seed)
    space = gym.spaces.Discrete(4) if discrete else gym.spaces.Box(-1.0, 1.0, (3,))
    agent = MLPActorCritic((7,), space, hidden_size=16, num_hidden_layers=num_hidden_layers,
                           activation=activation, normalize_observations=True, init_log_std=init_log_std)
    # give the layers some size, so that every sample's gradient matters
    with torch.no_grad():
        for parameter in agent.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    observations = 2.0 * torch.randn(BATCH, 7)
    agent.update_normalizer(observations)
    with torch.no_grad():
        sampled = agent.get_action_and_value(observations)
    # old log-probs and values away from the current ones: ratios and value changes both inside and
    # outside the clip range
    batch = dict(observations=observations, actions=sampled.action,
                 log_probs=sampled.log_prob + 0.4 * torch.randn(BATCH),
                 values=sampled.value + 0.4 * torch.randn(BATCH),
                 advantages=torch.randn(BATCH), returns=sampled.value + torch.randn(BATCH))
    return agent, batch


def _autograd(agent, batch, clip, ent, vf, clip_value_loss, normalize_advantages):
    out = agent.get_action_and_value(batch["observations"], batch["actions"])
    losses = ppo_loss(out.log_prob, batch["log_probs"], batch["advantages"], out.value, batch["values"],
                      batch["returns"], out.entropy, clip, ent, vf, clip_value_loss, normalize_advantages)
    agent.zero_grad(set_to_none=True)
    losses.loss.backward()
    return losses, {name: p.grad.clone() for name, p in agent.named_parameters()}


def _manual(agent, batch, clip, ent, vf, clip_value_loss, normalize_advantages):
    gradient = MLPLossGradient(agent, ent, vf, clip_value_loss, normalize_advantages)
    for parameter in agent.parameters():
        parameter.grad = torch.full_like(parameter, float("nan"))  # every entry must be overwritten
    with torch.no_grad():
        inputs = agent.preprocess(batch["observations"])
    losses = gradient(inputs, batch["actions"], batch["log_probs"], batch["values"], batch["advantages"],
                      batch["returns"], clip)
    return losses, {name: p.grad.clone() for name, p in agent.named_parameters()}


@pytest.mark.parametrize("discrete", [False, True], ids=["gaussian", "categorical"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("options", [(True, True, 0.01), (False, False, 0.0), (True, False, 0.0),
                                     (False, True, 0.05)], ids=["clipv-normadv-ent", "plain", "clipv", "normadv-ent"])
def test_loss_and_gradients_equal_autograd(discrete, activation, options):
    clip_value_loss, normalize_advantages, ent = options
    agent, batch = _agent_and_batch(discrete, activation, num_hidden_layers=2)
    expected, expected_gradients = _autograd(agent, batch, 0.2, ent, 0.7, clip_value_loss, normalize_advantages)
    clipped = ((expected.clipfrac > 0.1) & (expected.clipfrac < 0.9)).item()
    assert clipped, "the batch should have ratios both inside and outside the clip range"
    actual, actual_gradients = _manual(agent, batch, 0.2, ent, 0.7, clip_value_loss, normalize_advantages)
    for field in expected._fields:
        torch.testing.assert_close(getattr(actual, field), getattr(expected, field).detach(), rtol=1e-5,
                                   atol=1e-6, msg=field)
    for name, gradient in expected_gradients.items():
        assert gradient.abs().sum() > 0 or name == "action_head.log_std" and ent == 0.0, name
        torch.testing.assert_close(actual_gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("discrete", [False, True], ids=["gaussian", "categorical"])
def test_without_hidden_layers(discrete):
    agent, batch = _agent_and_batch(discrete, "tanh", num_hidden_layers=0, seed=3)
    expected, expected_gradients = _autograd(agent, batch, 0.1, 0.01, 0.5, True, True)
    actual, actual_gradients = _manual(agent, batch, 0.1, 0.01, 0.5, True, True)
    torch.testing.assert_close(actual.loss, expected.loss.detach())
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(actual_gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_log_std_outside_its_bounds_gets_no_gradient():
    """The log-std is clamped to [LOG_STD_MIN, LOG_STD_MAX]: beyond the bound its gradient is zero."""
    agent, batch = _agent_and_batch(False, "tanh", num_hidden_layers=2, init_log_std=0.0)
    with torch.no_grad():
        agent.action_head.log_std.copy_(torch.tensor([-6.0, 0.0, 3.0]))
    expected, expected_gradients = _autograd(agent, batch, 0.2, 0.01, 0.5, False, True)
    _, actual_gradients = _manual(agent, batch, 0.2, 0.01, 0.5, False, True)
    assert expected_gradients["action_head.log_std"][0] == 0 and expected_gradients["action_head.log_std"][2] == 0
    torch.testing.assert_close(actual_gradients["action_head.log_std"], expected_gradients["action_head.log_std"])


def test_unsupported_agents_are_named():
    space = gym.spaces.Box(-1.0, 1.0, (2,))
    agent = MLPActorCritic((5,), space, state_dependent_std=True)
    assert "state-dependent" in unsupported_reason(agent)
    with pytest.raises(ValueError, match="state-dependent"):
        MLPLossGradient(agent, 0.0, 0.5, True, True)
    assert unsupported_reason(MLPActorCritic((5,), space)) is None
