"""Brax (JAX) environments as a SAME_STEP vector env of torch tensors: thousands of envs in one jitted call.

``make_brax_vector_env("brax/ant", num_envs=4096, device="cuda")`` gives an object with the interface of
gymnasium 1.4's ``VectorEnv`` in ``AutoresetMode.SAME_STEP`` (what :mod:`wrappers.vector` builds), except
that observations, rewards, terminations, truncations and ``infos["final_obs"]`` are torch tensors on
``device``, handed over from JAX through DLPack without a copy, and ``step`` takes a torch tensor of
actions (also handed to JAX through DLPack). Only the episode statistics come to the host (small arrays of
``num_envs`` numbers, like gymnasium's ``RecordEpisodeStatistics``).

One ``step`` is one jitted JAX call over the whole batch (``jax.vmap`` of the brax env):

1. clip the actions to the action space ``[-1, 1]``;
2. step every env; ``terminated`` is the env's own ``done`` (physics: the ant fell), ``truncated`` is the
   time limit (the episode's step count reached ``episode_length``), as gymnasium's ``TimeLimit`` sets it
   (both are True where an env terminates on the last allowed step);
3. where an env ended, keep its last observation in ``final_obs`` and replace its state by a fresh random
   reset (its own PRNG key), so the returned observation is the first one of its next episode; the reset
   is computed only in steps where some env ended (``jax.lax.cond``);
4. accumulate per-env episode returns and lengths, reported for the envs that ended.

Brax's own ``AutoResetWrapper`` is not used: it resets every env to the same first state each time
(``info["first_pipeline_state"]``) and overwrites the last observation.

The returned tensors alias JAX's buffers: treat them as read-only (``clone()`` before changing them in
place). JAX and torch must see the same device: ``device="cpu"`` uses JAX's CPU backend,
``device="cuda:K"`` JAX's GPU ``K`` (which needs ``jax[cuda12]`` and a CUDA build of torch).

Requires the optional dependencies of ``requirements-brax.txt``; this module imports JAX only when an env
is made, so the rest of the project works without them.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from common.errors import UsageError

BRAX_PREFIX = "brax/"
INSTALL_HINT = "pip install -r requirements-brax.txt"


class _Carry(NamedTuple):
    """Everything the jitted step carries from one call to the next (leading axis: env)."""

    env_state: Any  # brax.envs.State, batched
    keys: Any  # [N, 2] uint32 PRNG keys, one per env, for its next reset
    steps: Any  # [N] int32 steps taken in the current episode
    returns: Any  # [N] float32 sum of rewards of the current episode


def _import_brax() -> tuple[Any, Any, Any]:
    """``(jax, jax.numpy, brax.envs)``, or a UsageError with the install line."""
    # JAX must not take 75% of the GPU up front when torch shares it (read when JAX starts its GPU backend).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        # mujoco.mjx (imported by brax) prints "Failed to import warp" to stdout when the optional
        # warp-lang is absent; we never use the warp backend, so keep it off the run's output.
        with contextlib.redirect_stdout(io.StringIO()):
            import jax
            import jax.numpy as jnp
            from brax import envs as brax_envs
    except ImportError as error:
        raise UsageError(f"the Brax backend needs brax and jax ({error}): {INSTALL_HINT}") from error
    return jax, jnp, brax_envs


def brax_environment_names() -> list[str]:
    """The ``brax/<name>`` ids brax registers (needs brax installed)."""
    _, _, brax_envs = _import_brax()
    return sorted(BRAX_PREFIX + name for name in getattr(brax_envs, "_envs", {}))


def _jax_device(jax: Any, device: torch.device) -> Any:
    """The JAX device that holds the same memory as torch's ``device``."""
    if device.type == "cpu":
        return jax.devices("cpu")[0]
    if device.type == "cuda":
        try:
            gpus = jax.devices("cuda")
        except RuntimeError as error:
            raise UsageError(f"device {device} asked for, but JAX has no CUDA backend: pip install "
                             '"jax[cuda12]" at the jax version of requirements-brax.txt') from error
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(gpus):
            raise UsageError(f"device {device} asked for, but JAX sees {len(gpus)} CUDA device(s)")
        return gpus[index]
    raise UsageError(f"the Brax backend runs on cpu or cuda devices, not {device}")


