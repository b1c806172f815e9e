"""The PPO loss of an MLP actor-critic and its gradient, written out by hand.

On a CPU, a minibatch of a small MLP costs microseconds of arithmetic per tensor operation but several
microseconds of overhead per operation, and autograd adds a graph node, a saved-tensor record and an engine
dispatch to every one. :class:`MLPLossGradient` computes the same loss as
:func:`ppo.losses.ppo_loss` over :meth:`networks.ActorCritic.get_action_and_value`, and its gradient by
the chain rule, layer by layer, with the derivatives autograd's backward kernels use (``tanh_backward``:
``1 - y^2``; ``threshold_backward``: ``y > 0``; ``elu_backward``: ``1`` or ``y + 1``), writing each
parameter's gradient into its ``.grad`` in place. It runs in numpy on views of the CPU tensors (no copy):
a numpy operation on these small arrays costs about a microsecond of overhead against several for a
tensor operation: a Hopper minibatch (64 samples) took about 1.2 ms against 2.2 ms for the same arithmetic
in torch.
``tests/test_mlp_gradient.py`` checks loss and gradients against autograd for every option it supports, and
that :data:`LOSS_OPTIONS` names every option of :func:`ppo.losses.ppo_loss`: a new option there fails it
until it is written out here. ``--learner torch`` trains with autograd instead.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from networks import GaussianHead, MLPActorCritic
from networks.heads import LOG_STD_MAX, LOG_STD_MIN
from ppo.learners.numpy.rollout_policy import (NUMPY_ACTIVATION_DERIVATIVES, NUMPY_ACTIVATIONS,
                                               mlp_activation_name, numpy_unsupported_reason)
from ppo.losses import LossOutput

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

LOSS_OPTIONS = ("clip_coeff", "ent_loss_coeff", "value_loss_coeff", "clip_value_loss", "normalize_advantages")
"""The options of :func:`ppo.losses.ppo_loss` that :class:`MLPLossGradient` implements (its tensor arguments
aside); the contract test fails when ``ppo_loss`` has one that is not here."""


def _mean(x: np.ndarray) -> np.float32:
    """``np.mean`` of a float32 array (the same sum, then the division) without its Python wrapper, which
    costs more than the arithmetic on a minibatch; likewise the code below calls ``np.add.reduce`` and
    ``np.minimum``/``np.maximum`` where ``.sum``, ``np.clip`` and ``np.std`` would do the same."""
    return np.add.reduce(x, axis=None) / np.float32(x.size)


class _Layer(NamedTuple):
    """Numpy views of a linear layer's parameters and gradients."""

    weight: np.ndarray       # [out, in]
    bias: np.ndarray         # [out]
    weight_grad: np.ndarray  # [out, in]
    bias_grad: np.ndarray    # [out]


