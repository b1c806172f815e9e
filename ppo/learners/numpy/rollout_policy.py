"""The numpy learner's rollout policy: the MLP's sampling step in numpy, with the rollout kept in arrays."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from networks import CategoricalHead, GaussianHead, MLPActorCritic
from ppo.buffer import RolloutBuffer


# The MLP's activations in numpy, applied in place where they can be, and their derivatives as functions of
# their output y (the formulas of autograd's tanh_backward, threshold_backward and elu_backward).
NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": lambda x: np.tanh(x, out=x),
    "relu": lambda x: np.maximum(x, 0.0, out=x),
    "elu": lambda x: np.where(x > 0.0, x, np.expm1(x)),
}
NUMPY_ACTIVATION_DERIVATIVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": lambda y: 1.0 - np.square(y),
    "relu": lambda y: y > 0.0,
    "elu": lambda y: np.where(y > 0.0, np.float32(1.0), y + 1.0),
}


def mlp_activation_name(agent: MLPActorCritic) -> str | None:
    """``"tanh"``, ``"relu"`` or ``"elu"`` (alpha 1): the activation of every hidden layer of ``agent``;
    ``"tanh"`` without hidden layers (nothing to apply); None for anything else."""
    layers = list(agent.actor)[1::2]
    if not layers:
        return "tanh"
    kinds = {type(layer).__name__.lower() for layer in layers}
    name = kinds.pop() if len(kinds) == 1 else None
    if name == "elu" and getattr(layers[0], "alpha", 1.0) != 1.0:
        return None
    return name if name in NUMPY_ACTIVATIONS else None


def numpy_unsupported_reason(agent: nn.Module) -> str | None:
    """None when the numpy code paths (:class:`NumpyRolloutPolicy`, :mod:`ppo.learners.numpy.gradient`) can
    run ``agent``: an :class:`MLPActorCritic` with float32 parameters on the CPU, tanh/ReLU/ELU, and a Categorical
    head or a Gaussian head with a state-independent std. Otherwise why not, as a phrase that follows "the
    numpy learner" ("has no state-dependent standard deviation")."""
    if type(agent) is not MLPActorCritic:
        return f"runs only the MLP actor-critic, not {type(agent).__name__}"
    if mlp_activation_name(agent) is None:
        return "has only tanh, ReLU and ELU activations"
    head = agent.action_head
    if isinstance(head, GaussianHead) and head.state_dependent:
        return "has no state-dependent standard deviation"
    if not isinstance(head, (GaussianHead, CategoricalHead)):
        return f"has no action head {type(head).__name__}"
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in agent.parameters()):
        return "needs float32 parameters on the CPU"
    return None


