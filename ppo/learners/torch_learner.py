"""The reference learner: :func:`ppo.losses.ppo_loss`, autograd, ``torch.optim.Adam``, ``clip_grad_norm_``."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ppo.buffer import Minibatch, RolloutBuffer
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.learners.base import Learner, MinibatchResult
from ppo.losses import LossOutput, ppo_loss
from ppo.rollout import TorchRolloutPolicy


class TorchLearner(Learner):
    """PPO's minibatch step as CleanRL's ``ppo.py`` writes it, on any network and device.

    With ``config.compile`` the loss (forward pass and ``ppo_loss``) goes through ``torch.compile`` once (all
    minibatches have one shape), which fuses its kernels and those of its backward pass.
    """

    name = "torch"

    def __init__(self, agent: nn.Module, config: PPOConfig, device: torch.device,
                 distributed: DistributedContext | None = None, seed: int | None = None) -> None:
        super().__init__(agent, config, device, distributed, seed)
        # A tensor, so that an annealed clip coefficient reaches a compiled loss without recompiling it.
        self.clip_coeff = torch.tensor(config.clip_coeff, device=device)
        self.loss: Callable[[Minibatch, torch.Tensor], LossOutput] = (
            torch.compile(self.minibatch_loss, dynamic=False) if config.compile else self.minibatch_loss)

    def rollout_policy(self, buffer: RolloutBuffer, tensor_actions: bool) -> TorchRolloutPolicy:
        return TorchRolloutPolicy(self.agent, buffer.num_steps, buffer.num_envs, self.device,
                                  buffer.observations.dtype, tensor_actions)

    def minibatch_loss(self, batch: Minibatch, clip_coeff: torch.Tensor) -> LossOutput:
        """The PPO loss of one minibatch under the current weights."""
        config = self.config
        out = self.agent.get_action_and_value(batch.observations, batch.actions)
        return ppo_loss(out.log_prob, batch.log_probs, batch.advantages, out.value, batch.values, batch.returns,
                        out.entropy, clip_coeff, config.ent_loss_coeff, config.value_loss_coeff,
                        config.clip_value_loss, config.normalize_advantages)

    def minibatch_step(self, batch: Minibatch, clip_coeff: float) -> MinibatchResult | None:
        self.clip_coeff.fill_(clip_coeff)
        losses = self.loss(batch, self.clip_coeff)
        # zero, not None: the network's .grad tensors are views of the flat gradients
        self.optimizer.zero_grad(set_to_none=False)
        losses.loss.backward()
        ranks_finite, approx_kl = self.average_gradients(losses.loss, losses.approx_kl)
        grad_norm = nn.utils.clip_grad_norm_(self.parameters, self.config.max_gradient)
        if not (ranks_finite and bool(torch.isfinite(losses.loss.detach() + grad_norm))):
            return None
        self.optimizer.step()
        statistics = torch.stack([losses.policy_loss, losses.value_loss, losses.entropy, losses.approx_kl,
                                  losses.clipfrac, grad_norm.detach()])
        return MinibatchResult(statistics, approx_kl)
