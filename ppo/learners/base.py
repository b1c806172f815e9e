"""The learner interface: what the run loop asks of every backend (torch, numpy, CUDA graphs)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterator, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from ppo.buffer import Minibatch, RolloutBuffer
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.learners.parameters import flat_optimizer_state, flatten_parameters

STATISTICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")
"""The statistics of an update, in the order of :attr:`MinibatchResult.statistics`."""


class RolloutPolicy(Protocol):
    """The policy of one rollout of ``T`` steps of ``N`` envs, as :class:`ppo.rollout.RolloutCollector` uses it.

    It samples with the weights as they were when it was made, and it keeps the rollout's observations,
    actions, log-probabilities and values in its own storage until :meth:`finish` writes them to the buffer,
    so that each backend stores them in the form that is cheapest for it (numpy rows, a list of tensors,
    device buffers).
    """

    def start(self, observations: torch.Tensor) -> None:
        """Take the observations ``[N, *obs_shape]`` the rollout starts from (row 0)."""

    def act(self, step: int) -> np.ndarray | torch.Tensor:
        """Sample actions for the observations of row ``step``; returns ``[N]`` or ``[N, d]`` actions in the
        form the envs take (numpy arrays, or tensors for envs that step on tensors)."""

    def observe(self, step: int, observations: np.ndarray | torch.Tensor) -> None:
        """Keep a copy of the observations ``[N, *obs_shape]`` of row ``step`` (1 to ``T``)."""

    def value(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``V(s)`` of any batch ``[M, *obs_shape]`` -> ``[M]`` on the buffer's device."""

    def finish(self, buffer: RolloutBuffer) -> tuple[torch.Tensor, torch.Tensor]:
        """Write rows ``0..T-1`` into ``buffer`` (observations, actions, log_probs, values); returns the
        observations of row ``T`` (a tensor the policy no longer uses) and their values ``[N]``."""


class MinibatchResult(NamedTuple):
    """What one gradient step reports: the :data:`STATISTICS` of the minibatch (``[6]``, a numpy array or a
    tensor on the learner's device) and the approx KL that decides the target-KL stop (averaged across ranks
    in a distributed run)."""

    statistics: np.ndarray | torch.Tensor
    approx_kl: float | torch.Tensor