def _make_env(environment_id: str, **env_kwargs: Any) -> tuple[Any, gym.spaces.Box, gym.spaces.Box]:
    """The brax env of ``brax/<name>`` and one env's observation and action spaces
    (``Box(-inf, inf, (obs_dim,), float32)``, ``Box(-1, 1, (act_dim,), float32)``).

    Raises:
        UsageError: not a ``brax/<known name>`` id, brax/jax missing, bad constructor arguments, or
            observations that are not flat vectors.
    """
    if not environment_id.startswith(BRAX_PREFIX):
        raise UsageError(f"{environment_id!r} is not a Brax id: use brax/<name>, e.g. brax/ant")
    jax, _, brax_envs = _import_brax()
    name = environment_id[len(BRAX_PREFIX):]
    known = getattr(brax_envs, "_envs", {})
    if name not in known:
        raise UsageError(f"unknown Brax environment {environment_id!r}; known: "
                         f"{', '.join(BRAX_PREFIX + known_name for known_name in sorted(known))}")
    try:
        env = brax_envs.get_environment(name, **env_kwargs)
    except (TypeError, ValueError) as error:
        raise UsageError(f"cannot make {environment_id} with {env_kwargs}: {error}") from error
    # Shapes from a traced reset: brax's own observation_size runs an eager (unjitted) reset, tens of
    # seconds for ant on a CPU.
    observation = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
    if isinstance(observation, dict) or len(observation.shape) != 1:
        raise UsageError(f"{environment_id} has observations {observation}; only flat vector "
                         "observations are supported")
    return (env, gym.spaces.Box(-np.inf, np.inf, (int(observation.shape[0]),), np.float32),
            gym.spaces.Box(-1.0, 1.0, (int(env.action_size),), np.float32))


def describe_brax_environment(environment_id: str, episode_length: int = 1000) -> Any:
    """The :class:`wrappers.vector.EnvironmentInfo` of ``brax/<name>`` (continuous family), without
    compiling anything.

    Raises:
        UsageError: as :func:`make_brax_vector_env`.
    """
    from wrappers.vector import EnvironmentInfo
    _, observation_space, action_space = _make_env(environment_id)
    return EnvironmentInfo(environment_id=environment_id, observation_space=observation_space,
                           action_space=action_space, family="continuous", max_episode_steps=episode_length)


class BraxVectorEnv(VectorEnv):
    """A batch of ``num_envs`` copies of a brax env, stepped by one jitted JAX call; see the module doc.

    Attributes:
        num_envs: N.
        single_observation_space: ``Box(-inf, inf, (obs_dim,), float32)``.
        single_action_space: ``Box(-1, 1, (act_dim,), float32)``.
        observation_space, action_space: the batched spaces, ``(N, obs_dim)`` and ``(N, act_dim)``.
        device: the torch device of every tensor in and out.
        episode_length: the time limit, in steps.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
    # Actions go in and everything comes out as torch tensors on ``device`` (read by the trainer).
    accepts_tensors = True

    def __init__(self, environment_id: str, num_envs: int, seed: int = 0, episode_length: int = 1000,
                 device: str | torch.device = "cpu", backend: str | None = None, **env_kwargs: Any):
        if num_envs < 1:
            raise UsageError(f"num_envs must be at least 1, got {num_envs}")
        if episode_length < 1:
            raise UsageError(f"episode_length must be at least 1, got {episode_length}")
        if backend is not None:
            env_kwargs["backend"] = backend
        jax, jnp, _ = _import_brax()
        env, self.single_observation_space, self.single_action_space = _make_env(environment_id, **env_kwargs)

        self.environment_id = environment_id
        self.num_envs = int(num_envs)
        self.episode_length = int(episode_length)
        self.device = torch.device(device)
        self._jax, self._jnp = jax, jnp
        self._jax_device = _jax_device(jax, self.device)
        self._env = env
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = dict(self.metadata)
        self.render_mode = None
        self.closed = False

        self._key = jax.device_put(jax.random.PRNGKey(seed), self._jax_device)
        # One compiled function for step and reset (a reset is a step whose every env is reset): XLA on a
        # CPU takes tens of seconds per brax function, so a separate jitted reset would double that.
        self._step_fn = jax.jit(self._step_batch)
        self._blank_carry: _Carry | None = None
        self._no_reset = jax.device_put(np.bool_(False), self._jax_device)
        self._carry: _Carry | None = None
        self._episode_start = np.zeros(self.num_envs)

    # ------------------------------------------------------------------------------------------- JAX side
    def _blank(self) -> _Carry:
        """A carry of zeros on the JAX device with the structure of a real one, for the first reset."""
        jax, jnp = self._jax, self._jnp
        if self._blank_carry is None:
            env_state = jax.eval_shape(jax.vmap(self._env.reset),
                                       jax.ShapeDtypeStruct((self.num_envs, 2), jnp.uint32))
            env_state = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype, device=self._jax_device),
                                     env_state)
            self._blank_carry = _Carry(env_state=env_state, keys=None,
                                       steps=jnp.zeros(self.num_envs, jnp.int32, device=self._jax_device),
                                       returns=jnp.zeros(self.num_envs, jnp.float32, device=self._jax_device))
        return self._blank_carry

    def _step_batch(self, carry: _Carry, actions: Any, reset_all: Any) -> tuple[_Carry, tuple[Any, ...]]:
        """One step of every env with SAME_STEP autoreset.

        Args:
            carry: the batched state.
            actions: [N, act_dim] float32.
            reset_all: bool scalar; True resets every env (what :meth:`reset` does, from any carry, even
                one of zeros: the stepped values are then all replaced) and zeroes the statistics.

        Returns:
            ``(carry, (observations [N, obs_dim], rewards [N], terminations [N] bool, truncations [N] bool,
            final_observations [N, obs_dim], statistics [3, N] float32))``, statistics holding the done
            mask, the episode return and the episode length (read where done).
        """
        jax, jnp = self._jax, self._jnp
        actions = jnp.clip(actions.astype(jnp.float32), -1.0, 1.0)
        stepped = jax.vmap(self._env.step)(carry.env_state, actions)
        # Same dtypes as the carry, without weak types (brax's step makes some leaves weakly typed, which
        # would retrace the jitted step, a second compile of tens of seconds, on its second call).
        stepped = jax.tree.map(lambda new, old: jax.lax.convert_element_type(new, old.dtype), stepped,
                               carry.env_state)
        rewards = stepped.reward.astype(jnp.float32)
        steps = carry.steps + 1
        returns = carry.returns + rewards
        terminations = stepped.done > 0.5
        truncations = steps >= self.episode_length
        dones = terminations | truncations | reset_all
        split = jax.vmap(lambda key: jax.random.split(key))(carry.keys)  # [N, 2, 2]
        next_keys, reset_keys = split[:, 0], split[:, 1]

        def reset_done(state: Any) -> Any:
            fresh = jax.vmap(self._env.reset)(reset_keys)
            # The reset's reward/done/metrics (zeros) replace those of the ended envs, like brax's own reset.
            return jax.tree.map(lambda new, old: jnp.where(
                dones.reshape((-1,) + (1,) * (old.ndim - 1)), new, old), fresh, state)

        env_state = jax.lax.cond(dones.any(), reset_done, lambda state: state, stepped)
        statistics = jnp.stack([(dones & ~reset_all).astype(jnp.float32), returns, steps.astype(jnp.float32)])
        carry = _Carry(env_state=env_state, keys=next_keys, steps=jnp.where(dones, 0, steps),
                       returns=jnp.where(dones, 0.0, returns))
        outputs = (env_state.obs.astype(jnp.float32), rewards, terminations, truncations,
                   stepped.obs.astype(jnp.float32), statistics)
        return carry, outputs

    # ----------------------------------------------------------------------------------------- torch side
    def _to_torch(self, array: Any) -> torch.Tensor:
        """Zero-copy view of a JAX array as a torch tensor on :attr:`device`."""
        return torch.from_dlpack(array)

    def _to_jax(self, tensor: torch.Tensor) -> Any:
        """Zero-copy view of a torch tensor as a JAX array (copied only to fix dtype, device or layout)."""
        tensor = tensor.detach().to(device=self.device, dtype=torch.float32).contiguous()
        return self._jax.dlpack.from_dlpack(tensor)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start a new episode in every env.

        Args:
            seed: reseed the PRNG (same seed, same episodes); None continues from the current key (the
                first reset uses the constructor's seed).
            options: ignored (gymnasium's signature).

        Returns:
            ``(observations [N, obs_dim] float32 on device, {})``.
        """
        del options
        jax, jnp = self._jax, self._jnp
        if seed is not None:
            self._key = jax.device_put(jax.random.PRNGKey(seed), self._jax_device)
        self._key, env_keys = jax.random.split(self._key)
        carry = self._carry if self._carry is not None else self._blank()
        carry = carry._replace(keys=jax.random.split(env_keys, self.num_envs))
        actions = jnp.zeros(self.action_space.shape, jnp.float32, device=self._jax_device)
        self._carry, outputs = self._step_fn(carry, actions, jnp.asarray(True, device=self._jax_device))
        self._episode_start[:] = time.perf_counter()
        return self._to_torch(outputs[0]), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                  dict[str, Any]]:
        """Step every env once; ended envs start their next episode in the same step.

        Args:
            actions: [N, act_dim] tensor (clipped to [-1, 1]); a numpy array is accepted too.

        Returns:
            ``(observations [N, obs_dim] float32, rewards [N] float32, terminations [N] bool,
            truncations [N] bool, infos)``, tensors on :attr:`device`. ``infos["final_obs"]``: [N, obs_dim]
            tensor of the last observations, valid where ``infos["_final_obs"]`` ([N] bool tensor) is True.
            ``infos["episode"]``: ``{"r": float32 [N], "l": int64 [N], "t": float64 [N]}`` numpy arrays
            (return, length, seconds) valid where ``infos["_episode"]`` ([N] numpy bool) is True.
        """
        if self._carry is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        expected = (self.num_envs, self.single_action_space.shape[0])
        if tuple(actions.shape) != expected:
            raise ValueError(f"actions of shape {tuple(actions.shape)}, expected {expected}")
        self._carry, outputs = self._step_fn(self._carry, self._to_jax(actions), self._no_reset)
        observations, rewards, terminations, truncations, final_observations, statistics = outputs
        statistics = np.asarray(statistics)  # the only transfer to the host: [3, N]
        dones = statistics[0] > 0.5
        infos: dict[str, Any] = {}
        dones_tensor = self._to_torch(terminations) | self._to_torch(truncations)
        infos["final_obs"] = self._to_torch(final_observations)
        infos["_final_obs"] = dones_tensor
        if dones.any():
            now = time.perf_counter()
            elapsed = np.where(dones, now - self._episode_start, 0.0)
            self._episode_start[dones] = now
            infos["episode"] = {"r": np.where(dones, statistics[1], 0.0).astype(np.float32),
                                "l": np.where(dones, statistics[2], 0).astype(np.int64),
                                "t": np.round(elapsed, 6)}
            infos["_episode"] = dones
        return (self._to_torch(observations), self._to_torch(rewards), self._to_torch(terminations),
                self._to_torch(truncations), infos)

    def close_extras(self, **kwargs: Any) -> None:
        """Drop the JAX state (its device buffers are freed once no returned tensor refers to them)."""
        self._carry = None

    def __repr__(self) -> str:
        return f"BraxVectorEnv({self.environment_id}, num_envs={self.num_envs}, device={self.device})"


