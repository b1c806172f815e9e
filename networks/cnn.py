"""The Nature CNN actor-critic for stacked Atari frames (Mnih et al. 2015, "Human-level control through
deep reinforcement learning", Nature 518; the PPO Atari network of Schulman et al. 2017 and CleanRL's
``ppo_atari.py``)."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

from networks.actor_critic import ActorCritic
from networks.heads import CategoricalHead, layer_init


class NatureCNNActorCritic(ActorCritic):
    """One convolutional trunk shared by the policy and the value function, with two linear heads.

    Trunk (Mnih et al. 2015): ``[N, C, 84, 84]`` -> conv 32 filters 8x8 stride 4 -> ReLU ``[N, 32, 20, 20]``
    -> conv 64 4x4 stride 2 -> ReLU ``[N, 64, 9, 9]`` -> conv 64 3x3 stride 1 -> ReLU ``[N, 64, 7, 7]`` ->
    flatten ``[N, 3136]`` -> linear 512 -> ReLU ``[N, 512]``. Heads: :class:`CategoricalHead` logits
    ``[N, num_actions]`` and a value ``[N, 1]``.

    Initialisation (openai/baselines, CleanRL): orthogonal weights with gain ``sqrt(2)`` in the trunk,
    0.01 for the policy logits, 1.0 for the value; zero biases.

    Observations go in as uint8 frames ``[N, C, H, W]`` in 0..255 and are scaled by 1/255 inside the
    network (:meth:`preprocess`), so the saved ``state_dict`` is the whole policy and rollouts can keep
    (and move to the GPU) uint8 frames, a quarter of the bytes of float32.

    Args:
        observation_shape: ``(C, H, W)``, e.g. ``(4, 84, 84)``; other frame sizes work too (the flattened
            size is computed), as long as the convolutions leave at least 1x1.
        action_space: ``Discrete(num_actions)``.

    Raises:
        ValueError: an action space other than ``Discrete``, or an observation shape that is not
            ``(C, H, W)`` or is too small for the convolutions.
    """

    def __init__(self, observation_shape: tuple[int, ...], action_space: gym.Space) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"NatureCNNActorCritic needs a Discrete action space, got {action_space}")
        if len(observation_shape) != 3:
            raise ValueError(f"NatureCNNActorCritic needs (C, H, W) observations, got {observation_shape}")
        channels, height, width = observation_shape
        gain = math.sqrt(2.0)
        convolutions = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, kernel_size=8, stride=4), gain), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, kernel_size=4, stride=2), gain), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, kernel_size=3, stride=1), gain), nn.ReLU(),
            nn.Flatten(),
        )
        size = [height, width]
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            size = [(side - kernel) // stride + 1 for side in size]
        if min(size) < 1:
            raise ValueError(f"observations {observation_shape} are too small for the Nature CNN (84x84 frames)")
        self.trunk = nn.Sequential(convolutions, layer_init(nn.Linear(64 * size[0] * size[1], 512), gain),
                                   nn.ReLU())
        self.action_head = CategoricalHead(512, int(action_space.n))
        self.value_head = layer_init(nn.Linear(512, 1), gain=1.0)

    def preprocess(self, observations: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[N, C, H, W]`` in 0..255 -> float32 in [0, 1] (divided by 255)."""
        return observations.float() / 255.0

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, C, H, W]`` in [0, 1] -> the shared trunk's ``h [N, 512]``, returned as ``(h, h)``."""
        hidden = self.trunk(x)
        return hidden, hidden