class Learner(ABC):
    """PPO's update (Schulman et al. 2017, Algorithm 1: ``K`` epochs of minibatch Adam steps) for one agent.

    The template :meth:`update` runs the epochs, the shuffled minibatches, the skipping of non-finite steps and
    the target-KL stop; a backend implements :meth:`minibatch_step` (loss, gradient, clip, Adam) and
    :meth:`rollout_policy`. Every backend keeps the weights in flat Parameters (one per learning rate,
    :func:`ppo.learners.parameters.flatten_parameters`) with one ``torch.optim.Adam`` over them, so the
    optimizer state in a checkpoint is the same whichever learner wrote it.

    Args:
        agent: a :class:`networks.ActorCritic` on ``device``.
        config: the run's hyperparameters.
        device: where the agent lives.
        distributed: the context of a multi-process run, or None; gradients are then averaged across ranks
            before the clip.
        seed: seed of the minibatch shuffling generator.

    Attributes:
        name: the learner's name, as ``--learner`` takes it.
        parameters: the flat Parameters, ``[P_g]`` each.
        optimizer: Adam over :attr:`parameters` (``eps=1e-5``, as the reference implementations).
    """

    name: ClassVar[str]

    def __init__(self, agent: nn.Module, config: PPOConfig, device: torch.device,
                 distributed: DistributedContext | None = None, seed: int | None = None) -> None:
        self.agent, self.config, self.device = agent, config, device
        self.distributed = distributed if distributed is not None and distributed.enabled else None
        policy_parameters, value_parameters = agent.parameter_groups()
        value_lr = config.value_learning_rate or config.learning_rate
        if value_lr == config.learning_rate:
            groups = [(policy_parameters + value_parameters, config.learning_rate)]
        else:
            groups = [(policy_parameters, config.learning_rate), (value_parameters, value_lr)]
        self.parameters = [flatten_parameters(parameters) for parameters, _ in groups]
        self.parameter_sizes = [[p.numel() for p in parameters] for parameters, _ in groups]
        self.base_learning_rates = [lr for _, lr in groups]
        self.optimizer = self.make_optimizer()
        self.minibatch_generator = torch.Generator().manual_seed(config.seed if seed is None else seed)

    def make_optimizer(self) -> torch.optim.Adam:
        """Adam over :attr:`parameters`, one group per learning rate."""
        return torch.optim.Adam([{"params": [flat], "lr": lr} for flat, lr in
                                 zip(self.parameters, self.base_learning_rates)], eps=1e-5, fused=True)

    def anneal(self, fraction: float) -> None:
        """Set every group's learning rate to ``fraction`` of its base value."""
        for group, base in zip(self.optimizer.param_groups, self.base_learning_rates):
            group["lr"] = fraction * base

    @property
    def learning_rate(self) -> float:
        """The policy's current learning rate."""
        return float(self.optimizer.param_groups[0]["lr"])

    @abstractmethod
    def rollout_policy(self, buffer: RolloutBuffer, tensor_actions: bool) -> RolloutPolicy:
        """A :class:`RolloutPolicy` for the next rollout into ``buffer`` (its ``num_steps``, ``num_envs``,
        observation dtype and device), with the current weights; ``tensor_actions`` when the envs take actions
        as tensors on the device (Brax)."""

    @abstractmethod
    def minibatch_step(self, batch: Minibatch, clip_coeff: float) -> MinibatchResult | None:
        """One gradient step on ``batch``: loss, gradient (averaged across ranks), clip to ``max_gradient``,
        Adam. Returns None, without a step, when the loss or the gradient norm is not finite."""

    def minibatches(self, buffer: RolloutBuffer) -> Iterator[Minibatch]:
        """One epoch of shuffled minibatches of ``buffer``."""
        return buffer.minibatches(self.config.num_mini_batches, self.minibatch_generator)

    def prepare(self, buffer: RolloutBuffer) -> None:
        """Called once before the epochs of an update (the numpy learner normalizes the rollout there)."""

    def update(self, buffer: RolloutBuffer, clip_coeff: float) -> dict[str, float]:
        """``num_epochs`` passes of shuffled minibatches over ``buffer``; stops early when an epoch's mean
        approx KL exceeds ``target_kl``. A minibatch with a non-finite loss or gradient norm is skipped.

        Returns:
            the mean of each of :data:`STATISTICS` over the steps taken (NaN without any), and
            ``skipped_minibatches``.
        """
        config = self.config
        self.prepare(buffer)
        totals: Any = 0.0
        count = skipped = 0
        for _epoch in range(config.num_epochs):
            epoch_kl, epoch_steps = 0.0, 0
            for batch in self.minibatches(buffer):
                result = self.minibatch_step(batch, clip_coeff)
                if result is None:
                    skipped += 1
                    continue
                totals = totals + result.statistics
                count += 1
                epoch_steps += 1
                if config.target_kl is not None:
                    epoch_kl += float(result.approx_kl)
            if config.target_kl is not None and epoch_steps and epoch_kl / epoch_steps > config.target_kl:
                break
        means = (totals / count).tolist() if count else [float("nan")] * len(STATISTICS)
        return {**dict(zip(STATISTICS, means)), "skipped_minibatches": skipped}

    def average_gradients(self, loss: torch.Tensor | float, approx_kl: torch.Tensor | float
                          ) -> tuple[bool, float | torch.Tensor]:
        """Distributed: average the gradients across ranks (one all-reduce that also carries whether each
        rank's loss is finite and the ranks' approx KL). Returns ``(every rank's loss is finite, approx KL
        averaged across ranks)``, the same on every rank. A single process: ``(True, approx_kl)``; the
        caller checks its own loss."""
        if self.distributed is None:
            return True, approx_kl
        loss, approx_kl = torch.as_tensor(loss), torch.as_tensor(approx_kl)
        extras = torch.stack([(~torch.isfinite(loss.detach())).to(torch.float32),
                              approx_kl.detach().to(torch.float32)]).to(self.device)
        reduced = self.distributed.average_gradients(self.parameters, extras)
        return bool(reduced[0] == 0), float(reduced[1]) / self.distributed.world_size

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer": Adam's state_dict, "minibatch_rng": the shuffling generator's state}``."""
        return {"optimizer": self.optimizer.state_dict(), "minibatch_rng": self.minibatch_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; an optimizer state saved per parameter (older checkpoints) is flattened."""
        self.optimizer.load_state_dict(flat_optimizer_state(state["optimizer"], self.parameter_sizes))
        if state.get("minibatch_rng") is not None:
            self.minibatch_generator.set_state(state["minibatch_rng"])
