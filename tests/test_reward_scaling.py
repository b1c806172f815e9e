"""RewardScaler (ppo/reward_scaling.py): running discounted returns, their variance, scaled rewards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppo.reward_scaling import RewardScaler


def test_discounted_returns_restart_at_episode_ends():
    scaler = RewardScaler(num_envs=2, gamma=0.5, clip=10.0, device=torch.device("cpu"))
    rewards = torch.tensor([[1.0, 2.0], [4.0, 2.0], [8.0, 2.0]])
    dones = torch.tensor([[False, False], [True, False], [False, False]])
    returns = scaler.discounted_returns_of(rewards, dones)
    # env 0: G = 1, 0.5 * 1 + 4 = 4.5 (episode ends), then 8 (restarted)
    # env 1: G = 2, 0.5 * 2 + 2 = 3, 0.5 * 3 + 2 = 3.5
    assert torch.equal(returns, torch.tensor([[1.0, 2.0], [4.5, 3.0], [8.0, 3.5]]))
    assert torch.equal(scaler.discounted_returns, torch.tensor([8.0, 3.5]))  # carried to the next rollout
    assert torch.equal(scaler.discounted_returns_of(rewards[:1], dones[:1]), torch.tensor([[5.0, 3.75]]))


def test_statistics_match_the_variance_of_everything_seen():
    scaler = RewardScaler(num_envs=3, gamma=0.9, clip=10.0, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    first, second = rng.normal(2.0, 3.0, size=12), rng.normal(-1.0, 0.5, size=12)
    scaler.update(torch.tensor(first, dtype=torch.float32))
    scaler.update(torch.tensor(second, dtype=torch.float32))
    # The prior is a pseudo-sample of weight 1e-4 with mean 0 and variance 1 (baselines' RunningMeanStd).
    samples = np.concatenate([first.astype(np.float32), second.astype(np.float32)]).astype(np.float64)
    weight = 1e-4
    mean = samples.sum() / (24 + weight)
    var = (weight * (1.0 + mean ** 2) + ((samples - mean) ** 2).sum()) / (24 + weight)
    assert float(scaler.count) == pytest.approx(24 + weight)
    assert float(scaler.mean) == pytest.approx(mean, rel=1e-9)
    assert float(scaler.var) == pytest.approx(var, rel=1e-9)


def test_scale_divides_by_the_return_std_and_clips():
    scaler = RewardScaler(num_envs=3, gamma=0.99, clip=5.0, device=torch.device("cpu"))
    scaler.var.fill_(4.0)
    scaled = scaler.scale(torch.tensor([1.0, -30.0, 30.0]))
    assert torch.allclose(scaled, torch.tensor([0.5, -5.0, 5.0]))


def test_state_round_trip_and_episode_restart():
    device = torch.device("cpu")
    scaler = RewardScaler(num_envs=2, gamma=0.99, clip=10.0, device=device)
    scaler.update(scaler.discounted_returns_of(torch.tensor([[1.0, -2.0], [1.0, -2.0]]),
                                               torch.zeros(2, 2, dtype=torch.bool)))
    state = scaler.state_dict()
    restored = RewardScaler(num_envs=2, gamma=0.99, clip=10.0, device=device)
    restored.load_state_dict(state)
    assert (float(restored.mean), float(restored.var), float(restored.count)) == (
        float(scaler.mean), float(scaler.var), float(scaler.count))
    assert torch.equal(restored.discounted_returns, scaler.discounted_returns)
    restarted = RewardScaler(num_envs=2, gamma=0.99, clip=10.0, device=device)
    restarted.load_state_dict(state, restore_returns=False)
    assert float(restarted.var) == float(scaler.var) and not restarted.discounted_returns.any()
    with pytest.raises(ValueError, match="saved for 3 envs, this run has 2"):
        restored.load_state_dict({**state, "discounted_returns": [0.0, 0.0, 0.0]})
