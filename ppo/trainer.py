"""The PPO training loop: collect a rollout, compute advantages, update, log, checkpoint."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn

from networks import NumpyRolloutPolicy, RolloutPolicy
from ppo.buffer import Minibatch, RolloutBuffer
from ppo.checkpoint import save_checkpoint
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.errors import NumericalError
from ppo.flat_parameters import (NUMPY_ADAM_MAX_SIZE, NumpyAdam, clip_gradient_norm, clip_gradient_norm_arrays,
                                 flat_optimizer_state, flatten_parameters)
from ppo.gae import compute_gae
from ppo.losses import LossOutput, explained_variance, ppo_loss
from ppo.mlp_gradient import MLPLossGradient, unsupported_reason
from ppo.recorder import RunRecorder
from ppo.reward_scaling import RewardScaler

# Consecutive iterations with a non-finite fault after which the run stops with NumericalError.
MAX_CONSECUTIVE_FAULTS = 3


def _torch_dtype(numpy_dtype: np.dtype) -> torch.dtype:
    return torch.uint8 if numpy_dtype == np.uint8 else torch.float32


class Trainer:
    """Runs PPO (Schulman et al. 2017, Algorithm 1) on a vector environment.

    One iteration: anneal the learning rate -> :meth:`collect_rollout` (``num_steps_collected`` steps of
    every env, actions sampled under ``torch.inference_mode()``, truncated episodes bootstrapped with
    ``V(final observation)``) -> GAE -> :meth:`update` (``num_epochs`` passes of shuffled minibatches,
    clipped surrogate + value + entropy loss, gradient-norm clip, optional target-KL stop) -> observation
    statistics updated with the rollout -> log -> checkpoint when due.

    Args:
        config: the resolved hyperparameters.
        envs: a SAME_STEP-autoreset vector env with ``RecordEpisodeStatistics`` (``wrappers.make_vector_env``).
        agent: an :class:`networks.ActorCritic` already on ``device``.
        device: the learner's device.
        recorder: where metrics go; None logs nothing.
        checkpoint_dir: where ``latest.pt`` and ``final.pt`` go; None writes none.
        checkpoint_metadata: plain data stored in every checkpoint (entry point, spaces).
        env_state: ``(get, set)`` functions for environment-side state (simulator snapshots, episode
            statistics) saved in checkpoints, or None; ``set`` returns True when the episodes continue
            exactly where they were.
        distributed: the :class:`ppo.distributed.DistributedContext` of a multi-process run, or None (a
            single process; so is a context with ``world_size == 1``). With more than one rank, gradients
            are averaged across ranks before the clip, the observation normalizer is updated with every
            rank's rollout, the envs and sampling of rank ``r`` are seeded with ``seed + 1000 * r``, and
            skip/early-stop/stop decisions are agreed across ranks; logged steps count all ranks' steps.

    Attributes:
        on_checkpoint: None, or a callable given the path of every checkpoint :meth:`save` writes (the
            CLI redraws the learning curve there, keeping plotting out of this module).
    """

    def __init__(self, config: PPOConfig, envs: VectorEnv, agent: nn.Module, device: torch.device,
                 recorder: RunRecorder | None = None, checkpoint_dir: Path | None = None,
                 checkpoint_metadata: dict[str, Any] | None = None,
                 env_state: tuple[Callable[[], Any], Callable[[Any], None]] | None = None,
                 distributed: DistributedContext | None = None) -> None:
        self.config, self.envs, self.agent, self.device = config, envs, agent, device
        # None for a single process: then no code path below makes a torch.distributed call.
        self.distributed = distributed if distributed is not None and distributed.enabled else None
        self.seed = self.distributed.rank_seed(config.seed) if self.distributed else config.seed
        self.step_scale = self.distributed.world_size if self.distributed else 1  # logged steps: all ranks'
        self.recorder, self.checkpoint_dir = recorder, checkpoint_dir
        self.checkpoint_metadata = checkpoint_metadata or {}
        self.env_state = env_state
        policy_parameters, value_parameters = agent.parameter_groups()
        value_lr = config.value_learning_rate or config.learning_rate
        if value_lr == config.learning_rate:
            parameter_groups = [(policy_parameters + value_parameters, config.learning_rate)]
        else:
            parameter_groups = [(policy_parameters, config.learning_rate), (value_parameters, value_lr)]
        # One flat tensor per learning rate holds the weights and one their gradients (the network's
        # parameters are views of them): the gradient clip and the Adam step each cost a few operations, not
        # a few per layer. On the CPU, update() steps this optimizer's state with NumpyAdam (same arithmetic).
        self.parameters = [flatten_parameters(parameters) for parameters, _ in parameter_groups]
        self.parameter_sizes = [[p.numel() for p in parameters] for parameters, _ in parameter_groups]
        self.base_learning_rates = [lr for _, lr in parameter_groups]
        self.optimizer = torch.optim.Adam([{"params": [flat], "lr": lr} for flat, lr in
                                           zip(self.parameters, self.base_learning_rates)], eps=1e-5, fused=True)

        observation_space = envs.single_observation_space
        action_space = envs.single_action_space
        self.observation_dtype = _torch_dtype(observation_space.dtype)
        self.observation_numpy_dtype = np.uint8 if self.observation_dtype == torch.uint8 else np.float32
        discrete = action_space.shape == ()
        self.buffer = RolloutBuffer(config.num_steps_collected, config.num_envs, observation_space.shape,
                                    self.observation_dtype, tuple(action_space.shape),
                                    torch.int64 if discrete else torch.float32, device)
        self.minibatch_generator = torch.Generator().manual_seed(self.seed)
        # A tensor, so that an annealed value reaches a compiled loss without recompiling it.
        self.clip_coeff = torch.tensor(config.clip_coeff, device=device)
        self.clip_coeff_value = config.clip_coeff  # the same, as a float, for the hand-written gradient
        self.reward_scaler = (RewardScaler(config.num_envs, config.gae_gamma, config.reward_clip, device)
                              if config.normalize_rewards else None)
        # With --compile, torch.compile traces the loss once (minibatches all have the same shape) and
        # generates fused kernels for it and for its backward pass; the optimizer step stays Adam's.
        self.minibatch_loss: Callable[[Minibatch], LossOutput] = (
            torch.compile(self._minibatch_loss, dynamic=False) if config.compile else self._minibatch_loss)
        # Envs that step on torch tensors (the Brax backend) take the actions where the agent made them and
        # return tensors on the device; the rollout stages their rewards and ends there too.
        self.tensor_env = bool(getattr(envs, "accepts_tensors", False))
        # The MLP on the CPU: its loss and gradient written out (ppo/mlp_gradient.py) and its rollouts (with
        # numpy envs), both in numpy: the same values with a fraction of the per-operation overhead. Other
        # networks, GPUs, --compile and --no-manual-gradient use torch and autograd.
        self.manual_gradient = None
        numpy_path = config.manual_gradient and not config.compile and unsupported_reason(agent) is None
        if numpy_path:
            self.manual_gradient = MLPLossGradient(agent, config.ent_loss_coeff, config.value_loss_coeff,
                                                   config.clip_value_loss, config.normalize_advantages)
        self.numpy_rollouts = numpy_path and not self.tensor_env
        # the numpy rollouts' observations, [num_steps + 1, num_envs, *obs_shape]: the last row starts the next
        self._observation_rows = (np.zeros((config.num_steps_collected + 1, config.num_envs,
                                            *self.buffer.observations.shape[2:]), self.observation_numpy_dtype)
                                  if self.numpy_rollouts else None)
        size = (config.num_steps_collected, config.num_envs)
        if self.tensor_env:
            self._staging = (torch.zeros(size, device=device), torch.zeros(size, dtype=torch.bool, device=device),
                             torch.zeros(size, dtype=torch.bool, device=device))
        else:
            self._staging = (np.zeros(size, np.float32), np.zeros(size, bool), np.zeros(size, bool))

        self.iteration = 0
        self.global_step = 0
        self.wall_time_offset = 0.0
        self.next_observations: torch.Tensor | None = None
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.recent_lengths: deque[int] = deque(maxlen=20)
        self.iteration_episodes: list[tuple[int, float, float, int]] = []
        self.timings = {"env": 0.0, "inference": 0.0, "update": 0.0}
        self.consecutive_faults = 0
        self.fault_reason = ""
        self.stop_requested = False
        self.on_checkpoint: Callable[[Path], None] | None = None
        self.resume_point: dict[str, Any] | None = None
        self.abandoned_rollout = False
        self.env_restored = False
        self._start_time = time.perf_counter()
        self._start_step = 0

    # ---------------------------------------------------------------------------------------------
    def seed_everything(self) -> None:
        """Seed Python, numpy and torch, then reset the envs with ``seed`` (env ``i`` gets ``seed + i``).

        ``seed`` is ``config.seed``, and ``config.seed + 1000 * rank`` on rank ``rank`` of a distributed run.
        """
        seed = self.seed
        seed_rngs(seed)
        self.envs.action_space.seed(seed)
        self.reset_envs(seed)

    def reset_envs(self, seed: int) -> None:
        """Start new episodes in every env (env ``i`` seeded with ``seed + i``); RNGs of torch are untouched."""
        observations, _ = self.envs.reset(seed=seed)
        self.next_observations = self._to_tensor(observations, copy=True)

    def _to_tensor(self, observations: np.ndarray | torch.Tensor, copy: bool = False) -> torch.Tensor:
        """Observations as a tensor on the learner's device; with ``copy``, never sharing memory with the
        env's array or tensor (which an env may overwrite at its next step)."""
        if not copy:
            return torch.as_tensor(observations, dtype=self.observation_dtype, device=self.device)
        if isinstance(observations, torch.Tensor):
            return observations.to(self.device, self.observation_dtype, copy=True)
        if self.device.type == "cpu":  # numpy's copy is cheaper than torch.tensor's
            return torch.from_numpy(np.array(observations, dtype=self.observation_numpy_dtype))
        return torch.tensor(observations, dtype=self.observation_dtype, device=self.device)

    def wall_time(self) -> float:
        """Seconds of training so far, across resumes."""
        return self.wall_time_offset + time.perf_counter() - self._start_time

    # ---------------------------------------------------------------------------------------------
    def collect_rollout(self) -> bool:
        """Fill the buffer with ``num_steps_collected`` steps of every env and compute advantages/returns.

        Returns False, leaving the rollout unfinished, when :attr:`stop_requested` was set during it (a
        single process only: distributed ranks finish the rollout and agree on stopping in :meth:`train`).
        Non-finite rewards or observations are zeroed and recorded in :attr:`fault_reason`.

        The envs return numpy arrays (gymnasium, envpool) or torch tensors (Brax through DLPack). Per step
        the loop does only what the next step needs (sample, step, bootstrap values of truncated episodes);
        rewards, terminations and truncations are staged in arrays of the env's own kind and go to the
        buffer once per rollout. Rewards are then scaled (:class:`ppo.reward_scaling.RewardScaler`) when
        ``normalize_rewards`` is set, and rewards of truncated (not terminated) episodes get
        ``gamma * V(final observation)`` added, since a time limit is not a terminal state (Pardo et al.
        2018, "Time Limits in Reinforcement Learning"); GAE then cuts the chain at every episode end.
        """
        config, buffer, agent, device = self.config, self.buffer, self.agent, self.device
        num_steps = config.num_steps_collected
        rewards, terminations, truncations = self._staging
        buffer.bootstrap_values.zero_()
        # The numpy policy keeps actions and values in its arrays and the observations go to rows of a numpy
        # array (one copy each, no tensors per step); the torch policy's outputs are gathered in lists. Both
        # go to the buffer in one copy per rollout.
        observation_rows = self._observation_rows
        observations_list, actions_list, log_probs_list, values_list = [], [], [], []
        with torch.inference_mode():
            if observation_rows is not None:
                policy = NumpyRolloutPolicy(agent, num_steps, config.num_envs)
                observation_rows[0] = self.next_observations.numpy()
            else:
                policy = RolloutPolicy(agent, num_steps, config.num_envs, device)
            for step in range(num_steps):
                if self.stop_requested and self.distributed is None:
                    return False
                started = time.perf_counter()
                if observation_rows is not None:
                    actions = policy.act(observation_rows[step], step)
                else:
                    out = policy(self.next_observations, step)
                    actions = out.action if self.tensor_env else out.action.cpu().numpy()
                    observations_list.append(self.next_observations)
                    actions_list.append(out.action)
                    log_probs_list.append(out.log_prob)
                    values_list.append(out.value)
                stepped = time.perf_counter()
                (next_observations, rewards[step], terminations[step], truncations[step],
                 infos) = self.envs.step(actions)
                self.timings["env"] += time.perf_counter() - stepped
                bootstrap = truncations[step] & ~terminations[step]
                if bootstrap.any():
                    self._bootstrap_values(policy, step, bootstrap, infos["final_obs"])
                self.global_step += config.num_envs
                self._record_episodes(infos)
                next_observations = self._finite_observations(next_observations)
                if observation_rows is not None:
                    observation_rows[step + 1] = next_observations  # a copy (an env may reuse its array)
                else:  # a copy: the list keeps it until the end of the rollout
                    self.next_observations = self._to_tensor(next_observations, copy=True)
                self.timings["inference"] += stepped - started
            if observation_rows is not None:
                self.next_observations = torch.from_numpy(observation_rows[num_steps].copy())
            next_values = policy.value(self.next_observations)
        targets = (buffer.observations, buffer.actions, buffer.log_probs, buffer.values)
        if observation_rows is not None:
            for target, array in zip(targets, (observation_rows[:num_steps], policy.actions,
                                               policy.rollout_log_probs(), policy.values)):
                target.copy_(torch.from_numpy(array))
        else:
            for target, items in zip(targets, (observations_list, actions_list, log_probs_list, values_list)):
                torch.stack(items, out=target)
        buffer.rewards.copy_(torch.as_tensor(rewards, device=device))
        buffer.terminations.copy_(torch.as_tensor(terminations, device=device))
        buffer.truncations.copy_(torch.as_tensor(truncations, device=device))
        if not torch.isfinite(buffer.rewards).all():
            self.fault_reason = "rewards"
            buffer.rewards.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        if self.reward_scaler is not None:
            scaler = self.reward_scaler
            returns = scaler.discounted_returns_of(buffer.rewards, buffer.dones.bool())
            scaler.update(returns if self.distributed is None else self.distributed.all_gather(returns.flatten()))
            buffer.rewards.copy_(scaler.scale(buffer.rewards))
        buffer.rewards.add_(buffer.bootstrap_values, alpha=config.gae_gamma)
        buffer.advantages, buffer.returns = compute_gae(buffer.rewards, buffer.values, buffer.dones,
                                                        next_values, config.gae_gamma, config.gae_lambda)
        return True

    def _bootstrap_values(self, policy: RolloutPolicy | NumpyRolloutPolicy, step: int,
                          bootstrap: np.ndarray | torch.Tensor, final_observations: np.ndarray | torch.Tensor) -> None:
        """Store ``V(final observation)`` of the envs truncated at ``step`` (``bootstrap`` ``[N]`` bool);
        ``final_observations`` is gymnasium's object array of per-env observations or an ``[N, ...]`` tensor."""
        if isinstance(final_observations, torch.Tensor):
            final_observations = final_observations[bootstrap]
        else:
            final_observations = np.stack(final_observations[bootstrap])
        final_observations = self._to_tensor(self._finite_observations(final_observations))
        with torch.inference_mode():
            values = policy.value(final_observations)
        self.buffer.bootstrap_values[step, torch.as_tensor(bootstrap, device=self.device)] = values

    def _finite_observations(self, observations: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Observations with non-finite entries zeroed (and the fault noted): the policy must never see
        NaN, or sampling fails; the iteration's update is then skipped."""
        if isinstance(observations, torch.Tensor):
            if observations.is_floating_point() and not torch.isfinite(observations).all():
                self.fault_reason = "observations"
                return torch.nan_to_num(observations, nan=0.0, posinf=0.0, neginf=0.0)
        elif observations.dtype.kind == "f" and not np.isfinite(observations).all():
            self.fault_reason = "observations"
            return np.nan_to_num(observations, nan=0.0, posinf=0.0, neginf=0.0)
        return observations

    def _record_episodes(self, infos: dict[str, Any]) -> None:
        mask = infos.get("_episode")
        if mask is None or not mask.any():
            return
        wall_time = self.wall_time()
        for index in np.flatnonzero(mask):
            episode_return = float(infos["episode"]["r"][index])
            length = int(infos["episode"]["l"][index])
            self.recent_returns.append(episode_return)
            self.recent_lengths.append(length)
            self.iteration_episodes.append((self.global_step * self.step_scale, wall_time, episode_return,
                                            length))

    # ---------------------------------------------------------------------------------------------
    def _check_rollout(self) -> str | None:
        if self.fault_reason:
            return self.fault_reason
        if not torch.isfinite(self.buffer.values).all():
            return "value estimates"
        return None

    def update(self) -> dict[str, float]:
        """``num_epochs`` passes of minibatch gradient steps on the buffer; returns mean statistics.

        A minibatch whose loss or gradient norm is not finite is skipped (no optimizer step).

        Distributed: gradients are averaged across ranks before the gradient-norm clip, so the norm, the
        skip decision and the step are identical on every rank; the target-KL stop uses the KL averaged
        across ranks, so every rank runs the same number of epochs (and of collective calls).
        """
        config = self.config
        # On the CPU the gradient clip, the finite check and the statistics run on numpy views and floats:
        # a torch operation on these small tensors costs several microseconds of overhead.
        gradient_arrays = [flat.grad.numpy() for flat in self.parameters] if self.device.type == "cpu" else None
        # and so does the Adam step of small networks (the optimizer's own state, updated in place): a Hopper
        # minibatch step took 307 us with it against 410 with optimizer.step() (benchmarks/adam_step.py).
        numpy_adam = (NumpyAdam(self.optimizer) if gradient_arrays is not None and all(
            flat.dtype == torch.float32 and flat.numel() <= NUMPY_ADAM_MAX_SIZE for flat in self.parameters)
            else None)
        totals = np.zeros(6) if gradient_arrays is not None else torch.zeros(6, device=self.device)
        count, skipped = 0, 0
        inputs = None
        if self.manual_gradient is not None:
            # The normalizer's statistics are fixed during the update: normalize the rollout once.
            with torch.no_grad():
                inputs = self.agent.preprocess(self.buffer.observations.flatten(0, 1))
        for _epoch in range(config.num_epochs):
            epoch_kl, epoch_batches = 0.0, 0
            for batch in self.buffer.minibatches(config.num_mini_batches, self.minibatch_generator, inputs,
                                                 as_numpy=self.manual_gradient is not None):
                if self.manual_gradient is not None:  # writes the gradient itself
                    losses = self.manual_gradient(batch.observations, batch.actions, batch.log_probs,
                                                  batch.values, batch.advantages, batch.returns,
                                                  self.clip_coeff_value)
                else:
                    losses = self.minibatch_loss(batch)
                    for flat in self.parameters:
                        flat.grad.zero_()
                    losses.loss.backward()
                if self.distributed is not None:
                    loss_finite, minibatch_kl = self._average_gradients(losses.loss, losses.approx_kl)
                    loss = 0.0 if loss_finite else math.nan
                else:
                    minibatch_kl, loss = losses.approx_kl, losses.loss.detach()
                # The sum is finite exactly when both are (on a GPU: one wait for the value).
                if gradient_arrays is not None:
                    grad_norm = clip_gradient_norm_arrays(gradient_arrays, config.max_gradient)
                    finite = math.isfinite(float(loss) + grad_norm)
                else:
                    grad_norm = clip_gradient_norm(self.parameters, config.max_gradient)
                    finite = bool(torch.isfinite(loss + grad_norm))
                if not finite:
                    skipped += 1
                    continue
                if numpy_adam is not None:
                    numpy_adam.step()
                else:
                    self.optimizer.step()
                statistics = (losses.policy_loss, losses.value_loss, losses.entropy, losses.approx_kl,
                              losses.clipfrac)
                if gradient_arrays is not None:
                    totals += [*(float(value) for value in statistics), grad_norm]
                else:
                    totals += torch.stack([*(value.detach() for value in statistics), grad_norm.detach()])
                count += 1
                if config.target_kl is not None:
                    epoch_kl += float(minibatch_kl)
                epoch_batches += 1
            if config.target_kl is not None and epoch_batches and epoch_kl / epoch_batches > config.target_kl:
                break
        means = (totals / max(count, 1)).tolist()
        if skipped:
            self.fault_reason = f"loss or gradient norm in {skipped} minibatch(es)"
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")
        stats = dict(zip(names, means)) if count else {name: float("nan") for name in names}
        stats["skipped_minibatches"] = skipped
        return stats

    def _minibatch_loss(self, batch: Minibatch) -> LossOutput:
        """The PPO loss of one minibatch under the current policy (:func:`ppo.losses.ppo_loss`)."""
        config = self.config
        out = self.agent.get_action_and_value(batch.observations, batch.actions)
        return ppo_loss(out.log_prob, batch.log_probs, batch.advantages, out.value, batch.values, batch.returns,
                        out.entropy, self.clip_coeff, config.ent_loss_coeff, config.value_loss_coeff,
                        config.clip_value_loss, config.normalize_advantages)

    def _average_gradients(self, loss: torch.Tensor, approx_kl: torch.Tensor) -> tuple[bool, float]:
        """Distributed: average the gradients across ranks (one all-reduce, which also carries the number
        of ranks whose loss is not finite and the sum of the ranks' approx KL).

        Returns:
            ``(every rank's loss is finite, approx KL averaged across ranks)``, the same on every rank.
        """
        extras = torch.stack([(~torch.isfinite(loss.detach())).to(torch.float32),
                              approx_kl.detach().to(torch.float32)])
        reduced = self.distributed.average_gradients(self.parameters, extras)
        return bool(reduced[0] == 0), float(reduced[1]) / self.distributed.world_size

    # ---------------------------------------------------------------------------------------------
    def train(self, progress: Any = None) -> None:
        """Run iterations until ``total_timesteps`` (or until :attr:`stop_requested` is set).

        Distributed: the ranks agree at every iteration boundary whether to stop (a stop requested on any
        rank stops all of them there) and, before the update, whether to skip it (a fault on any rank skips
        it on all), so every rank runs the same iterations and the same collective calls.

        Raises:
            NumericalError: ``MAX_CONSECUTIVE_FAULTS`` iterations in a row produced non-finite values;
                ``latest.pt`` keeps the last good state.
        """
        config = self.config
        if self.next_observations is None:
            self.seed_everything()
        self._start_time = time.perf_counter()
        self._start_step = self.global_step
        num_iterations = config.num_iterations
        while self.iteration < num_iterations and not self._stop_agreed():
            iteration = self.iteration + 1
            fraction = 1.0 - (iteration - 1.0) / num_iterations
            if config.anneal_lr:
                for group, base in zip(self.optimizer.param_groups, self.base_learning_rates):
                    group["lr"] = fraction * base
            self.clip_coeff_value = fraction * config.clip_coeff if config.anneal_clip else config.clip_coeff
            self.clip_coeff.fill_(self.clip_coeff_value)
            self.fault_reason = ""
            self.resume_point = self._capture_resume_point()
            if not self.collect_rollout():
                self.abandoned_rollout = True
                break  # interrupted: checkpoints keep the resume point taken before this rollout
            fault = self._check_rollout()
            if self.distributed is not None:
                fault = self._agree_on_fault(fault)
            started = time.perf_counter()
            if fault is None:
                stats = self.update()
                fault = self.fault_reason or None
                if self.distributed is not None:
                    self._update_normalizer_from_all_ranks()
                else:
                    self.agent.update_normalizer(self.buffer.observations.flatten(0, 1))
            else:
                stats = {}
            self.timings["update"] += time.perf_counter() - started
            self.iteration = iteration
            if fault:
                self.consecutive_faults += 1
                if self.consecutive_faults >= MAX_CONSECUTIVE_FAULTS:
                    raise NumericalError(f"non-finite {fault} in {self.consecutive_faults} consecutive "
                                         f"iterations (last at step {self.global_step}); stopped, "
                                         "checkpoints/latest.pt holds the last good state")
            else:
                self.consecutive_faults = 0
            self._log_iteration(stats)
            if progress is not None:
                progress.update(config.batch_size * self.step_scale)
                if self.recent_returns:
                    progress.set_postfix(episodic_return=f"{np.mean(self.recent_returns):.1f}", refresh=False)
            if (config.checkpoint_interval and iteration % config.checkpoint_interval == 0
                    and iteration < num_iterations and not fault):
                self.save("latest.pt")

    def _stop_agreed(self) -> bool:
        """:attr:`stop_requested`; distributed, True on every rank as soon as it is set on one of them."""
        if self.distributed is not None and self.distributed.any(self.stop_requested):
            self.stop_requested = True
        return self.stop_requested

    def _agree_on_fault(self, fault: str | None) -> str | None:
        """Distributed: the rollout's fault, or one naming another rank when only another rank had one."""
        if self.distributed.any(fault is not None) and fault is None:
            return "values on another rank"
        return fault

    def _update_normalizer_from_all_ranks(self) -> None:
        """Distributed: merge every rank's rollout observations (in rank order) into the observation
        statistics, so they stay identical on every rank."""
        if getattr(self.agent, "normalizer", None) is None:
            return  # nothing to gather (Atari frames: tens of MB per rollout)
        observations = self.distributed.all_gather(self.buffer.observations.flatten(0, 1))
        self.agent.update_normalizer(observations)

    def _log_iteration(self, stats: dict[str, float]) -> None:
        episodes, self.iteration_episodes = self.iteration_episodes, []
        returns = [episode[2] for episode in episodes]
        lengths = [episode[3] for episode in episodes]
        elapsed = time.perf_counter() - self._start_time
        metrics = {
            "iteration": self.iteration,
            "global_step": self.global_step * self.step_scale,
            "wall_time_s": self.wall_time(),
            "sps": (self.global_step - self._start_step) * self.step_scale / max(elapsed, 1e-9),
            "episodic_return_mean": float(np.mean(returns)) if returns else float("nan"),
            "episodic_length_mean": float(np.mean(lengths)) if lengths else float("nan"),
            "explained_variance": explained_variance(self.buffer.values.flatten(), self.buffer.returns.flatten()),
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            **{key: stats.get(key, float("nan")) for key in ("policy_loss", "value_loss", "entropy",
                                                              "approx_kl", "clipfrac")},
        }
        self.last_metrics = metrics
        if self.recorder is not None:
            self.recorder.log_episodes(episodes)
            self.recorder.log_iteration(metrics)

    # ---------------------------------------------------------------------------------------------
    def _capture_resume_point(self) -> dict[str, Any]:
        """The state between two iterations that the model and optimizer do not hold: counters, RNG
        states, environment state and the observations the next rollout starts from."""
        numpy_state = np.random.get_state()
        return {
            "iteration": self.iteration,
            "global_step": self.global_step,
            "wall_time_s": self.wall_time(),
            "env_state": self.env_state[0]() if self.env_state else None,
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler is not None else None,
            "next_observations": self.next_observations.clone(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
                "python": _python_rng_state(),
                "minibatch": self.minibatch_generator.get_state(),
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain data.

        Model and optimizer are taken as they are; counters, RNG and environment states come from the
        last iteration boundary, so a rollout abandoned by an interrupt is repeated on resume exactly as
        it would have run.
        """
        return {
            **self.checkpoint_metadata,
            "config": dataclasses.asdict(self.config),
            "model": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.resume_point,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (model, optimizer, counters, statistics, RNG states).

        The envs are reset (seeded with ``seed + iteration``) and then, where the checkpoint holds their
        simulator states, put back exactly where they were (:attr:`env_restored`); otherwise new
        episodes start.

        Distributed: every rank loads the same checkpoint (rank 0's state). Ranks other than 0 then reseed
        their generators with ``seed + 1000 * rank + iteration``, since the saved RNG states are rank 0's.
        Which env state is restored is up to the ``env_state`` setter (the CLI restores only the reward
        scaler's statistics in distributed runs, so every rank starts new episodes).
        """
        self.agent.load_state_dict(state["model"])
        self.optimizer.load_state_dict(flat_optimizer_state(state["optimizer"], self.parameter_sizes))
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        self.wall_time_offset = float(state["wall_time_s"])
        self.reset_envs(self.seed + self.iteration)
        self.env_restored = bool(self.env_state and self.env_state[1](state.get("env_state")))
        if self.env_restored:
            self.next_observations = state["next_observations"].to(self.device)
        if self.reward_scaler is not None and state.get("reward_scaler") is not None:
            # Running returns continue only with their episodes.
            self.reward_scaler.load_state_dict(state["reward_scaler"], restore_returns=self.env_restored)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        numpy_state = rng["numpy"]
        np.random.set_state((numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
        random.setstate(_to_tuples(rng["python"]))
        self.minibatch_generator.set_state(rng["minibatch"])
        if self.distributed is not None and not self.distributed.is_main:
            seed_rngs(self.seed + self.iteration)
            self.minibatch_generator.manual_seed(self.seed + self.iteration)

    def save(self, name: str) -> Path | None:
        """Write ``checkpoint_dir/name`` atomically; returns its path (None without a checkpoint_dir)."""
        if self.checkpoint_dir is None:
            return None
        path = self.checkpoint_dir / name
        if not self.abandoned_rollout:
            self.resume_point = self._capture_resume_point()
        save_checkpoint(path, self.state_dict())
        if self.on_checkpoint is not None:
            self.on_checkpoint(path)
        return path


def seed_rngs(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (call before building the network)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _to_tuples(state: list) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss


