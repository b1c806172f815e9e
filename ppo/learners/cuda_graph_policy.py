"""The CUDA-graph learner's rollout policy and graph helpers: capture after warm-up on a side stream, the
network's input and outputs computed so that a captured graph reads the current weights and normalizer
statistics (see :mod:`ppo.learners.cuda_graph`)."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from common.errors import UsageError
from ppo.buffer import RolloutBuffer

WARMUP_ITERATIONS = 3
"""Eager iterations on a side stream before a capture (cuDNN/cuBLAS autotuning, lazy state, allocator)."""

FALLBACK = "train with --learner torch instead (the same update without CUDA graphs)"


def _capture_error(what: str, error: BaseException) -> UsageError:
    return UsageError(f"CUDA graph capture of the {what} failed ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}); {FALLBACK}")


def network_input(agent: nn.Module, observations: torch.Tensor) -> torch.Tensor:
    """``agent.preprocess(observations)``, with the observation normalizer's float32 statistics computed from
    its float64 buffers on every call (what :class:`networks.RunningNormalizer` computes, without its cache of
    float32 copies, which a graph would hold on to after the statistics change)."""
    normalizer = getattr(agent, "normalizer", None)
    if normalizer is None:
        return agent.preprocess(observations)
    mean = normalizer.mean.to(torch.float32)
    std = torch.sqrt(normalizer.var + normalizer.epsilon).to(torch.float32)
    return torch.clamp((observations.to(torch.float32) - mean) / std, -normalizer.clip, normalizer.clip)


def evaluate_actions(agent: nn.Module, observations: torch.Tensor, actions: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_prob, entropy, value)`` of ``actions``: ``agent.get_action_and_value(observations, actions)``
    through :func:`network_input`."""
    if getattr(agent, "normalizer", None) is None:
        out = agent.get_action_and_value(observations, actions)
        return out.log_prob, out.entropy, out.value
    actor_features, critic_features = agent.features(network_input(agent, observations))
    _, log_prob, entropy = agent.action_head(actor_features, actions, False, True)
    value = F.linear(critic_features, agent.value_head.weight, agent.value_head.bias).squeeze(-1)
    return log_prob, entropy, value


def policy_outputs(agent: nn.Module, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outputs [N, K], values [N])``: the concatenated outputs of ``action_head.output_layers()`` (what
    ``action_head.sample`` takes) and ``V(s)``, with the weights as they are when it runs."""
    actor_features, critic_features = agent.features(network_input(agent, observations))
    layers = agent.action_head.output_layers()
    outputs = [F.linear(actor_features, layer.weight, layer.bias) for layer in layers]
    values = F.linear(critic_features, agent.value_head.weight, agent.value_head.bias).squeeze(-1)
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)), values


def capture(function: Callable[[], Any], what: str, pool: Any = None) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Run ``function`` ``WARMUP_ITERATIONS`` times on a side stream, then capture one call of it in a CUDA
    graph; returns ``(graph, what the captured call returned)`` (tensors of the graph's memory pool, rewritten
    by every replay).

    Raises:
        UsageError: the capture failed (naming ``--learner torch``).
    """
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), warnings.catch_warnings():
            # Adam warns once that capturable=True runs uncaptured: that is the warm-up.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            for _ in range(WARMUP_ITERATIONS):
                function()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            outputs = function()
        torch.cuda.synchronize()
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - any capture failure gets one line that names the way out
        raise _capture_error(what, error) from error
    return graph, outputs


class _DoneEvent:
    """Stands in for ``torch.cuda.Event`` on the CPU (tests): work is always done."""

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


