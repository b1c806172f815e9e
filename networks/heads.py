"""Action distributions: Categorical for Discrete spaces, diagonal Gaussian for Box spaces."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# Bounds on the log standard deviation: exp(-5) ~ 0.007 keeps the Gaussian from collapsing to a point,
# exp(2) ~ 7.4 keeps it from overflowing (rsl_rl and SB3 bound it likewise).
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def layer_init(layer: nn.Linear | nn.Conv2d, gain: float = math.sqrt(2.0), bias: float = 0.0):
    """Orthogonal weights with ``gain`` and constant bias (Engstrom et al. 2020, "Implementation Matters";
    openai/baselines). Returns the layer."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class CategoricalHead(nn.Module):
    """Discrete actions from logits ``[N, n]``; actions are int64 ``[N]``."""

    def __init__(self, in_features: int, num_actions: int) -> None:
        super().__init__()
        self.logits = layer_init(nn.Linear(in_features, num_actions), gain=0.01)

    def output_layers(self) -> list[nn.Linear]:
        """The linear layers whose outputs, concatenated, parameterise the distribution (the logits)."""
        return [self.logits]

    def draw_noise(self, size: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Gumbel noise ``-log E``, ``E ~ Exp(1)``, of shape ``[*size, n]``: ``argmax(logits + noise)`` is a
        sample of ``Categorical(logits)`` (the Gumbel-max trick)."""
        num_actions = self.logits.out_features
        return torch.empty((*size, num_actions), device=device).exponential_().log_().neg_()

    def forward(self, features: torch.Tensor, action: torch.Tensor | None = None, deterministic: bool = False,
                with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns ``(action [N], log_prob [N], entropy [N] or None without with_entropy)``; samples when
        ``action`` is None."""
        logits = F.linear(features, self.logits.weight, self.logits.bias)
        if action is None:
            noise = None if deterministic else self.draw_noise(logits.shape[:-1], logits.device)
            return self.sample(logits, noise, with_entropy)
        return self._evaluate(logits, action.long(), with_entropy)

    def sample(self, outputs: torch.Tensor, noise: torch.Tensor | None, with_entropy: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Actions from the logits ``outputs`` ``[N, n]`` and Gumbel ``noise`` ``[N, n]`` from
        :meth:`draw_noise` (None: the most likely action). Returns ``(action [N], log_prob [N], entropy [N]
        or None)``."""
        action = (outputs if noise is None else outputs + noise).argmax(dim=-1)
        return self._evaluate(outputs, action, with_entropy)

    @staticmethod
    def _evaluate(logits: torch.Tensor, action: torch.Tensor, with_entropy: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        log_probs_all = F.log_softmax(logits, dim=-1)
        log_prob = log_probs_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs_all.exp() * log_probs_all).sum(-1) if with_entropy else None
        return action, log_prob, entropy


class GaussianHead(nn.Module):
    """Diagonal Gaussian over ``[N, d]`` actions.

    ``state_dependent=False``: a learned log-std vector shared by all states (PPO paper; CleanRL).
    ``state_dependent=True``: a linear layer gives ``std = softplus(.)`` per state. Either way the
    log-std is kept in ``[LOG_STD_MIN, LOG_STD_MAX]``. Samples are unbounded; the environment wrappers
    clip them to the action space on the way into ``env.step``.
    """

    def __init__(self, in_features: int, action_dim: int, state_dependent: bool = False,
                 init_log_std: float = 0.0) -> None:
        super().__init__()
        self.state_dependent = state_dependent
        self.mean = layer_init(nn.Linear(in_features, action_dim), gain=0.01)
        if state_dependent:
            # softplus(b) = exp(init_log_std) at initialisation
            bias = math.log(math.expm1(math.exp(init_log_std)))
            self.std = layer_init(nn.Linear(in_features, action_dim), gain=0.01, bias=bias)
        else:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def output_layers(self) -> list[nn.Linear]:
        """The linear layers whose outputs, concatenated, parameterise the distribution: the mean, and the
        std layer when the std is state-dependent."""
        return [self.mean, self.std] if self.state_dependent else [self.mean]

    def draw_noise(self, size: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Standard normal noise ``z`` of shape ``[*size, d]``; a sample is ``mean + std * z``."""
        return torch.randn((*size, self.mean.out_features), device=device)

    def fixed_std_log_probs(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With a state-independent std: ``(std [d], log_probs [...])``, where ``log_probs`` are those of the
        samples ``mean + std * noise`` for noise ``[..., d]`` from :meth:`draw_noise`, whatever the mean (the
        same arithmetic as :meth:`sample`, done once for a whole rollout's noise). None with a
        state-dependent std."""
        if self.state_dependent:
            return None
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        log_probs = (-0.5 * noise.square() - log_std).sum(-1) - _HALF_LOG_2PI * noise.shape[-1]
        return log_std.exp(), log_probs

    def forward(self, features: torch.Tensor, action: torch.Tensor | None = None, deterministic: bool = False,
                with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns ``(action [N, d], log_prob [N], entropy [N] or None without with_entropy)``; samples when
        ``action`` is None."""
        mean = F.linear(features, self.mean.weight, self.mean.bias)
        std_outputs = F.linear(features, self.std.weight, self.std.bias) if self.state_dependent else None
        noise = torch.randn_like(mean) if action is None and not deterministic else None
        return self._distribution(mean, std_outputs, action, noise, with_entropy)

    def sample(self, outputs: torch.Tensor, noise: torch.Tensor | None, with_entropy: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Actions from the concatenated outputs of :meth:`output_layers` (``[N, d]``, or ``[N, 2d]`` with a
        state-dependent std) and noise ``z`` ``[N, d]`` from :meth:`draw_noise` (None: the mean).
        Returns ``(action [N, d], log_prob [N], entropy [N] or None)``."""
        d = self.mean.out_features
        std_outputs = outputs[:, d:] if self.state_dependent else None
        return self._distribution(outputs[:, :d], std_outputs, None, noise, with_entropy)

    def _distribution(self, mean: torch.Tensor, std_outputs: torch.Tensor | None, action: torch.Tensor | None,
                      noise: torch.Tensor | None, with_entropy: bool
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``log N(a; mu, sigma) = sum_i -((a_i - mu_i) / sigma_i)^2 / 2 - log sigma_i - log(2 pi) / 2``;
        for a fresh sample ``a = mu + sigma * z`` the standardized term is ``z`` itself."""
        if std_outputs is not None:
            log_std = torch.log(F.softplus(std_outputs) + 1e-6)
        else:
            log_std = self.log_std  # [d], broadcast over the batch
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        if action is not None:
            standardized = (action - mean) / log_std.exp()
        elif noise is None:  # deterministic: the mean
            action, standardized = mean, torch.zeros_like(mean)
        else:
            action, standardized = torch.addcmul(mean, log_std.exp(), noise), noise
        log_prob = (-0.5 * standardized.square() - log_std).sum(-1) - _HALF_LOG_2PI * mean.shape[-1]
        entropy = None
        if with_entropy:
            entropy = (0.5 + _HALF_LOG_2PI + log_std).sum(-1).expand(mean.shape[0])
        return action, log_prob, entropy