class MLPLossGradient:
    """Loss and gradient of PPO for an :class:`networks.MLPActorCritic` on the CPU (Gaussian head with a
    state-independent log-std, or Categorical head; tanh, ReLU or ELU), computed in numpy.

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
      activation, with the derivative autograd's backward kernel uses.

    Args:
        agent: the MLP actor-critic (see :func:`numpy_unsupported_reason`).
        ent_loss_coeff, value_loss_coeff, clip_value_loss, normalize_advantages: as in
            :func:`ppo.losses.ppo_loss`.

    Raises:
        ValueError: an agent :func:`numpy_unsupported_reason` rejects.
    """

    def __init__(self, agent: MLPActorCritic, ent_loss_coeff: float, value_loss_coeff: float,
                 clip_value_loss: bool, normalize_advantages: bool) -> None:
        reason = numpy_unsupported_reason(agent)
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
        self.activation = mlp_activation_name(agent)
        self.parameters = [p for linear in (*self.actor_layers, *self.critic_layers) for p in linear.parameters()]
        if self.gaussian:
            self.parameters.append(head.log_std)
        self._cache_key: list | None = None
        self._cache: tuple = ()

    # ---------------------------------------------------------------------------------------------
    def __call__(self, inputs: torch.Tensor | np.ndarray, actions: torch.Tensor | np.ndarray,
                 old_log_probs: torch.Tensor | np.ndarray, old_values: torch.Tensor | np.ndarray,
                 advantages: torch.Tensor | np.ndarray, returns: torch.Tensor | np.ndarray,
                 clip_coeff: float) -> LossOutput:
        """Loss of one minibatch; writes ``dL/dtheta`` into every parameter's ``.grad`` (overwriting it).

        Args:
            inputs: ``[M, obs_dim]`` network input, already through :meth:`networks.ActorCritic.preprocess`.
            actions: ``[M, d]`` float32 (Gaussian) or ``[M]`` int64 (Categorical).
            old_log_probs, old_values, advantages, returns: ``[M]`` each, from the rollout.
            clip_coeff: epsilon, > 0.
            All numpy arrays or CPU tensors (read through numpy views, not copied).

        Returns:
            :class:`ppo.losses.LossOutput` of float32 0-d tensors, all detached (``loss`` included).
        """
        x, actions, old_log_probs, old_values, advantages, returns = (
            t if isinstance(t, np.ndarray) else t.detach().numpy()
            for t in (inputs, actions, old_log_probs, old_values, advantages, returns))
        x = x.reshape(x.shape[0], -1)
        actor, critic, log_std = self._arrays()
        m = x.shape[0]
        rows = np.arange(m)
        actor_outputs, actor_hidden = self._forward(actor, x)
        critic_outputs, critic_hidden = self._forward(critic, x)
        values = critic_outputs[:, 0]

        if self.gaussian:
            log_std_value, log_std_gradient = log_std
            clamped = np.minimum(np.maximum(log_std_value, LOG_STD_MIN), LOG_STD_MAX)
            std = np.exp(clamped)
            standardized = (actions - actor_outputs) / std
            squared = np.square(standardized)
            log_probs = (np.add.reduce(-0.5 * squared - clamped, axis=-1)
                         - np.float32(_HALF_LOG_2PI * actions.shape[-1]))
            entropy = np.add.reduce(0.5 + _HALF_LOG_2PI + clamped)
        else:
            shifted = actor_outputs - np.maximum.reduce(actor_outputs, axis=-1, keepdims=True)
            # log_softmax
            all_log_probs = shifted - np.log(np.add.reduce(np.exp(shifted), axis=-1, keepdims=True))
            probabilities = np.exp(all_log_probs)
            log_probs = all_log_probs[rows, actions]
            entropies = -np.add.reduce(probabilities * all_log_probs, axis=-1)
            entropy = _mean(entropies)

        if self.normalize_advantages:
            # / the standard deviation with Bessel's correction, as torch.std
            centered = advantages - _mean(advantages)
            advantage_std = np.sqrt(np.add.reduce(np.square(centered)) / np.float32(m - 1))
            advantages = centered / (advantage_std + np.float32(1e-8))
        log_ratio = log_probs - old_log_probs
        ratio = np.exp(log_ratio)
        surrogate = advantages * ratio
        clipped_surrogate = advantages * np.minimum(np.maximum(ratio, 1.0 - clip_coeff), 1.0 + clip_coeff)
        policy_loss = -_mean(np.minimum(surrogate, clipped_surrogate))

        value_error = values - returns
        squared_error = np.square(value_error)
        if self.clip_value_loss:
            delta = values - old_values
            clipped_error = old_values + np.minimum(np.maximum(delta, -clip_coeff), clip_coeff) - returns
            squared_clipped = np.square(clipped_error)
            value_loss = 0.5 * _mean(np.maximum(squared_error, squared_clipped))
            # d/dV of 0.5 * max(e^2, e_c^2) per sample: e, or e_c where the clipped error is larger and
            # V - V_old lies inside the clip range (zero outside it)
            inside = np.abs(delta) <= clip_coeff
            value_gradient = np.where(squared_error >= squared_clipped, value_error, clipped_error * inside)
        else:
            value_loss = 0.5 * _mean(squared_error)
            value_gradient = value_error
        loss = policy_loss + self.value_loss_coeff * value_loss - self.ent_loss_coeff * entropy

        # dL/dlog pi: the unclipped surrogate's derivative where it is the minimum (ties included)
        log_prob_gradient = np.where(surrogate <= clipped_surrogate, surrogate, np.float32(0.0))
        log_prob_gradient *= np.float32(-1.0 / m)
        if self.gaussian:
            inside_std = (log_std_value >= LOG_STD_MIN) & (log_std_value <= LOG_STD_MAX)
            output_gradient = standardized / std
            output_gradient *= log_prob_gradient[:, None]
            std_gradient = np.add.reduce((squared - 1.0) * log_prob_gradient[:, None], axis=0)
            std_gradient -= np.float32(self.ent_loss_coeff)
            np.multiply(std_gradient, inside_std, out=log_std_gradient)
        else:
            output_gradient = -probabilities
            output_gradient[rows, actions] += 1.0  # one_hot(a) - p
            output_gradient *= log_prob_gradient[:, None]
            if self.ent_loss_coeff != 0.0:
                output_gradient += (probabilities * (all_log_probs + entropies[:, None])
                                    * np.float32(self.ent_loss_coeff / m))
        self._backward(actor, actor_hidden, output_gradient)
        value_gradient = value_gradient * np.float32(self.value_loss_coeff / m)
        self._backward(critic, critic_hidden, value_gradient[:, None])

        approx_kl = _mean((ratio - 1.0) - log_ratio)  # k3 estimator, as ppo.losses
        clipfrac = np.float32(np.count_nonzero(np.abs(ratio - 1.0) > clip_coeff) / m)
        statistics = np.array([loss, policy_loss, value_loss, entropy, approx_kl, clipfrac], dtype=np.float32)
        return LossOutput(*torch.from_numpy(statistics).unbind())

    # ---------------------------------------------------------------------------------------------
    def _arrays(self) -> tuple[list[_Layer], list[_Layer], tuple[np.ndarray, np.ndarray] | None]:
        """Numpy views of the weights, biases and their ``.grad`` (actor layers, critic layers, and the
        log-std with its gradient); remade when a parameter or gradient tensor has been replaced."""
        for parameter in self.parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        key = [(p.data_ptr(), id(p.grad)) for p in self.parameters]
        if self._cache_key != key:
            def layer(linear: nn.Linear) -> _Layer:
                return _Layer(*(t.detach().numpy() for t in (linear.weight, linear.bias, linear.weight.grad,
                                                              linear.bias.grad)))

            log_std = self.agent.action_head.log_std if self.gaussian else None
            self._cache = ([layer(linear) for linear in self.actor_layers],
                           [layer(linear) for linear in self.critic_layers],
                           None if log_std is None else (log_std.detach().numpy(), log_std.grad.numpy()))
            self._cache_key = key
        return self._cache

    def _forward(self, layers: list[_Layer], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Output ``[M, K]`` of the MLP ``layers`` and the input of every layer (kept for the backward pass)."""
        inputs = [x]
        for layer in layers[:-1]:
            x = x @ layer.weight.T
            x += layer.bias
            x = NUMPY_ACTIVATIONS[self.activation](x)
            inputs.append(x)
        last = layers[-1]
        output = x @ last.weight.T
        output += last.bias
        return output, inputs

    def _backward(self, layers: list[_Layer], inputs: list[np.ndarray], gradient: np.ndarray) -> None:
        """Back-propagate ``gradient`` ``[M, K]`` (dL/d output) through ``layers``, writing each weight's and
        bias's gradient into its ``.grad``."""
        derivative = NUMPY_ACTIVATION_DERIVATIVES[self.activation]
        ones = np.ones(gradient.shape[0], np.float32)
        for index in range(len(layers) - 1, -1, -1):
            layer = layers[index]
            np.matmul(gradient.T, inputs[index], out=layer.weight_grad)
            np.dot(ones, gradient, out=layer.bias_grad)  # the column sums, by BLAS: a fraction of np.sum's time
            if index > 0:
                gradient = gradient @ layer.weight
                gradient *= derivative(inputs[index])  # of the activation, from its output