class NumpyRolloutPolicy:
    """:class:`RolloutPolicy` computed in numpy, for an :class:`MLPActorCritic` on the CPU (see
    :func:`numpy_unsupported_reason`), with the rollout's actions, values and log-probabilities kept in its own
    arrays, so a step converts nothing between numpy and torch.

    The same fused network (:meth:`MLPActorCritic.fused_layers`), the same observation normalization and the
    same noise, drawn by torch from its generator, so a rollout samples what :class:`RolloutPolicy` samples,
    up to float32 rounding in the matrix products. A numpy operation on these small arrays costs about a
    microsecond of overhead against several for a tensor operation; a Hopper step's inference went from
    about 230 us to about 60. A step stores the Categorical logits, and the log-softmax of the chosen actions
    runs once for the whole rollout (:meth:`rollout_log_probs`); a Gaussian's are computed from the noise up
    front, as :class:`RolloutPolicy` does.

    Args:
        agent: the MLP actor-critic; its weights and statistics must not change while the policy is used.
        num_steps, num_envs: the rollout's size; step ``t`` uses noise ``[num_envs, ...]`` of row ``t``.

    Attributes:
        actions: ``[num_steps, num_envs]`` int64 (Categorical) or ``[num_steps, num_envs, d]`` float32.
        values: ``[num_steps, num_envs]`` float32, ``V(s)`` of each step's observations.
        Rows of steps not yet taken are undefined.
    """

    def __init__(self, agent: MLPActorCritic, num_steps: int, num_envs: int) -> None:
        reason = numpy_unsupported_reason(agent)
        if reason is not None:
            raise ValueError(f"no numpy rollout policy: {reason}")
        head = agent.action_head
        self.gaussian = isinstance(head, GaussianHead)
        self.activation = NUMPY_ACTIVATIONS[mlp_activation_name(agent)]
        with torch.inference_mode():
            self.layers = [(weight.numpy().T, bias.numpy()) for weight, bias in agent.fused_layers()]
            noise = head.draw_noise((num_steps, num_envs), torch.device("cpu"))
            self.noise = noise.numpy()
            if self.gaussian:
                std, log_probs = head.fixed_std_log_probs(noise)
                self.std, self.log_probs = std.numpy(), log_probs.numpy()
            normalizer = agent.normalizer
            self.normalization = (None if normalizer is None else
                                  (*(t.numpy() for t in normalizer.float32_statistics()), normalizer.clip))
        if self.gaussian:
            self.actions = np.empty(self.noise.shape, np.float32)
        else:
            self.actions = np.empty((num_steps, num_envs), np.int64)
            self.logits = np.empty(self.noise.shape, np.float32)
        self.values = np.empty((num_steps, num_envs), np.float32)
        self.observations: np.ndarray | None = None  # [num_steps + 1, num_envs, *obs_shape], made at start()

    def _network(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = observations.reshape(observations.shape[0], -1).astype(np.float32, copy=False)
        if self.normalization is not None:  # RunningNormalizer.forward
            mean, std, clip = self.normalization
            x = (x - mean) / std
            np.minimum(np.maximum(x, -clip, out=x), clip, out=x)
        for weight, bias in self.layers[:-1]:
            x = x @ weight
            x += bias
            x = self.activation(x)
        weight, bias = self.layers[-1]
        outputs = x @ weight
        outputs += bias
        return outputs[:, :-1], outputs[:, -1]

    def start(self, observations: torch.Tensor) -> None:
        rows = (self.actions.shape[0] + 1, *observations.shape)
        if self.observations is None or self.observations.shape != rows:
            self.observations = np.empty(rows, np.uint8 if observations.dtype == torch.uint8 else np.float32)
        self.observations[0] = observations.numpy()

    def act(self, step: int) -> np.ndarray:
        """Sample the actions of row ``step``'s observations, store them and the values in row ``step`` and
        return that row of :attr:`actions` (a view)."""
        outputs, self.values[step] = self._network(self.observations[step])
        actions = self.actions[step]
        if self.gaussian:  # mean + std * z
            np.multiply(self.noise[step], self.std, out=actions)
            actions += outputs
        else:  # the Gumbel-max trick
            self.logits[step] = outputs
            np.argmax(outputs + self.noise[step], axis=-1, out=actions)
        return actions

    def observe(self, step: int, observations: np.ndarray | torch.Tensor) -> None:
        self.observations[step] = observations  # a copy (an env may reuse its array)

    def rollout_log_probs(self) -> np.ndarray:
        """``[num_steps, num_envs]`` float32 log-probabilities of the rollout's actions (call it once every
        step was taken); a Categorical's as ``log_softmax(logits)[action]``."""
        if self.gaussian:
            return self.log_probs
        logits = self.logits
        shifted = logits - np.maximum.reduce(logits, axis=-1, keepdims=True)
        chosen = np.take_along_axis(shifted, self.actions[..., None], axis=-1)[..., 0]
        return chosen - np.log(np.add.reduce(np.exp(shifted), axis=-1))

    def value(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``V(s)`` of CPU observations ``[M, *obs_shape]`` -> ``[M]`` (any ``M``)."""
        return torch.from_numpy(self._network(np.asarray(observations))[1])

    def finish(self, buffer: RolloutBuffer) -> tuple[torch.Tensor, torch.Tensor]:
        num_steps = self.actions.shape[0]
        for target, array in zip((buffer.observations, buffer.actions, buffer.log_probs, buffer.values),
                                 (self.observations[:num_steps], self.actions, self.rollout_log_probs(),
                                  self.values)):
            target.copy_(torch.from_numpy(array))
        last = self.observations[num_steps]
        return torch.from_numpy(last.copy()), self.value(last)
