"""GAE against numbers computed by hand."""

import pytest
import torch

from ppo.gae import compute_gae


def column(*values):
    return torch.tensor(values, dtype=torch.float32).unsqueeze(1)  # [T, 1]


def test_gae_cuts_the_chain_at_a_terminal_step():
    # gamma = lambda = 0.5; episode ends after step 1.
    # t=2: delta = 3 + 0.5*2.0 - 1.5 = 2.5                    A = 2.5
    # t=1: delta = 2 + 0 (done) - 1.0 = 1.0                     A = 1.0 (no carry over the end)
    # t=0: delta = 1 + 0.5*1.0 - 0.5 = 1.0                      A = 1.0 + 0.25*1.0 = 1.25
    advantages, returns = compute_gae(column(1, 2, 3), column(0.5, 1.0, 1.5), column(0, 1, 0),
                                      torch.tensor([2.0]), gamma=0.5, gae_lambda=0.5)
    assert advantages.squeeze(1).tolist() == pytest.approx([1.25, 1.0, 2.5])
    assert returns.squeeze(1).tolist() == pytest.approx([1.75, 2.0, 4.0])


def test_truncation_bootstraps_with_final_observation_value():
    # Same rollout but step 1 was truncated by a time limit with V(final_obs) = 4: the trainer adds
    # gamma * 4 = 2 to its reward, so t=1: delta = 4 - 1.0 = 3.0; t=0: A = 1.0 + 0.25*3.0 = 1.75.
    rewards = column(1, 2 + 0.5 * 4.0, 3)
    advantages, _ = compute_gae(rewards, column(0.5, 1.0, 1.5), column(0, 1, 0), torch.tensor([2.0]),
                                gamma=0.5, gae_lambda=0.5)
    assert advantages.squeeze(1).tolist() == pytest.approx([1.75, 3.0, 2.5])


def test_lambda_one_gives_discounted_monte_carlo_returns():
    # lambda = 1, gamma = 0.9, no episode end, bootstrap 10:
    # R2 = 1 + 0.9*10 = 10, R1 = 1 + 0.9*10 = 10, R0 = 1 + 0.9*10 = 10 (a fixed point, by construction)
    _, returns = compute_gae(column(1, 1, 1), column(0, 0, 0), column(0, 0, 0), torch.tensor([10.0]),
                             gamma=0.9, gae_lambda=1.0)
    assert returns.squeeze(1).tolist() == pytest.approx([10.0, 10.0, 10.0])


def test_lambda_zero_is_one_step_td_and_envs_are_independent():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    values = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    dones = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    advantages, _ = compute_gae(rewards, values, dones, torch.tensor([3.0, 3.0]), gamma=0.5, gae_lambda=0.0)
    # env 0: t0: 1 + 0.5*1.0 - 0.5 = 1.0; t1: 0 + 0.5*3 - 1 = 0.5
    # env 1: t0: 0 + 0.5*1.0 - 0.5 = 0.0; t1: 2 + 0 - 1 = 1.0 (terminal)
    assert advantages.flatten().tolist() == pytest.approx([1.0, 0.0, 0.5, 1.0])
