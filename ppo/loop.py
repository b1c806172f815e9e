"""The PPO run loop: anneal -> collect a rollout -> GAE -> update -> log -> checkpoint, iteration after iteration."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn

from common.errors import NumericalError, write_failure
from ppo.checkpoint import load_rng_states, rng_states, save_checkpoint, seed_rngs
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.gae import compute_gae
from ppo.learners import Learner, make_learner
from ppo.losses import explained_variance
from ppo.recorder import RunRecorder
from ppo.rollout import RolloutCollector

# Consecutive iterations with a non-finite fault after which the run stops with NumericalError.
MAX_CONSECUTIVE_FAULTS = 3


class Trainer:
    """Runs PPO (Schulman et al. 2017, Algorithm 1) on a vector environment.

    One iteration (:meth:`train`): anneal the learning rate (and clip coefficient) -> collect
    ``num_steps_collected`` steps of every env (:class:`ppo.rollout.RolloutCollector`) -> GAE
    (:func:`ppo.gae.compute_gae`) -> ``num_epochs`` of minibatch updates (:class:`ppo.learners.Learner`) ->
    observation statistics updated with the rollout -> log -> ``latest.pt`` when due.

    Args: ``config``, the SAME_STEP-autoreset vector ``envs`` with episode statistics, the ``agent`` on
    ``device``; the ``learner`` (None: the one ``config.learner`` picks); the ``recorder`` of metrics and the
    ``checkpoint_dir`` (None: none); plain ``checkpoint_metadata``; ``env_state``, the ``(get, set)`` of
    environment-side state (see the collector); the ``distributed`` context of a multi-process run (gradients
    averaged, normalizer fed every rank's rollout, rank ``r`` seeded ``seed + 1000 r``, stop and skip decisions
    agreed, logged steps all ranks').

    Attributes: ``stop_requested`` (set by a signal handler: stop at the next step, abandoning the rollout under
    way), ``on_checkpoint`` (called with each checkpoint's path), ``last_checkpoint`` (``(path, all ranks'
    step)`` of the newest one written or resumed from), ``timings`` (seconds of ``update``, ``logging`` and
    ``checkpoints``; ``env`` and ``inference`` are in ``collector.timings``).
    """

    def __init__(self, config: PPOConfig, envs: VectorEnv, agent: nn.Module, device: torch.device,
                 learner: Learner | None = None, recorder: RunRecorder | None = None,
                 checkpoint_dir: Path | None = None, checkpoint_metadata: dict[str, Any] | None = None,
                 env_state: tuple[Callable[[], Any], Callable[[Any], bool]] | None = None,
                 distributed: DistributedContext | None = None) -> None:
        self.config, self.envs, self.agent, self.device = config, envs, agent, device
        self.distributed = distributed if distributed is not None and distributed.enabled else None
        self.seed = self.distributed.rank_seed(config.seed) if self.distributed else config.seed
        self.step_scale = self.distributed.world_size if self.distributed else 1  # logged steps: all ranks'
        self.learner = learner or make_learner(config, agent, device, self.distributed, self.seed)[0]
        self.collector = RolloutCollector(envs, config, device, self.distributed, env_state, clock=self.wall_time)
        self.buffer = self.collector.buffer
        self.recorder, self.checkpoint_dir = recorder, checkpoint_dir
        self.checkpoint_metadata = checkpoint_metadata or {}
        self.iteration = 0
        self.wall_time_offset = 0.0
        self.timings = {"update": 0.0, "logging": 0.0, "checkpoints": 0.0}
        self.consecutive_faults = 0
        self.stop_requested = False
        self.on_checkpoint: Callable[[Path], None] | None = None
        self.last_checkpoint: tuple[Path, int] | None = None
        self.resume_point: dict[str, Any] | None = None
        self.abandoned_rollout = False
        self.env_restored = False
        self.last_metrics: dict[str, Any] = {}
        self._start_time = time.perf_counter()
        self._start_step = 0

    @property
    def global_step(self) -> int:
        """Env steps taken by this process (all ranks together: times ``world_size``)."""
        return self.collector.global_step

    def wall_time(self) -> float:
        """Seconds of training so far, across resumes."""
        return self.wall_time_offset + time.perf_counter() - self._start_time

    def seed_everything(self) -> None:
        """Seed Python, numpy and torch with ``seed``, then reset the envs (env ``i`` gets ``seed + i``)."""
        seed_rngs(self.seed)
        self.envs.action_space.seed(self.seed)
        self.collector.reset(self.seed)

    def train(self, progress: Any = None) -> None:
        """Run iterations until ``total_timesteps`` (or until :attr:`stop_requested` is set).

        Distributed: the ranks agree at every iteration boundary whether to stop and, before the update,
        whether to skip it, so every rank runs the same iterations and the same collective calls.

        Raises:
            NumericalError: ``MAX_CONSECUTIVE_FAULTS`` iterations in a row produced non-finite values;
                ``latest.pt`` keeps the last good state.
        """
        config, buffer = self.config, self.buffer
        if self.collector.next_observations is None:
            self.seed_everything()
        self._start_time, self._start_step = time.perf_counter(), self.global_step
        num_iterations = config.num_iterations
        while self.iteration < num_iterations and not self._stop_agreed():
            iteration = self.iteration + 1
            fraction = 1.0 - (iteration - 1.0) / num_iterations
            if config.anneal_lr:
                self.learner.anneal(fraction)
            clip_coeff = fraction * config.clip_coeff if config.anneal_clip else config.clip_coeff
            self.resume_point = self._capture_resume_point()

            if not self.collect_rollout():
                self.abandoned_rollout = True
                break  # interrupted: checkpoints keep the resume point taken before this rollout

            started = time.perf_counter()
            fault = self._agree_on_fault(self.collector.fault_reason or None)
            stats: dict[str, float] = {}
            if fault is None:
                stats = self.learner.update(buffer, clip_coeff)
                if stats["skipped_minibatches"]:
                    fault = f"loss or gradient norm in {stats['skipped_minibatches']} minibatch(es)"
                self._update_normalizer()
            self.timings["update"] += time.perf_counter() - started
            self.iteration = iteration
            self._count_fault(fault)

            started = time.perf_counter()
            self._log_iteration(stats, progress)
            self.timings["logging"] += time.perf_counter() - started
            if (config.checkpoint_interval and iteration % config.checkpoint_interval == 0
                    and iteration < num_iterations and not fault):
                self.save("latest.pt")

    def collect_rollout(self) -> bool:
        """Fill the buffer with a rollout of the current policy, then its advantages and returns by GAE.
        Returns False when :attr:`stop_requested` abandoned the rollout (a single process only: distributed
        ranks finish it and agree on stopping at the iteration boundary)."""
        buffer, config = self.buffer, self.config
        policy = self.learner.rollout_policy(buffer, self.collector.tensor_env)
        next_values = self.collector.collect(policy, lambda: self.stop_requested and self.distributed is None)
        if next_values is None:
            return False
        buffer.advantages, buffer.returns = compute_gae(buffer.rewards, buffer.values, buffer.dones, next_values,
                                                        config.gae_gamma, config.gae_lambda)
        return True

    def _count_fault(self, fault: str | None) -> None:
        self.consecutive_faults = self.consecutive_faults + 1 if fault else 0
        if self.consecutive_faults >= MAX_CONSECUTIVE_FAULTS:
            raise NumericalError(f"non-finite {fault} in {self.consecutive_faults} consecutive iterations (last "
                                 f"at step {self.global_step}); stopped, checkpoints/latest.pt holds the last "
                                 "good state")

    def _stop_agreed(self) -> bool:
        """:attr:`stop_requested`; distributed, True on every rank as soon as it is set on one of them."""
        if self.distributed is not None and self.distributed.any(self.stop_requested):
            self.stop_requested = True
        return self.stop_requested

    def _agree_on_fault(self, fault: str | None) -> str | None:
        """Distributed: the rollout's fault, or one naming another rank when only another rank had one."""
        if self.distributed is not None and self.distributed.any(fault is not None) and fault is None:
            return "values on another rank"
        return fault

    def _update_normalizer(self) -> None:
        """Merge the rollout's observations into the observation statistics; distributed, every rank's (in
        rank order), so the statistics stay identical on every rank."""
        if getattr(self.agent, "normalizer", None) is None:
            return  # nothing to gather (Atari frames: tens of MB per rollout)
        observations = self.buffer.observations.flatten(0, 1)
        if self.distributed is not None:
            observations = self.distributed.all_gather(observations)
        self.agent.update_normalizer(observations)

    def _log_iteration(self, stats: dict[str, float], progress: Any) -> None:
        episodes = self.collector.take_episodes()
        returns = [episode[2] for episode in episodes]
        lengths = [episode[3] for episode in episodes]
        elapsed = time.perf_counter() - self._start_time
        self.last_metrics = {
            "iteration": self.iteration,
            "global_step": self.global_step * self.step_scale,
            "wall_time_s": self.wall_time(),
            "sps": (self.global_step - self._start_step) * self.step_scale / max(elapsed, 1e-9),
            "episodic_return_mean": float(np.mean(returns)) if returns else float("nan"),
            "episodic_length_mean": float(np.mean(lengths)) if lengths else float("nan"),
            "explained_variance": explained_variance(self.buffer.values.flatten(), self.buffer.returns.flatten()),
            "learning_rate": self.learner.learning_rate,
            **{key: stats.get(key, float("nan")) for key in ("policy_loss", "value_loss", "entropy",
                                                              "approx_kl", "clipfrac")},
        }
        if self.recorder is not None:
            self.recorder.log_episodes(episodes)
            self.recorder.log_iteration(self.last_metrics)
        if progress is not None:
            progress.update(self.config.batch_size * self.step_scale)
            if self.collector.recent_returns:
                progress.set_postfix(episodic_return=f"{np.mean(self.collector.recent_returns):.1f}", refresh=False)

    # Checkpoints ---------------------------------------------------------------------------------
    def _capture_resume_point(self) -> dict[str, Any]:
        """The state between two iterations that the model and optimizer do not hold: counters, RNG
        states, environment state and the observations the next rollout starts from."""
        return {"iteration": self.iteration, "global_step": self.global_step, "wall_time_s": self.wall_time(),
                **self.collector.state_dict(),
                "rng": {**rng_states(self.device), "minibatch": self.learner.minibatch_generator.get_state()}}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain data. Model and optimizer are taken as they are;
        the rest comes from the last iteration boundary, so a rollout abandoned by an interrupt is repeated
        on resume exactly as it would have run."""
        return {**self.checkpoint_metadata, "config": dataclasses.asdict(self.config),
                "model": self.agent.state_dict(), "optimizer": self.learner.state_dict()["optimizer"],
                **self.resume_point}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`. The envs are reset (seeded with ``seed + iteration``) and then put
        back exactly where they were when the checkpoint holds their state (:attr:`env_restored`).

        Distributed: every rank loads rank 0's checkpoint; ranks other than 0 then reseed their generators
        with ``seed + 1000 * rank + iteration``.
        """
        self.agent.load_state_dict(state["model"])
        self.learner.load_state_dict({"optimizer": state["optimizer"], "minibatch_rng": state["rng"]["minibatch"]})
        self.iteration = int(state["iteration"])
        self.collector.global_step = int(state["global_step"])
        self.wall_time_offset = float(state["wall_time_s"])
        self.env_restored = self.collector.load_state_dict(state, self.seed + self.iteration)
        load_rng_states(state["rng"], self.device)
        if self.distributed is not None and not self.distributed.is_main:
            seed_rngs(self.seed + self.iteration)
            self.learner.minibatch_generator.manual_seed(self.seed + self.iteration)

    def save(self, name: str) -> Path | None:
        """Write ``checkpoint_dir/name`` atomically; returns its path (None without a checkpoint_dir).

        Raises:
            WriteFailure: the file cannot be written (disk full, ...); a previous file of that name is intact.
        """
        if self.checkpoint_dir is None:
            return None
        started = time.perf_counter()
        path = self.checkpoint_dir / name
        if not self.abandoned_rollout:
            self.resume_point = self._capture_resume_point()
        if self.recorder is not None:
            self.recorder.sync()  # the logs on the disk first: a checkpoint is never ahead of its rows
        try:
            save_checkpoint(path, self.state_dict())
        except OSError as error:
            raise write_failure(path, error) from error
        self.last_checkpoint = (path, int(self.resume_point["global_step"]) * self.step_scale)
        if self.on_checkpoint is not None:
            self.on_checkpoint(path)
        self.timings["checkpoints"] += time.perf_counter() - started
        return path
