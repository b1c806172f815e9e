"""Deterministic evaluation of a policy on fresh environments."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn


def evaluate_policy(agent: nn.Module | None, envs: VectorEnv, num_episodes: int, device: torch.device,
                    seed: int | None = None, deterministic: bool = True) -> list[float]:
    """Run ``agent`` until ``num_episodes`` episodes have finished and return their raw returns.

    Episodes are split evenly across the ``envs.num_envs`` copies in advance (env ``i`` contributes a
    fixed number), so short episodes are not over-represented, as in SB3's ``evaluate_policy``.
    Observation statistics are not updated (frozen normalization). ``envs`` must report
    ``infos["episode"]`` (``RecordEpisodeStatistics``) with SAME_STEP autoreset.

    Args:
        agent: an ``ActorCritic`` with an ``act(observations, deterministic)`` method, or None for a
            uniformly random policy (``envs.action_space.sample()``, seeded with ``seed``).
        envs: fresh evaluation envs (no reward scaling).
        num_episodes: episodes to collect, >= 1.
        device: where the agent lives.
        seed: seed of the first reset.
        deterministic: take the policy's mode (argmax / Gaussian mean) instead of sampling.

    Returns:
        ``num_episodes`` undiscounted returns, in the units of the environment's reward.
    """
    num_envs = envs.num_envs
    targets = np.array([(num_episodes + i) // num_envs for i in range(num_envs)])
    counts = np.zeros(num_envs, dtype=int)
    returns: list[float] = []
    observations, _ = envs.reset(seed=seed)
    envs.action_space.seed(seed)
    dtype = torch.uint8 if observations.dtype in (np.uint8, torch.uint8) else torch.float32
    tensor_env = bool(getattr(envs, "accepts_tensors", False))  # Brax: tensors in and out
    was_training = agent.training if agent is not None else False
    if agent is not None:
        agent.eval()
    try:
        while (counts < targets).any():
            if agent is None:
                actions = envs.action_space.sample()
                if tensor_env:
                    actions = torch.as_tensor(actions, device=device)
            else:
                with torch.inference_mode():
                    tensor = torch.as_tensor(observations, dtype=dtype, device=device)
                    actions = agent.act(tensor, deterministic)
                if not tensor_env:
                    actions = actions.cpu().numpy()
            observations, _, _, _, infos = envs.step(actions)
            mask = infos.get("_episode")
            if mask is None:
                continue
            for index in np.flatnonzero(mask):
                if counts[index] < targets[index]:
                    returns.append(float(infos["episode"]["r"][index]))
                    counts[index] += 1
    finally:
        if agent is not None:
            agent.train(was_training)
    return returns
