"""The CUDA-graph learner: PPO's minibatch step and the rollout's per-step policy, each captured once in a CUDA
graph and replayed, so that a step costs one graph launch instead of hundreds of kernel launches.

The update (:meth:`CudaGraphLearner.update`) replays one graph per minibatch: gradients zeroed, forward pass,
:func:`ppo.losses.ppo_loss`, backward pass, ``clip_grad_norm_`` and a fused ``torch.optim.Adam`` step with
``capturable=True``, whose learning rates are device tensors (annealing fills them) and whose clip coefficient
is a device tensor too. The minibatch is gathered (with the epoch's permutation, on the device) into static
input tensors before each replay. Nothing in an update waits for the GPU except one read of the accumulated
statistics at its end (and, with ``target_kl``, one read of the epoch's approx KL per epoch).

A minibatch whose loss or gradient norm is not finite skips its Adam step without a host synchronisation:
the graph writes ``1.0`` into the optimizer's ``found_inf`` tensor, the mechanism ``torch.amp.GradScaler``
uses. With it the fused Adam kernel leaves parameters, ``exp_avg`` and ``exp_avg_sq`` untouched and the step
count is incremented and decremented again, so Adam's state is exactly what it would be had the step not
been taken, as in :class:`ppo.learners.torch_learner.TorchLearner`, which skips the step on the host. Skipped
minibatches count neither in the statistics nor in the target-KL mean, and are reported as
``skipped_minibatches``.

The rollout policy (:class:`CudaGraphRolloutPolicy`) replays a graph of the policy's forward pass and sampling
per env step. Observations arrive through a pinned host buffer (one asynchronous copy) into the graph's input
and are stored, with the sampled actions, log-probabilities and values, straight into the rollout buffer on
the device; only the actions come back to the host.

Both graphs read the network's weights (and the observation normalizer's statistics) where they live, so
the in-place Adam updates (and the normalizer's in-place updates) reach them without recapturing. Graphs are
captured after warm-up iterations on a side stream, as ``torch.cuda.graphs`` asks; warm-up steps of the
update are skipped through ``found_inf``, so they change neither weights nor Adam's state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from common.errors import UsageError
from ppo.buffer import Minibatch, RolloutBuffer
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.learners import cuda_graph_policy as graphs
from ppo.learners.base import STATISTICS, Learner, MinibatchResult
from ppo.learners.cuda_graph_policy import CudaGraphRolloutPolicy, evaluate_actions
from ppo.losses import ppo_loss


class CudaGraphLearner(Learner):
    """PPO's update with the whole minibatch step (forward, loss, backward, gradient clip, Adam) in one CUDA
    graph, and a rollout policy whose per-step forward pass and sampling is another (see the module
    docstring). The arithmetic is :class:`ppo.learners.torch_learner.TorchLearner`'s; the optimizer state is
    saved and loaded in the same format (one Adam group per flat Parameter, float learning rates).

    CUDA only, one process (no ``torchrun``); ``--compile`` does not apply.

    Raises:
        ValueError: ``device`` is not a CUDA device.
        UsageError: a distributed run; graph capture failing at runtime (naming ``--learner torch``).
    """

    name = "cuda-graph"
    requires_cuda = True
    """False only in CPU tests of the update's bookkeeping (with graph capture replaced by eager calls)."""

    def __init__(self, agent: nn.Module, config: PPOConfig, device: torch.device,
                 distributed: DistributedContext | None = None, seed: int | None = None) -> None:
        device = torch.device(device)
        if self.requires_cuda and (device.type != "cuda" or not torch.cuda.is_available()):
            raise ValueError(f"the cuda-graph learner needs a CUDA device, got '{device}'; add --use-gpu on a "
                             "machine with a CUDA GPU, or use --learner torch")
        if distributed is not None and distributed.enabled:
            raise UsageError("--learner cuda-graph runs in one process; with torchrun use --learner torch")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        super().__init__(agent, config, device, distributed, seed)
        self.clip_coeff = torch.tensor(config.clip_coeff, dtype=torch.float32, device=device)
        # 1.0 in warm-up iterations: their Adam steps are skipped, so they change nothing.
        self.force_skip = torch.zeros((), dtype=torch.float32, device=device)
        # Written by the graph: 1.0 when the minibatch's loss or gradient norm is not finite (the fused Adam
        # kernel then skips its step, as with torch.amp.GradScaler), 0.0 otherwise.
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        self.optimizer.found_inf = self.found_inf
        # Sums over an update: the STATISTICS of the steps taken, steps taken, steps skipped.
        self.totals = torch.zeros(len(STATISTICS) + 2, dtype=torch.float32, device=device)
        # Sums over an epoch: approx KL of the steps taken, steps taken (for target_kl).
        self.epoch_totals = torch.zeros(2, dtype=torch.float32, device=device)
        self.last_statistics = torch.zeros(len(STATISTICS), dtype=torch.float32, device=device)
        self.static_batch: Minibatch | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.policy: CudaGraphRolloutPolicy | None = None

    # Optimizer ------------------------------------------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Adam:
        """Fused Adam with ``capturable=True`` and each group's learning rate a float32 tensor on the device
        (the fused kernel reads it there), so that annealing reaches the captured step."""
        self.learning_rates = [torch.tensor(lr, dtype=torch.float32, device=self.device)
                               for lr in self.base_learning_rates]
        self.learning_rate_values = list(self.base_learning_rates)
        return torch.optim.Adam([{"params": [flat], "lr": lr} for flat, lr in
                                 zip(self.parameters, self.learning_rates)],
                                lr=self.learning_rates[0], eps=1e-5, fused=True, capturable=True)

    def anneal(self, fraction: float) -> None:
        for index, (lr, base) in enumerate(zip(self.learning_rates, self.base_learning_rates)):
            self.learning_rate_values[index] = fraction * base
            lr.fill_(fraction * base)

    @property
    def learning_rate(self) -> float:
        return float(self.learning_rate_values[0])

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`Learner.state_dict`, with float learning rates and ``capturable`` off in the param groups,
        as the other learners write them."""
        optimizer = self.optimizer.state_dict()
        for group, value in zip(optimizer["param_groups"], self.learning_rate_values):
            group["lr"] = float(value)
            group["capturable"] = False
        return {"optimizer": optimizer, "minibatch_rng": self.minibatch_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As :meth:`Learner.load_state_dict`; the loaded values are copied into the tensors the captured
        graph uses (learning rates, Adam's ``step``, ``exp_avg``, ``exp_avg_sq``), which stay in place."""
        optimizer = self.optimizer
        kept = {index: dict(optimizer.state[flat]) for index, flat in enumerate(self.parameters)
                if flat in optimizer.state}
        super().load_state_dict(state)
        for index, group in enumerate(optimizer.param_groups):
            value = group["lr"]
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
            self.learning_rate_values[index] = value
            self.learning_rates[index].fill_(value)
            group.update(lr=self.learning_rates[index], capturable=True, fused=True, foreach=None)
        for index, old in kept.items():
            flat = self.parameters[index]
            new = optimizer.state.get(flat, {})
            for key, tensor in old.items():
                if key in new:
                    tensor.copy_(new[key])
                else:  # a state saved before any step: Adam starts afresh
                    tensor.zero_()
            optimizer.state[flat] = old

    # Rollouts -------------------------------------------------------------------------------------------
    def rollout_policy(self, buffer: RolloutBuffer, tensor_actions: bool) -> CudaGraphRolloutPolicy:
        policy = self.policy
        if policy is None or policy.buffer is not buffer or policy.tensor_actions != tensor_actions:
            policy = self.policy = CudaGraphRolloutPolicy(self.agent, buffer, self.device, tensor_actions)
        return policy.reset()

    # Update ---------------------------------------------------------------------------------------------
    def _train_step(self) -> None:
        """The captured minibatch step on :attr:`static_batch`."""
        config, batch = self.config, self.static_batch
        for flat in self.parameters:
            flat.grad.zero_()
        log_prob, entropy, value = evaluate_actions(self.agent, batch.observations, batch.actions)
        losses = ppo_loss(log_prob, batch.log_probs, batch.advantages, value, batch.values, batch.returns,
                          entropy, self.clip_coeff, config.ent_loss_coeff, config.value_loss_coeff,
                          config.clip_value_loss, config.normalize_advantages)
        losses.loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.parameters, config.max_gradient, foreach=True)
        nonfinite = (~torch.isfinite(losses.loss.detach() + grad_norm)).to(torch.float32)
        self.found_inf.copy_(torch.maximum(nonfinite, self.force_skip))
        self.optimizer.step()
        statistics = torch.stack([losses.policy_loss, losses.value_loss, losses.entropy, losses.approx_kl,
                                  losses.clipfrac, grad_norm.detach()])
        self.last_statistics.copy_(statistics)
        skipped = self.found_inf.unsqueeze(0)
        taken = 1.0 - skipped
        self.totals.add_(torch.cat([torch.where(skipped > 0, 0.0, statistics), taken, skipped]))
        self.epoch_totals.add_(torch.cat([torch.where(skipped > 0, 0.0, losses.approx_kl.unsqueeze(0)), taken]))

    def _capture_update(self, batch: Minibatch) -> None:
        """Allocate the static minibatch (a copy of ``batch``, the warm-up's input) and capture
        :meth:`_train_step`; the warm-up and capture steps are skipped (``force_skip``)."""
        self.static_batch = Minibatch(*(field.clone() for field in batch))
        self.force_skip.fill_(1.0)
        self.graph, _ = graphs.capture(self._train_step, "PPO update (minibatch step)")
        self.force_skip.fill_(0.0)

    @staticmethod
    def _flat_fields(buffer: RolloutBuffer) -> Minibatch:
        return Minibatch(buffer.observations.flatten(0, 1), buffer.actions.flatten(0, 1), buffer.log_probs.flatten(),
                         buffer.values.flatten(), buffer.advantages.flatten(), buffer.returns.flatten())

    def _load_minibatch(self, flat: Minibatch, index: torch.Tensor) -> None:
        for source, target in zip(flat, self.static_batch):
            torch.index_select(source, 0, index, out=target)

    def _epoch_permutation(self, batch_size: int) -> torch.Tensor:
        """The epoch's shuffle, drawn as :meth:`RolloutBuffer.minibatches` draws it (``randperm`` on the CPU
        generator), copied to the device without waiting."""
        permutation = torch.randperm(batch_size, generator=self.minibatch_generator)
        if self.device.type != "cuda":
            return permutation
        return permutation.pin_memory().to(self.device, non_blocking=True)

    def update(self, buffer: RolloutBuffer, clip_coeff: float) -> dict[str, float]:
        """:meth:`Learner.update` by graph replays: the same epochs, shuffles, skips and target-KL stop."""
        config = self.config
        self.prepare(buffer)
        flat = self._flat_fields(buffer)
        batch_size, minibatch_size = buffer.num_steps * buffer.num_envs, config.minibatch_size
        if self.graph is None:
            self._capture_update(Minibatch(*(field[:minibatch_size] for field in flat)))
        self.clip_coeff.fill_(clip_coeff)
        self.totals.zero_()
        for _epoch in range(config.num_epochs):
            permutation = self._epoch_permutation(batch_size)
            self.epoch_totals.zero_()
            for start in range(0, batch_size, minibatch_size):
                self._load_minibatch(flat, permutation[start:start + minibatch_size])
                self.graph.replay()
            if config.target_kl is not None:
                epoch_kl, epoch_steps = self.epoch_totals.tolist()  # one synchronisation per epoch
                if epoch_steps and epoch_kl / epoch_steps > config.target_kl:
                    break
        totals = self.totals.tolist()  # the update's one synchronisation
        count, skipped = totals[-2], int(round(totals[-1]))
        means = [value / count for value in totals[:len(STATISTICS)]] if count else [float("nan")] * len(STATISTICS)
        return {**dict(zip(STATISTICS, means)), "skipped_minibatches": skipped}

    def minibatch_step(self, batch: Minibatch, clip_coeff: float) -> MinibatchResult | None:
        """One replay on ``batch`` (of ``minibatch_size`` transitions); it reads back whether the step was
        skipped, so :meth:`update` does not use it."""
        if batch.observations.shape[0] != self.config.minibatch_size:
            raise ValueError(f"the cuda-graph learner's minibatches hold {self.config.minibatch_size} transitions, "
                             f"got {batch.observations.shape[0]}")
        if self.graph is None:
            self._capture_update(batch)
        for source, target in zip(batch, self.static_batch):
            target.copy_(source)
        self.clip_coeff.fill_(clip_coeff)
        self.graph.replay()
        if bool(self.found_inf.item()):
            return None
        statistics = self.last_statistics.clone()
        return MinibatchResult(statistics, statistics[3])
