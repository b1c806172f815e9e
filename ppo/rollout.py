"""Rollout collection: vector envs -> :class:`ppo.buffer.RolloutBuffer`, with truncation bootstrap, reward
scaling, episode statistics and the non-finite guard; and the reference (torch) rollout policy."""

from __future__ import annotations

import time
import warnings
from collections import deque
from typing import Any, Callable

import numpy as np
import torch
from gymnasium.vector import VectorEnv

import networks
from common.errors import EnvironmentProblem, PPOError
from ppo.buffer import RolloutBuffer, observation_dtype, to_observation_tensor
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.learners.base import RolloutPolicy
from ppo.reward_scaling import RewardScaler

# An exception in an async env's worker is raised again in this process, where it becomes one line naming the
# environment (RolloutCollector); gymnasium first warns with the worker's traceback, which says it again at length.
warnings.filterwarnings("ignore", message=r".*ERROR: (Received the following error from Worker|Traceback|Raising "
                        r"the last exception back)", category=UserWarning)


class TorchRolloutPolicy:
    """The :class:`ppo.learners.base.RolloutPolicy` of any :class:`networks.ActorCritic` on any device.

    Sampling goes through :class:`networks.RolloutPolicy` (the rollout's noise drawn up front, actor and critic
    fused); the rollout's tensors are gathered in lists and stacked into the buffer once, at :meth:`finish`.

    Args:
        agent: the actor-critic; its weights must not change during the rollout.
        num_steps, num_envs: the rollout's size ``T`` and ``N``.
        device: the agent's device.
        observation_dtype: the buffer's observation dtype (uint8 frames stay uint8).
        tensor_actions: hand actions to the envs as tensors on ``device`` (Brax) instead of numpy arrays.
    """

    def __init__(self, agent: networks.ActorCritic, num_steps: int, num_envs: int, device: torch.device,
                 observation_dtype: torch.dtype, tensor_actions: bool = False) -> None:
        self.sampler = networks.RolloutPolicy(agent, num_steps, num_envs, device)
        self.device, self.dtype, self.tensor_actions = device, observation_dtype, tensor_actions
        self.observations: list[torch.Tensor] = []
        self.actions: list[torch.Tensor] = []
        self.log_probs: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def start(self, observations: torch.Tensor) -> None:
        self.observations = [observations]

    def act(self, step: int) -> np.ndarray | torch.Tensor:
        out = self.sampler(self.observations[step], step)
        self.actions.append(out.action)
        self.log_probs.append(out.log_prob)
        self.values.append(out.value)
        return out.action if self.tensor_actions else out.action.cpu().numpy()

    def observe(self, step: int, observations: np.ndarray | torch.Tensor) -> None:
        self.observations.append(to_observation_tensor(observations, self.dtype, self.device, copy=True))

    def value(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.sampler.value(to_observation_tensor(observations, self.dtype, self.device))

    def finish(self, buffer: RolloutBuffer) -> tuple[torch.Tensor, torch.Tensor]:
        for target, items in zip((buffer.observations, buffer.actions, buffer.log_probs, buffer.values),
                                 (self.observations[:-1], self.actions, self.log_probs, self.values)):
            torch.stack(items, out=target)
        last = self.observations[-1]
        return last, self.sampler.value(last)


class RolloutCollector:
    """Fills a :class:`RolloutBuffer` with ``num_steps_collected`` steps of every env.

    The envs are SAME_STEP-autoreset vector envs with episode statistics (``wrappers.make_vector_env``); they
    return numpy arrays (gymnasium, envpool) or tensors on the device (Brax). Per step the loop does only
    what the next step needs (sample, step, bootstrap values of truncated episodes); rewards, terminations
    and truncations are staged in arrays of the env's own kind and reach the buffer once per rollout.

    Args:
        envs: the vector env.
        config: the run's hyperparameters.
        device: the buffer's (the learner's) device.
        distributed: a multi-process run's context (reward statistics are merged across ranks), or None.
        env_state: ``(get, set)`` for environment-side state in checkpoints (simulator snapshots, episode
            statistics), or None; ``set`` returns True when the episodes continue exactly where they were.
        clock: seconds of training so far, stamped on each finished episode.

    Attributes:
        buffer: the :class:`RolloutBuffer` ``[T, N, ...]``.
        global_step: env steps taken by this process.
        recent_returns, recent_lengths: the last 20 finished episodes.
        episodes: ``(global step of all ranks, wall time s, return, length)`` of the episodes that finished
            since :meth:`take_episodes` was last called.
        fault_reason: what was non-finite in the last rollout ("" when nothing was).
        timings: seconds spent in ``env.step`` ("env") and in sampling ("inference").
    """

    def __init__(self, envs: VectorEnv, config: PPOConfig, device: torch.device,
                 distributed: DistributedContext | None = None,
                 env_state: tuple[Callable[[], Any], Callable[[Any], bool]] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.envs, self.config, self.device, self.env_state, self.clock = envs, config, device, env_state, clock
        self.distributed = distributed if distributed is not None and distributed.enabled else None
        self.step_scale = self.distributed.world_size if self.distributed else 1
        observation_space, action_space = envs.single_observation_space, envs.single_action_space
        self.observation_dtype = observation_dtype(observation_space.dtype)
        discrete = action_space.shape == ()
        self.buffer = RolloutBuffer(config.num_steps_collected, config.num_envs, observation_space.shape,
                                    self.observation_dtype, tuple(action_space.shape),
                                    torch.int64 if discrete else torch.float32, device)
        self.tensor_env = bool(getattr(envs, "accepts_tensors", False))
        size = (config.num_steps_collected, config.num_envs)
        if self.tensor_env:
            self._staging = (torch.zeros(size, device=device), torch.zeros(size, dtype=torch.bool, device=device),
                             torch.zeros(size, dtype=torch.bool, device=device))
        else:
            self._staging = (np.zeros(size, np.float32), np.zeros(size, bool), np.zeros(size, bool))
        self.reward_scaler = (RewardScaler(config.num_envs, config.gae_gamma, config.reward_clip, device)
                              if config.normalize_rewards else None)
        self.next_observations: torch.Tensor | None = None
        self.global_step = 0
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.recent_lengths: deque[int] = deque(maxlen=20)
        self.episodes: list[tuple[int, float, float, int]] = []
        self.fault_reason = ""
        self.timings = {"env": 0.0, "inference": 0.0}

    def reset(self, seed: int) -> None:
        """Start new episodes in every env (env ``i`` seeded with ``seed + i``).

        Raises:
            EnvironmentProblem: the environment raised in ``reset()``.
        """
        try:
            observations, _ = self.envs.reset(seed=seed)
        except Exception as error:  # noqa: BLE001 - any exception of third-party env code
            raise self._env_failure("reset()", error) from error
        self.next_observations = to_observation_tensor(observations, self.observation_dtype, self.device, copy=True)

    def collect(self, policy: RolloutPolicy, should_stop: Callable[[], bool] = lambda: False
                ) -> torch.Tensor | None:
        """Run ``policy`` for one rollout and fill :attr:`buffer`; returns ``V(s_T)`` ``[N]`` of the
        observations after the last step, or None when ``should_stop()`` became true (the rollout is then
        abandoned).

        At the end, rewards are scaled (:class:`ppo.reward_scaling.RewardScaler`) when ``normalize_rewards``
        is set, and rewards of truncated (not terminated) episodes get ``gamma * V(final observation)`` added,
        since a time limit is not a terminal state (Pardo et al. 2018, "Time Limits in Reinforcement
        Learning"); GAE then cuts the chain at every episode end. Non-finite rewards or observations are
        zeroed and named in :attr:`fault_reason`, as are non-finite value estimates.

        Raises:
            EnvironmentProblem: the environment raised in ``step()`` (naming the environment and the exception).
        """
        config, buffer = self.config, self.buffer
        rewards, terminations, truncations = self._staging
        buffer.bootstrap_values.zero_()
        self.fault_reason = ""
        with torch.inference_mode():
            policy.start(self.next_observations)
            for step in range(config.num_steps_collected):
                if should_stop():
                    return None
                started = time.perf_counter()
                actions = policy.act(step)
                stepped = time.perf_counter()
                try:
                    (next_observations, rewards[step], terminations[step], truncations[step],
                     infos) = self.envs.step(actions)
                except Exception as error:  # noqa: BLE001 - any exception of third-party env code
                    raise self._env_failure("step()", error) from error
                self.timings["env"] += time.perf_counter() - stepped
                self.timings["inference"] += stepped - started
                bootstrap = truncations[step] & ~terminations[step]
                if bootstrap.any():
                    self._bootstrap_values(policy, step, bootstrap, infos["final_obs"])
                self.global_step += config.num_envs
                self._record_episodes(infos)
                policy.observe(step + 1, self._finite(next_observations))
            self.next_observations, next_values = policy.finish(buffer)
        buffer.rewards.copy_(torch.as_tensor(rewards, device=self.device))
        buffer.terminations.copy_(torch.as_tensor(terminations, device=self.device))
        buffer.truncations.copy_(torch.as_tensor(truncations, device=self.device))
        if not torch.isfinite(buffer.rewards).all():
            self.fault_reason = "rewards"
            buffer.rewards.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        if self.reward_scaler is not None:
            scaler = self.reward_scaler
            returns = scaler.discounted_returns_of(buffer.rewards, buffer.dones.bool())
            scaler.update(returns if self.distributed is None else self.distributed.all_gather(returns.flatten()))
            buffer.rewards.copy_(scaler.scale(buffer.rewards))
        buffer.rewards.add_(buffer.bootstrap_values, alpha=config.gae_gamma)
        if not self.fault_reason and not torch.isfinite(buffer.values).all():
            self.fault_reason = "value estimates"
        return next_values

    def _env_failure(self, call: str, error: BaseException) -> PPOError:
        """The one-line error for an exception the environment raised in ``call``."""
        if isinstance(error, PPOError):
            return error
        detail = str(error).strip().splitlines()
        return EnvironmentProblem(f"environment {self.config.environment_id} raised {type(error).__name__} in "
                                  f"{call}{': ' + detail[0][:300] if detail else ''} (after {self.global_step} "
                                  "steps)")

    def _bootstrap_values(self, policy: RolloutPolicy, step: int, bootstrap: np.ndarray | torch.Tensor,
                          final_observations: np.ndarray | torch.Tensor) -> None:
        """Store ``V(final observation)`` of the envs truncated at ``step`` (``bootstrap`` ``[N]`` bool);
        ``final_observations`` is gymnasium's object array of per-env observations or an ``[N, ...]`` tensor."""
        if isinstance(final_observations, torch.Tensor):
            final_observations = final_observations[bootstrap]
        else:
            final_observations = np.stack(final_observations[bootstrap])
        values = policy.value(self._finite(final_observations))
        self.buffer.bootstrap_values[step, torch.as_tensor(bootstrap, device=self.device)] = values

    def _finite(self, observations: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Observations with non-finite entries zeroed (and the fault noted): the policy must never see NaN,
        or sampling fails; the iteration's update is then skipped."""
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
        wall_time = self.clock()
        for index in np.flatnonzero(mask):
            episode_return = float(infos["episode"]["r"][index])
            length = int(infos["episode"]["l"][index])
            self.recent_returns.append(episode_return)
            self.recent_lengths.append(length)
            self.episodes.append((self.global_step * self.step_scale, wall_time, episode_return, length))

    def take_episodes(self) -> list[tuple[int, float, float, int]]:
        """The episodes finished since the last call (see :attr:`episodes`), handed over and forgotten."""
        episodes, self.episodes = self.episodes, []
        return episodes

    def state_dict(self) -> dict[str, Any]:
        """Environment state, reward-scaler statistics and the observations the next rollout starts from."""
        return {"env_state": self.env_state[0]() if self.env_state else None,
                "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler is not None else None,
                "next_observations": self.next_observations.clone()}

    def load_state_dict(self, state: dict[str, Any], seed: int) -> bool:
        """Reset the envs with ``seed``, then put them back where :meth:`state_dict` found them where the
        ``env_state`` setter can (returns True then); otherwise new episodes start."""
        self.reset(seed)
        restored = bool(self.env_state and self.env_state[1](state.get("env_state")))
        if restored:
            self.next_observations = state["next_observations"].to(self.device)
        if self.reward_scaler is not None and state.get("reward_scaler") is not None:
            # Running returns continue only with their episodes.
            self.reward_scaler.load_state_dict(state["reward_scaler"], restore_returns=restored)
        return restored