class CudaGraphRolloutPolicy:
    """The :class:`ppo.learners.base.RolloutPolicy` of :class:`CudaGraphLearner`: one CUDA graph replay per
    env step for the forward pass and the sampling, with the noise of the whole rollout drawn up front, as
    :class:`networks.RolloutPolicy` draws it (``action_head.draw_noise``: Gumbel noise for Categorical heads,
    standard normal noise for Gaussian ones).

    Rows ``0..T-1`` (observations, actions, log-probabilities, values) are written straight into ``buffer``
    as the rollout goes; :meth:`finish` only hands back row ``T``. Made once per learner and reused for every
    rollout into the same buffer (:meth:`reset`): the graph reads the weights where they live.

    Args:
        agent: the actor-critic on the CUDA ``device``.
        buffer: the rollout buffer (its ``num_steps``, ``num_envs``, observation shape and dtype).
        device: the CUDA device.
        tensor_actions: hand actions to the envs as tensors on ``device`` (Brax) instead of numpy arrays.
    """

    def __init__(self, agent: nn.Module, buffer: RolloutBuffer, device: torch.device, tensor_actions: bool) -> None:
        self.agent, self.buffer, self.device, self.tensor_actions = agent, buffer, device, tensor_actions
        num_envs = buffer.num_envs
        self.dtype = buffer.observations.dtype
        with torch.inference_mode():
            self.static_observations = torch.zeros_like(buffer.observations[0])
            # the shape of one step's noise, from a meta tensor: drawing it would advance the CUDA generator
            noise_shape = agent.action_head.draw_noise((num_envs,), torch.device("meta")).shape
            self.static_noise = torch.zeros(noise_shape, device=device)
            self.graph, (self.static_action, self.static_log_prob, self.static_value) = capture(
                self._step, "rollout policy (forward pass and sampling)")
        # Two pinned staging buffers, used in turn; an event says when a buffer's copy to the device is done.
        cuda = device.type == "cuda"  # (CPU only in tests of this class's bookkeeping)
        self.staging = [torch.empty(self.static_observations.shape, dtype=self.dtype, pin_memory=cuda)
                        for _ in range(2)]
        self.staging_numpy = [tensor.numpy() for tensor in self.staging]
        self.staging_done = [torch.cuda.Event() if cuda else _DoneEvent() for _ in range(2)]
        self.action_host = torch.empty(self.static_action.shape, dtype=self.static_action.dtype, pin_memory=cuda)
        self.action_copied = torch.cuda.Event() if cuda else _DoneEvent()
        self.noise: torch.Tensor | None = None

    def _step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs, values = policy_outputs(self.agent, self.static_observations)
        action, log_prob, _ = self.agent.action_head.sample(outputs, self.static_noise)
        return action, log_prob, values

    def reset(self) -> CudaGraphRolloutPolicy:
        """Draw the noise of the next rollout; returns self."""
        with torch.inference_mode():
            self.noise = self.agent.action_head.draw_noise((self.buffer.num_steps, self.buffer.num_envs),
                                                           self.device)
        return self

    def start(self, observations: torch.Tensor) -> None:
        self.static_observations.copy_(observations)
        self.buffer.observations[0].copy_(self.static_observations)

    def act(self, step: int) -> np.ndarray | torch.Tensor:
        buffer = self.buffer
        self.static_noise.copy_(self.noise[step])
        self.graph.replay()
        buffer.actions[step].copy_(self.static_action)
        buffer.log_probs[step].copy_(self.static_log_prob)
        buffer.values[step].copy_(self.static_value)
        if self.tensor_actions:
            return self.static_action.clone()
        self.action_host.copy_(self.static_action, non_blocking=True)
        self.action_copied.record()
        self.action_copied.synchronize()
        return self.action_host.numpy().copy()

    def observe(self, step: int, observations: np.ndarray | torch.Tensor) -> None:
        if isinstance(observations, torch.Tensor):
            self.static_observations.copy_(observations)
        else:
            index = step % 2
            self.staging_done[index].synchronize()  # its previous copy to the device has finished
            np.copyto(self.staging_numpy[index], observations, casting="unsafe")
            self.static_observations.copy_(self.staging[index], non_blocking=True)
            self.staging_done[index].record()
        if step < self.buffer.num_steps:
            self.buffer.observations[step].copy_(self.static_observations)

    def value(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        observations = torch.as_tensor(observations, dtype=self.dtype, device=self.device)
        return policy_outputs(self.agent, observations)[1]

    def finish(self, buffer: RolloutBuffer) -> tuple[torch.Tensor, torch.Tensor]:
        if buffer is not self.buffer:
            for name in ("observations", "actions", "log_probs", "values"):
                getattr(buffer, name).copy_(getattr(self.buffer, name))
        self.graph.replay()  # the values of row T (its sampled actions are not used)
        return self.static_observations.clone(), self.static_value.clone()