def make_brax_vector_env(environment_id: str, num_envs: int, seed: int = 0, episode_length: int = 1000,
                         device: str | torch.device = "cpu", **env_kwargs: Any) -> BraxVectorEnv:
    """A SAME_STEP-autoreset vector env of ``num_envs`` copies of a Brax env, with torch tensors on ``device``.

    Args:
        environment_id: ``brax/<name>``, a name of brax's registry (``brax/ant``, ``brax/halfcheetah``,
            ``brax/hopper``, ``brax/humanoid``, ...; :func:`brax_environment_names` lists them).
        num_envs: N, >= 1; all step in one jitted, vmapped JAX call.
        seed: seed of the JAX PRNG that draws every env's initial states.
        episode_length: time limit in steps; reaching it is a truncation.
        device: torch device of the tensors in and out; JAX runs on the same device.
        **env_kwargs: passed to the brax env's constructor, e.g. ``backend="mjx"`` (brax's default for
            most envs is ``"generalized"``).

    Raises:
        UsageError: brax/jax not installed (with the pip line), an id that is not ``brax/<known name>``,
            a bad count or length, a device JAX cannot use.
    """
    return BraxVectorEnv(environment_id, num_envs, seed=seed, episode_length=episode_length, device=device,
                         **env_kwargs)
