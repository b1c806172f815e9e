"""The numpy learner: the MLP's rollouts, loss gradient and Adam step in numpy on the CPU."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ppo.buffer import Minibatch, RolloutBuffer
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.learners.base import Learner, MinibatchResult, RolloutPolicy
from ppo.learners.numpy.adam import NUMPY_ADAM_MAX_SIZE, NumpyAdam, clip_gradient_norm_arrays
from ppo.learners.numpy.gradient import MLPLossGradient
from ppo.learners.numpy.rollout_policy import NumpyRolloutPolicy, numpy_unsupported_reason
from ppo.rollout import TorchRolloutPolicy


def unsupported_reason(agent: nn.Module, config: PPOConfig, device: torch.device) -> str | None:
    """None when :class:`NumpyLearner` can train ``agent`` with ``config`` on ``device``; otherwise why not,
    as the run header prints it ("the numpy learner has no state-dependent standard deviation")."""
    if device.type != "cpu":
        return f"the numpy learner runs on the CPU, this run on {device.type}"
    if config.compile:
        return "--compile compiles the torch learner's loss"
    reason = numpy_unsupported_reason(agent)
    return None if reason is None else f"the numpy learner {reason}"


class NumpyLearner(Learner):
    """The same update as :class:`ppo.learners.torch_learner.TorchLearner`, for an MLP on the CPU, computed in
    numpy: rollouts through :class:`NumpyRolloutPolicy`, the loss and its hand-written gradient through
    :class:`MLPLossGradient`, the gradient clip on numpy views, and Adam's step through :class:`NumpyAdam` (on
    the optimizer's own state, so checkpoints are the torch learner's). A numpy operation on these small
    arrays costs about a microsecond of overhead against several for a tensor operation.

    Raises:
        ValueError: a configuration :func:`unsupported_reason` rejects.
    """

    name = "numpy"

    def __init__(self, agent: nn.Module, config: PPOConfig, device: torch.device,
                 distributed: DistributedContext | None = None, seed: int | None = None) -> None:
        reason = unsupported_reason(agent, config, device)
        if reason is not None:
            raise ValueError(reason)
        super().__init__(agent, config, device, distributed, seed)
        self.gradient = MLPLossGradient(agent, config.ent_loss_coeff, config.value_loss_coeff,
                                        config.clip_value_loss, config.normalize_advantages)
        self.gradient_arrays = [flat.grad.numpy() for flat in self.parameters]
        self.inputs: torch.Tensor | None = None
        self.adam: NumpyAdam | None = None

    def rollout_policy(self, buffer: RolloutBuffer, tensor_actions: bool) -> RolloutPolicy:
        if tensor_actions:  # envs that step on tensors (Brax on the CPU)
            return TorchRolloutPolicy(self.agent, buffer.num_steps, buffer.num_envs, self.device,
                                      buffer.observations.dtype, tensor_actions)
        return NumpyRolloutPolicy(self.agent, buffer.num_steps, buffer.num_envs)

    def prepare(self, buffer: RolloutBuffer) -> None:
        # The normalizer's statistics are fixed during the update: the rollout is normalized once.
        with torch.no_grad():
            self.inputs = self.agent.preprocess(buffer.observations.flatten(0, 1))
        # Views of the optimizer's current state tensors (load_state_dict replaces them). Above about 100k
        # weights torch's fused kernel is faster than numpy's passes (benchmarks/adam_step.py).
        small = all(flat.numel() <= NUMPY_ADAM_MAX_SIZE for flat in self.parameters)
        self.adam = NumpyAdam(self.optimizer) if small else None

    def minibatches(self, buffer: RolloutBuffer):
        return buffer.minibatches(self.config.num_mini_batches, self.minibatch_generator, self.inputs,
                                  as_numpy=True)

    def minibatch_step(self, batch: Minibatch, clip_coeff: float) -> MinibatchResult | None:
        losses = self.gradient(*batch, clip_coeff)  # writes the gradient into the flat .grad
        ranks_finite, approx_kl = self.average_gradients(losses.loss, losses.approx_kl)
        grad_norm = clip_gradient_norm_arrays(self.gradient_arrays, self.config.max_gradient)
        if not (ranks_finite and math.isfinite(float(losses.loss) + grad_norm)):
            return None
        if self.adam is not None:
            self.adam.step()
        else:
            self.optimizer.step()
        statistics = np.array([float(losses.policy_loss), float(losses.value_loss), float(losses.entropy),
                               float(losses.approx_kl), float(losses.clipfrac), grad_norm])
        return MinibatchResult(statistics, approx_kl)
