"""The PPO objective as a pure function."""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossOutput(NamedTuple):
    """The scalar loss to minimise and its detached statistics."""

    loss: torch.Tensor            # [] total loss, with gradient
    policy_loss: torch.Tensor     # [] clipped surrogate loss (negated objective)
    value_loss: torch.Tensor      # [] 0.5 * mean squared value error (clipped if asked)
    entropy: torch.Tensor         # [] mean policy entropy
    approx_kl: torch.Tensor       # [] k3 estimate of KL(old || new)
    clipfrac: torch.Tensor        # [] fraction of ratios outside [1 - clip, 1 + clip]


def ppo_loss(new_log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
             new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor,
             clip_coeff: float | torch.Tensor, ent_loss_coeff: float, value_loss_coeff: float,
             clip_value_loss: bool = True, normalize_advantages: bool = True) -> LossOutput:
    """Clipped surrogate, value and entropy losses of PPO (Schulman et al. 2017, eq. 7 and eq. 9).

    ``L = -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) + c_v * L_V - c_e * mean(H)`` with
    ``r = exp(new_log_probs - old_log_probs)``. The value loss is ``0.5 * mean((V - R)^2)``; with
    ``clip_value_loss`` it is ``0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))``
    as in the reference implementation (openai/baselines ppo2, CleanRL ppo.py).

    Args:
        new_log_probs, old_log_probs, advantages, new_values, old_values, returns, entropy: ``[M]`` each,
            for a minibatch of ``M`` transitions.
        clip_coeff: epsilon, > 0 (a float or a 0-d tensor).
        ent_loss_coeff, value_loss_coeff: loss weights, >= 0.
        clip_value_loss: clip the value update around ``old_values``.
        normalize_advantages: standardise ``advantages`` within the minibatch (needs ``M >= 2``).

    Returns:
        :class:`LossOutput`; only ``loss`` carries gradient.
    """
    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = new_log_probs - old_log_probs
    ratio = log_ratio.exp()
    surrogate = advantages * ratio
    clipped_surrogate = advantages * torch.clamp(ratio, 1.0 - clip_coeff, 1.0 + clip_coeff)
    policy_loss = -torch.min(surrogate, clipped_surrogate).mean()

    value_error = (new_values - returns).square()
    if clip_value_loss:
        clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coeff, clip_coeff)
        value_error = torch.max(value_error, (clipped_values - returns).square())
    value_loss = 0.5 * value_error.mean()

    entropy_mean = entropy.mean()
    loss = policy_loss + value_loss_coeff * value_loss
    if ent_loss_coeff != 0.0:  # without a bonus the backward pass need not go through the entropy
        loss = loss - ent_loss_coeff * entropy_mean
    with torch.no_grad():
        # k3 estimator of KL, http://joschu.net/blog/kl-approx.html
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coeff).float().mean()
    return LossOutput(loss, policy_loss.detach(), value_loss.detach(), entropy_mean.detach(), approx_kl,
                      clipfrac)


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """``1 - Var(targets - predictions) / Var(targets)``; 1 is perfect, 0 no better than a constant.

    Returns NaN when ``targets`` has zero variance. Shapes: any, equal.
    """
    target_variance = targets.var()
    if target_variance.item() == 0.0:
        return float("nan")
    return float(1.0 - (targets - predictions).var() / target_variance)
