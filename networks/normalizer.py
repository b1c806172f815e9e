"""Running observation normalization as an ``nn.Module``, so its statistics live in ``state_dict``."""

from __future__ import annotations

import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """Normalise inputs by a running mean and variance: ``clip((x - mean) / sqrt(var + eps), -c, c)``.

    Statistics are float64 buffers (saved and loaded with the model's weights) merged batch by batch with
    the parallel algorithm of Chan et al. (1979), as in gymnasium's ``RunningMeanStd``. The statistics
    change only when :meth:`update` is called; the trainer calls it once per rollout, after the update,
    so the whole rollout and its update see the same statistics and evaluation sees frozen ones.

    Args:
        shape: shape of one observation, e.g. ``(obs_dim,)``.
        clip: bound of the normalized values, > 0.
        epsilon: added to the variance.
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.clip, self.epsilon = clip, epsilon
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))
        self._cache_key: tuple[int, ...] | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, *shape]`` -> ``[N, *shape]`` float32."""
        mean, std = self.float32_statistics()
        return torch.clamp((x.to(torch.float32) - mean) / std, -self.clip, self.clip)

    def float32_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, sqrt(var + eps))`` as float32 tensors ``[*shape]``, what :meth:`forward` uses."""
        if torch.compiler.is_compiling():
            return self._float32_statistics()
        # float32 copies of the statistics, remade whenever the buffers change (update, load_state_dict,
        # .to(): each bumps a buffer's version or replaces it); rollouts call this once per env step.
        key = (self.mean._version, self.var._version, self.mean.data_ptr(), self.var.data_ptr())
        if self._cache_key != key:
            with torch.inference_mode(False):  # usable later with autograd, even if made in a rollout
                self._cache, self._cache_key = self._float32_statistics(), key
        return self._cache

    def _float32_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.to(torch.float32), torch.sqrt(self.var + self.epsilon).to(torch.float32)

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge the moments of ``batch`` (``[N, *shape]``, N >= 1) into the running statistics.

        Non-finite rows are ignored, so one bad observation cannot poison the statistics.
        """
        batch = batch.to(torch.float64).reshape(-1, *self.mean.shape)
        finite = torch.isfinite(batch).reshape(batch.shape[0], -1).all(dim=1)
        batch = batch[finite]
        if batch.shape[0] == 0:
            return
        batch_mean = batch.mean(dim=0)
        batch_var = batch.var(dim=0, unbiased=False)
        batch_count = float(batch.shape[0])
        delta = batch_mean - self.mean
        total = self.count + batch_count
        new_mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.copy_(total)
