"""Reward scaling by the running standard deviation of the discounted return."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class RewardScaler:
    """Divides rewards by the standard deviation of a running discounted return, then clips them.

    This is PPO's "reward scaling" (Engstrom et al. 2020, "Implementation Matters in Deep Policy Gradients",
    section 3 and Algorithm 1; openai/baselines ``VecNormalize``): per env, ``G_t = gamma * G_{t-1} + r_t``
    (restarted at every episode end), and rewards are divided by ``sqrt(Var[G] + epsilon)`` where ``Var[G]``
    is a running variance over all envs and steps seen so far. The mean is not subtracted, so the sign of
    rewards is kept. Rewards are then clipped to ``[-clip, clip]``.

    The trainer calls, once per rollout, :meth:`discounted_returns_of` (the running returns at every step),
    :meth:`update` (the statistics merged with the whole rollout's returns in one batch: Chan et al. 1979
    parallel variance) and :meth:`scale` (the rollout's rewards divided by the updated std). Unlike
    gymnasium's per-step ``NormalizeReward`` wrapper, this costs no per-step work, runs on the learner's
    device, and its state lives in the trainer's checkpoint.

    Args:
        num_envs: number of envs ``N``.
        gamma: discount of the running return, in ``[0, 1]``.
        clip: bound of the scaled rewards, > 0.
        device: where the accumulators live (the learner's device).
        epsilon: added to the variance before the square root.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float, device: torch.device,
                 epsilon: float = 1e-8) -> None:
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon
        self.discounted_returns = torch.zeros(num_envs, device=device)  # [N], G_t of each running episode
        # Running statistics in float64; count starts at 1e-4 with variance 1 (as baselines' RunningMeanStd).
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.var = torch.ones((), dtype=torch.float64, device=device)
        self.count = torch.full((), 1e-4, dtype=torch.float64, device=device)

    def discounted_returns_of(self, rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """The running discounted return after each step of a rollout.

        Args:
            rewards: ``[T, N]`` raw rewards of the rollout.
            dones: ``[T, N]`` bool, True where an episode ended (terminated or truncated) at that step:
                the env's return restarts from zero at the next step.

        Returns:
            ``[T, N]`` float32: ``G_t = gamma * G_{t-1} + r_t``. The running returns carry over to the next
            rollout.
        """
        # The recursion runs in numpy on the CPU: T steps of numpy arithmetic cost far less than T rounds
        # of small tensor operations (or kernel launches on a GPU); the arithmetic is the same float32.
        rewards_np, dones_np = rewards.detach().cpu().numpy(), dones.cpu().numpy()
        returns = np.empty_like(rewards_np)
        running = self.discounted_returns.cpu().numpy().copy()
        gamma = np.float32(self.gamma)
        for step in range(rewards_np.shape[0]):
            running = running * gamma + rewards_np[step]
            returns[step] = running
            running[dones_np[step]] = 0.0
        self.discounted_returns.copy_(torch.from_numpy(running))
        return torch.from_numpy(returns).to(rewards.device)

    def update(self, returns: torch.Tensor) -> None:
        """Merge a batch of discounted returns (any shape) into the running mean and variance."""
        returns = returns.reshape(-1).to(torch.float64)
        batch_count = returns.numel()
        batch_mean = returns.mean()
        batch_var = returns.var(unbiased=False)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean = self.mean + delta * batch_count / total
        self.var = m2 / total
        self.count = total

    def scale(self, rewards: torch.Tensor) -> torch.Tensor:
        """``clip(rewards / sqrt(var + epsilon), -clip, clip)``, same shape and dtype as ``rewards``."""
        std = torch.sqrt(self.var + self.epsilon).to(rewards.dtype)
        return (rewards / std).clamp_(-self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        """Statistics and running returns as plain data (for checkpoints)."""
        return {"mean": float(self.mean), "var": float(self.var), "count": float(self.count),
                "discounted_returns": self.discounted_returns.tolist()}

    def load_state_dict(self, state: dict[str, Any], restore_returns: bool = True) -> None:
        """Restore :meth:`state_dict`. With ``restore_returns`` False (the episodes restart), the running
        returns start from zero.

        Raises:
            ValueError: the saved running returns are for a different number of envs.
        """
        self.mean.fill_(state["mean"])
        self.var.fill_(state["var"])
        self.count.fill_(state["count"])
        saved = torch.tensor(state["discounted_returns"], dtype=torch.float32)
        if saved.shape != self.discounted_returns.shape:
            raise ValueError(f"reward scaler saved for {saved.numel()} envs, this run has "
                             f"{self.discounted_returns.numel()}")
        self.discounted_returns.copy_(saved if restore_returns else torch.zeros_like(saved))
