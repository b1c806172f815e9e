"""The PPO loss of an MLP actor-critic and its gradient, written out by hand.

On a CPU, a minibatch of a small MLP costs microseconds of arithmetic per tensor operation but several
microseconds of overhead per operation, and autograd adds a graph node, a saved-tensor record and an engine
dispatch to every one. :class:`MLPLossGradient` computes the same loss as
:func:`ppo.losses.ppo_loss` over :meth:`networks.ActorCritic.get_action_and_value`, and its gradient by
the chain rule, layer by layer, with the same backward kernels autograd would call (``tanh_backward``,
``threshold_backward``, ``elu_backward``), writing each parameter's gradient into its ``.grad`` in place.
``tests/test_mlp_gradient.py`` checks loss and gradients against autograd for every option it supports.

Change the loss in :mod:`ppo.losses` and this module must change with it; ``--no-manual-gradient`` trains
with autograd instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from networks.actor_critic import MLPActorCritic
from networks.heads import LOG_STD_MAX, LOG_STD_MIN, CategoricalHead, GaussianHead
from ppo.losses import LossOutput

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_ACTIVATIONS = ("tanh", "relu", "elu")


def _activation_name(agent: MLPActorCritic) -> str | None:
    layers = list(agent.actor)[1::2]
    if not layers:
        return "tanh"  # no hidden layer: no activation to differentiate
    kinds = {type(layer).__name__.lower() for layer in layers}
    name = kinds.pop() if len(kinds) == 1 else None
    if name == "elu" and getattr(layers[0], "alpha", 1.0) != 1.0:
        return None
    return name if name in _ACTIVATIONS else None


def unsupported_reason(agent: nn.Module) -> str | None:
    """None when :class:`MLPLossGradient` can compute this agent's gradient; otherwise why not (the trainer
    then uses autograd)."""
    if type(agent) is not MLPActorCritic:
        return f"{type(agent).__name__} is not the MLP actor-critic"
    if _activation_name(agent) is None:
        return "unsupported activation"
    head = agent.action_head
    if isinstance(head, GaussianHead) and head.state_dependent:
        return "state-dependent standard deviation"
    if not isinstance(head, (GaussianHead, CategoricalHead)):
        return f"action head {type(head).__name__}"
    return None


class MLPLossGradient:
    """Loss and gradient of PPO for an :class:`networks.MLPActorCritic` (Gaussian head with a
    state-independent log-std, or Categorical head; tanh, ReLU or ELU).

    The loss is :func:`ppo.losses.ppo_loss` (Schulman et al. 2017, eq. 9):
    ``L = -mean(min(r A, clip(r, 1-eps, 1+eps) A)) + c_v * 0.5 * mean((V - R)^2) - c_e * mean(H)``, value
    error optionally clipped. Its derivatives, used below (``M`` samples, ``A`` possibly standardised):

    - ``dL/dlog pi_i = -A_i r_i / M`` where the unclipped term is the minimum (the clipped term has zero
      derivative outside ``[1-eps, 1+eps]``; where both are equal, inside it, each carries half of ``A_i``);
    - Gaussian ``log pi = sum_j -z_j^2 / 2 - s_j - log(2 pi) / 2`` with ``z = (a - mu) / e^s``:
      ``dlog pi/dmu = z / e^s``, ``dlog pi/ds = z^2 - 1``, and ``dH/ds = 1`` (``s`` the clamped log-std,
      whose derivative is 1 inside ``[LOG_STD_MIN, LOG_STD_MAX]`` and 0 outside);
    - Categorical ``log pi = log_softmax(l)_a``: ``dlog pi/dl = onehot(a) - p``, and
      ``dH/dl = -p (log p + H)``;
    - value: ``dL/dV_i = c_v (V_i - R_i) / M``, or with clipping the error term that is the maximum
      (``V_old + clip(V - V_old, -eps, eps)`` has derivative 0 outside ``[-eps, eps]``);
    - a linear layer ``y = x W^T + b``: ``dW = g^T x``, ``db = sum_i g_i``, ``dx = g W``; then through the
      activation, with autograd's own backward kernel.

    Args:
        agent: the MLP actor-critic (see :func:`unsupported_reason`).
        ent_loss_coeff, value_loss_coeff, clip_value_loss, normalize_advantages: as in
            :func:`ppo.losses.ppo_loss`.

    Raises:
        ValueError: an agent :func:`unsupported_reason` rejects.
    """

    def __init__(self, agent: MLPActorCritic, ent_loss_coeff: float, value_loss_coeff: float,
                 clip_value_loss: bool, normalize_advantages: bool) -> None:
        reason = unsupported_reason(agent)
        if reason is not None:
            raise ValueError(f"no hand-written gradient: {reason}")
        self.agent = agent
        self.ent_loss_coeff, self.value_loss_coeff = ent_loss_coeff, value_loss_coeff
        self.clip_value_loss, self.normalize_advantages = clip_value_loss, normalize_advantages
        head = agent.action_head
        self.gaussian = isinstance(head, GaussianHead)
        output_layer = head.mean if self.gaussian else head.logits
        self.actor_layers = [*list(agent.actor)[::2], output_layer]
        self.critic_layers = [*list(agent.critic)[::2], agent.value_head]
        self.activation = _activation_name(agent)

    # ---------------------------------------------------------------------------------------------
    def __call__(self, inputs: torch.Tensor, actions: torch.Tensor, old_log_probs: torch.Tensor,
                 old_values: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor,
                 clip_coeff: float) -> LossOutput:
        """Loss of one minibatch; writes ``dL/dtheta`` into every parameter's ``.grad`` (overwriting it).

        Args:
            inputs: ``[M, obs_dim]`` network input, already through :meth:`networks.ActorCritic.preprocess`.
            actions: ``[M, d]`` float32 (Gaussian) or ``[M]`` int64 (Categorical).
            old_log_probs, old_values, advantages, returns: ``[M]`` each, from the rollout.
            clip_coeff: epsilon, > 0.

        Returns:
            :class:`ppo.losses.LossOutput`, all detached (``loss`` included).
        """
        with torch.no_grad():
            inputs = inputs.flatten(1)
            m = inputs.shape[0]
            actor_outputs, actor_hidden = self._forward(self.actor_layers, inputs)
            critic_outputs, critic_hidden = self._forward(self.critic_layers, inputs)
            values = critic_outputs.squeeze(-1)

            if self.gaussian:
                log_std = self.agent.action_head.log_std
                clamped = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
                std = clamped.exp()
                standardized = (actions - actor_outputs) / std
                squared = standardized.square()
                log_probs = (-0.5 * squared - clamped).sum(-1) - _HALF_LOG_2PI * actions.shape[-1]
                entropy = (0.5 + _HALF_LOG_2PI + clamped).sum()
            else:
                all_log_probs = torch.log_softmax(actor_outputs, dim=-1)
                probabilities = all_log_probs.exp()
                log_probs = all_log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
                entropies = -(probabilities * all_log_probs).sum(-1)
                entropy = entropies.mean()

            if self.normalize_advantages:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            log_ratio = log_probs - old_log_probs
            ratio = log_ratio.exp()
            surrogate = advantages * ratio
            clipped_surrogate = advantages * ratio.clamp(1.0 - clip_coeff, 1.0 + clip_coeff)
            policy_loss = -torch.minimum(surrogate, clipped_surrogate).mean()

            value_error = values - returns
            squared_error = value_error.square()
            if self.clip_value_loss:
                delta = values - old_values
                clipped_error = old_values + delta.clamp(-clip_coeff, clip_coeff) - returns
                squared_clipped = clipped_error.square()
                value_loss = 0.5 * torch.maximum(squared_error, squared_clipped).mean()
                # d/dV of 0.5 * max(e^2, e_c^2) per sample: e, or e_c where the clipped error is larger and
                # V - V_old lies inside the clip range (zero outside it)
                inside = delta.abs() <= clip_coeff
                value_gradient = torch.where(squared_error >= squared_clipped, value_error,
                                             clipped_error * inside)
            else:
                value_loss = 0.5 * squared_error.mean()
                value_gradient = value_error
            loss = policy_loss + self.value_loss_coeff * value_loss - self.ent_loss_coeff * entropy

            # dL/dlog pi: the unclipped surrogate's derivative where it is the minimum (ties included)
            log_prob_gradient = torch.where(surrogate <= clipped_surrogate, surrogate, 0.0).mul_(-1.0 / m)
            if self.gaussian:
                inside_std = (log_std >= LOG_STD_MIN) & (log_std <= LOG_STD_MAX)
                output_gradient = (standardized / std).mul_(log_prob_gradient.unsqueeze(-1))
                std_gradient = ((squared - 1.0) * log_prob_gradient.unsqueeze(-1)).sum(0)
                std_gradient.sub_(self.ent_loss_coeff)
                torch.mul(std_gradient, inside_std, out=log_std.grad)
            else:
                one_hot = torch.zeros_like(probabilities).scatter_(-1, actions.unsqueeze(-1), 1.0)
                output_gradient = (one_hot - probabilities).mul_(log_prob_gradient.unsqueeze(-1))
                if self.ent_loss_coeff != 0.0:
                    output_gradient.add_(probabilities * (all_log_probs + entropies.unsqueeze(-1)),
                                         alpha=self.ent_loss_coeff / m)
            self._backward(self.actor_layers, actor_hidden, output_gradient)
            self._backward(self.critic_layers, critic_hidden,
                           value_gradient.mul(self.value_loss_coeff / m).unsqueeze(-1))

            approx_kl = ((ratio - 1.0) - log_ratio).mean()  # k3 estimator, as ppo.losses
            clipfrac = ((ratio - 1.0).abs() > clip_coeff).float().mean()
        return LossOutput(loss, policy_loss, value_loss, entropy, approx_kl, clipfrac)

    # ---------------------------------------------------------------------------------------------
    def _forward(self, layers: list[nn.Linear], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output ``[M, K]`` of the MLP ``layers`` and the input of every layer (kept for the backward pass)."""
        inputs = [x]
        for layer in layers[:-1]:
            x = torch.addmm(layer.bias, x, layer.weight.t())
            x = x.tanh_() if self.activation == "tanh" else (x.relu_() if self.activation == "relu"
                                                              else torch.nn.functional.elu(x))
            inputs.append(x)
        last = layers[-1]
        return torch.addmm(last.bias, x, last.weight.t()), inputs

    def _backward(self, layers: list[nn.Linear], inputs: list[torch.Tensor], gradient: torch.Tensor) -> None:
        """Back-propagate ``gradient`` ``[M, K]`` (dL/d output) through ``layers``, writing each weight's and
        bias's gradient into its ``.grad``."""
        for index in range(len(layers) - 1, -1, -1):
            layer = layers[index]
            torch.mm(gradient.t(), inputs[index], out=layer.weight.grad)
            torch.sum(gradient, 0, out=layer.bias.grad)
            if index > 0:
                gradient = torch.mm(gradient, layer.weight)
                output = inputs[index]  # the activation's output, which its backward kernel takes
                if self.activation == "tanh":
                    gradient = torch.ops.aten.tanh_backward(gradient, output)
                elif self.activation == "relu":
                    gradient = torch.ops.aten.threshold_backward(gradient, output, 0.0)
                else:
                    gradient = torch.ops.aten.elu_backward(gradient, 1.0, 1.0, 1.0, True, output)
