"""Preallocated rollout storage."""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch


class Minibatch(NamedTuple):
    """One minibatch of flattened transitions; every field has leading dimension ``M``."""

    observations: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


class RolloutBuffer:
    """Tensors of shape ``[num_steps, num_envs, ...]`` on the learner's device, allocated once.

    Observations keep the environment's dtype (``uint8`` Atari frames stay ``uint8``); actions are the raw
    samples of the policy (before any clipping to the action bounds), stored with their log-probabilities.
    ``rewards`` are the env's rewards during the rollout; at its end the trainer scales them (when asked)
    and adds ``gamma * bootstrap_values``, where ``bootstrap_values`` holds ``V(final_observation)`` of the
    truncated episodes (zero elsewhere). ``terminations`` and ``truncations`` are kept apart.
    """

    def __init__(self, num_steps: int, num_envs: int, observation_shape: tuple[int, ...],
                 observation_dtype: torch.dtype, action_shape: tuple[int, ...], action_dtype: torch.dtype,
                 device: torch.device) -> None:
        self.num_steps, self.num_envs = num_steps, num_envs
        size = (num_steps, num_envs)
        self.observations = torch.zeros(size + observation_shape, dtype=observation_dtype, device=device)
        self.actions = torch.zeros(size + action_shape, dtype=action_dtype, device=device)
        self.log_probs = torch.zeros(size, device=device)
        self.values = torch.zeros(size, device=device)
        self.rewards = torch.zeros(size, device=device)
        self.bootstrap_values = torch.zeros(size, device=device)
        self.terminations = torch.zeros(size, device=device)
        self.truncations = torch.zeros(size, device=device)
        self.advantages = torch.zeros(size, device=device)
        self.returns = torch.zeros(size, device=device)

    @property
    def dones(self) -> torch.Tensor:
        """``[T, B]`` 1.0 where an episode ended (terminated or truncated) at that step."""
        return torch.maximum(self.terminations, self.truncations)

    def minibatches(self, num_mini_batches: int, generator: torch.Generator | None = None,
                    observations: torch.Tensor | None = None, as_numpy: bool = False) -> Iterator[Minibatch]:
        """Yield ``num_mini_batches`` minibatches that together hold every transition exactly once.

        The order is a fresh random permutation each call (``torch.randperm`` on the CPU generator).
        ``num_mini_batches`` must divide ``num_steps * num_envs``. ``observations`` (``[T * B, ...]``, e.g.
        the stored ones already normalized) are handed out in place of the stored observations. With
        ``as_numpy`` (a buffer on the CPU) the fields are numpy arrays, for the numpy gradient.
        """
        batch_size = self.num_steps * self.num_envs
        minibatch_size = batch_size // num_mini_batches
        if observations is None:
            observations = self.observations.flatten(0, 1)
        flat = Minibatch(observations, self.actions.flatten(0, 1),
                         self.log_probs.flatten(), self.values.flatten(), self.advantages.flatten(),
                         self.returns.flatten())
        permutation = torch.randperm(batch_size, generator=generator).to(self.values.device)
        # Shuffle once per call, then hand out contiguous slices (views): one gather per field per epoch
        # instead of one per field per minibatch.
        if permutation.device.type == "cpu":  # numpy's gather: a fraction of torch's per-call overhead
            index = permutation.numpy()
            shuffled = [tensor.numpy()[index] for tensor in flat]
            if not as_numpy:
                shuffled = [torch.from_numpy(array) for array in shuffled]
        else:
            shuffled = [tensor[permutation] for tensor in flat]
        for start in range(0, batch_size, minibatch_size):
            yield Minibatch(*(tensor[start:start + minibatch_size] for tensor in shuffled))


def observation_dtype(numpy_dtype: np.dtype) -> torch.dtype:
    """The buffer's dtype for observations of ``numpy_dtype``: uint8 frames stay uint8, anything else float32."""
    return torch.uint8 if numpy_dtype == np.uint8 else torch.float32


def to_observation_tensor(observations: np.ndarray | torch.Tensor, dtype: torch.dtype, device: torch.device,
                          copy: bool = False) -> torch.Tensor:
    """Observations ``[N, ...]`` (numpy or tensor) as a ``dtype`` tensor on ``device``; with ``copy``, never
    sharing memory with the env's array or tensor, which an env may overwrite at its next step."""
    if not copy:
        return torch.as_tensor(observations, dtype=dtype, device=device)
    if isinstance(observations, torch.Tensor):
        return observations.to(device, dtype, copy=True)
    if device.type == "cpu":  # numpy's copy is cheaper than torch.tensor's
        return torch.from_numpy(np.array(observations, dtype=np.uint8 if dtype == torch.uint8 else np.float32))
    return torch.tensor(observations, dtype=dtype, device=device)
