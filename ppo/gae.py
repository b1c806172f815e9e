"""Generalized Advantage Estimation as a pure function."""

from __future__ import annotations

import numpy as np
import torch


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_values: torch.Tensor,
                gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by GAE (Schulman et al. 2016, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation", eq. 16).

    ``delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``; returns are ``A_t + V(s_t)``.

    ``done_t`` means the episode ended with the transition of step ``t`` (termination or truncation), so
    step ``t + 1`` belongs to a new episode and the chain is cut there. Truncated episodes must already
    carry their bootstrap ``gamma * V(final_observation)`` inside ``rewards`` (see
    :meth:`ppo.trainer.Trainer.collect_rollout`); terminated ones carry none.

    Args:
        rewards: ``[T, B]`` rewards of each step (bootstrap included for truncations).
        values: ``[T, B]`` value estimates ``V(s_t)``.
        dones: ``[T, B]`` 1.0 where the episode ended at step ``t``, else 0.0.
        next_values: ``[B]`` value of the observation after the last step ``V(s_T)``.
        gamma: discount factor in [0, 1].
        gae_lambda: GAE lambda in [0, 1].

    Returns:
        ``(advantages, returns)``, each ``[T, B]``.
    """
    not_done = 1.0 - dones.to(rewards.dtype)
    following_values = torch.cat([values[1:], next_values.unsqueeze(0)])   # V(s_{t+1}), [T, B]
    deltas = rewards + gamma * following_values * not_done - values         # all TD errors at once
    decay = gamma * gae_lambda * not_done
    # Only the recursion is sequential. It runs in numpy on the CPU: T steps of numpy arithmetic cost far
    # less than T rounds of small tensor operations (or kernel launches on a GPU); same float32 arithmetic.
    deltas_np, decay_np = deltas.detach().cpu().numpy(), decay.detach().cpu().numpy()
    advantages_np = np.empty_like(deltas_np)
    last_advantage = np.zeros_like(deltas_np[0])
    for t in reversed(range(deltas_np.shape[0])):
        last_advantage = deltas_np[t] + decay_np[t] * last_advantage
        advantages_np[t] = last_advantage
    advantages = torch.from_numpy(advantages_np).to(rewards.device)
    return advantages, advantages + values
