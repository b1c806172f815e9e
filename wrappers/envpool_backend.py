"""The envpool backend: MuJoCo and Atari environments stepped by envpool's C++ thread pool, as a gymnasium
vector env with SAME_STEP autoreset that the trainer uses unchanged.

envpool (https://github.com/sail-sg/envpool) resets an env on the call *after* its episode ended (the
action given then is ignored: gymnasium's NEXT_STEP). :class:`EnvpoolVectorEnv` turns that into
``AutoresetMode.SAME_STEP``: on the step where env ``i`` ends, it resets just the finished envs at once
(``reset(env_id=finished)`` on the synchronous pool, one extra round trip into the pool, only on steps
where some episode ended), so the returned observation of env ``i`` is already the first of its next
episode, and the observation the episode ended on is in ``infos["final_obs"]`` (mask
``infos["_final_obs"]``). The next call steps every env with its action: no step is an autoreset step.

Ids (:func:`envpool_task_id`): the gymnasium MuJoCo ids ``Ant``, ``HalfCheetah``, ``Hopper``, ``Humanoid``,
``HumanoidStandup``, ``InvertedDoublePendulum``, ``InvertedPendulum``, ``Pusher``, ``Reacher``, ``Swimmer``,
``Walker2d`` ``-v4``/``-v5`` keep their names (envpool reimplements gymnasium's envs: same observation and
action shapes, bounds, rewards, termination rules and 1,000-step limits, 50 for Reacher, 100 for Pusher);
Atari ``ALE/<Game>-v5`` -> envpool ``<Game>-v5`` with sticky actions 0.25 and ``<Game>NoFrameskip-v4``
-> the same game without sticky actions.

Differences from the gymnasium path (``wrappers.vector.make_vector_env``, ``wrappers.atari.make_atari_vector_env``):

- Seeding: envpool seeds its envs when the pool is built (env ``i`` gets ``seed + i``, as the trainer's
  ``reset(seed=seed)`` asks). ``reset(seed=...)`` therefore rebuilds the pool with that seed; the same
  seed gives the same episodes, but not the same ones as gymnasium's envs (other random number streams).
- MuJoCo: envpool marks a step ``terminated`` or ``truncated``, never both (gymnasium: both when the
  episode terminates on exactly the time-limit step); such a step is reported as a truncation only, so
  the trainer bootstraps a terminal state there (rare: one step in a thousand at most, and only if the
  robot falls at exactly that step). Box action spaces are declared float32 like gymnasium's (envpool
  uses float64 internally; actions are cast). Rewards are float64 as gymnasium's (envpool's float32).
- Atari: envpool's ALE build and ROMs (package envpool-assets), not ale-py 0.12's; after a reset the
  frame stack holds 4 copies of the first frame (ale-py: three black frames and the first frame), and
  envpool plays 1 to 30 no-ops, the last one replaced by FIRE in games with FIRE (ale-py draws its own
  count of up to 30 no-ops, then FIRE). The rest is the same: frame skip 4 with the max of the last 2
  frames, 84x84 grayscale by area interpolation, 4 stacked frames ``(4, 84, 84)`` uint8, sticky actions
  by the emulator (per frame), minimal action set, 27,000-step (108,000-frame) truncation. Life-loss
  episode ends and sign-clipped rewards are added in Python by the wrappers of the ale-py path
  (``wrappers.atari``), so episode statistics stay full-game raw scores. A game over on the 27,000th
  step is reported terminated and truncated (envpool's ``info["terminated"]`` tells game overs apart).
- ``infos``: envpool's per-env info arrays (``env_id``, ``elapsed_step``, ``x_position``, ``lives``, ...)
  without masks (``make_vector_env`` drops the envs' own infos unless ``keep_env_infos``); in a done
  step the finished envs' entries are those of the reset, and the step's own are in
  ``infos["final_info"]`` (mask ``infos["_final_info"]``). ``final_obs`` is a length-N object
  array (None where no episode ended) for MuJoCo, as gymnasium's sync vector env gives it, and a dense
  ``[N, 4, 84, 84]`` array for Atari, as ale-py's vector env gives it.
- Resume: the simulators' states are not saved (envpool cannot restore them); a resumed run starts new
  episodes, like Box2D and Atari on the gymnasium path. No rendering (videos come from gymnasium envs).
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers import vector as vector_wrappers

from common.errors import EnvironmentProblem, UsageError

PIP_HINT = "pip install envpool"
# gymnasium's MuJoCo envs that envpool reimplements; ids -v4 and -v5 (what gymnasium 1.4 makes with mujoco 3).
MUJOCO_TASKS = ("Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
                "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d")
MUJOCO_VERSIONS = ("v4", "v5")
# The DeepMind preprocessing of wrappers/atari.py, in envpool's option names. Life-loss episode ends and
# reward clipping stay off here: they are Python wrappers on top, after the episode statistics.
ATARI_OPTIONS = {"stack_num": 4, "frame_skip": 4, "noop_max": 30, "img_height": 84, "img_width": 84,
                 "gray_scale": True, "use_inter_area_resize": True, "use_fire_reset": True,
                 "full_action_space": False, "episodic_life": False, "reward_clip": False,
                 "max_episode_steps": 27000}
ATARI_STICKY_ACTIONS = {"v5": 0.25, "NoFrameskip-v4": 0.0}
# Info entries of envpool that are no per-env data the trainer or the wrappers read.
DROPPED_INFO_KEYS = ("players", "ram")


def import_envpool() -> Any:
    """The ``envpool`` module.

    Raises:
        EnvironmentProblem: envpool is not installed (or does not import on this platform).
    """
    try:
        return importlib.import_module("envpool")
    except ImportError as error:
        raise EnvironmentProblem(f"the envpool backend needs the Python package 'envpool': {PIP_HINT} "
                                 f"({type(error).__name__}: {error})") from error


def _atari_games(envpool: Any) -> dict[str, str]:
    """envpool's Atari task ids by lower-case game name (``"pong"`` -> ``"Pong-v5"``)."""
    try:
        specs = envpool.registration.registry.specs
        ids = [task_id for task_id, entry in specs.items() if entry[1] == "AtariEnvSpec"]
    except AttributeError:  # another registry layout: fall back on the names
        ids = [task_id for task_id in envpool.list_all_envs() if task_id.endswith("-v5")
               and task_id.split("-v")[0] not in MUJOCO_TASKS]
    return {task_id.removesuffix("-v5").lower(): task_id for task_id in ids}


def envpool_task_id(environment_id: str) -> tuple[str, bool, dict[str, Any]]:
    """The envpool task id of a gymnasium id, whether it is an Atari game, and envpool's options for it.

    ``Hopper-v4`` -> ``("Hopper-v4", False, {})``; ``ALE/Pong-v5`` -> ``("Pong-v5", True, {...,
    "repeat_action_probability": 0.25})``; ``PongNoFrameskip-v4`` -> the same game with
    ``repeat_action_probability`` 0.

    Raises:
        EnvironmentProblem: envpool is not installed, or has no such environment.
    """
    envpool = import_envpool()
    available = set(envpool.list_all_envs())
    supported = ("the envpool backend takes MuJoCo ids <Task>-v4/-v5 (Hopper-v4, HalfCheetah-v5, ...) and Atari "
                 "ids ALE/<Game>-v5; use the gymnasium backend")
    atari_version = None
    if environment_id.startswith("ALE/") and environment_id.endswith("-v5"):
        game, atari_version = environment_id.removeprefix("ALE/").removesuffix("-v5"), "v5"
    elif environment_id.endswith("NoFrameskip-v4") and "/" not in environment_id:
        game, atari_version = environment_id.removesuffix("NoFrameskip-v4"), "NoFrameskip-v4"
    if atari_version is not None:
        task_id = _atari_games(envpool).get(game.lower())
        if task_id is None:
            raise EnvironmentProblem(f"envpool {envpool.__version__} has no Atari game '{game}' ({environment_id}); "
                                     "use the gymnasium backend")
        options = dict(ATARI_OPTIONS, repeat_action_probability=ATARI_STICKY_ACTIONS[atari_version])
        return task_id, True, options
    task, _, version = environment_id.rpartition("-")
    if task in MUJOCO_TASKS and version in MUJOCO_VERSIONS and environment_id in available:
        return environment_id, False, {}
    raise EnvironmentProblem(f"'{environment_id}' is not available through envpool: {supported}")


def _single_action_space(space: gym.Space) -> gym.Space:
    """envpool's action space of one env, with Box bounds as float32 like gymnasium's MuJoCo envs."""
    if isinstance(space, gym.spaces.Box) and space.dtype == np.float64:
        return gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), space.shape,
                              np.float32)
    if isinstance(space, gym.spaces.Discrete):
        return gym.spaces.Discrete(int(space.n), start=int(space.start))
    return space


def _normalize_seed(seed: Any) -> int | list[int]:
    """An int seed (env ``i`` gets ``seed + i``) or a list of per-env seeds, as plain Python ints."""
    return [int(s) for s in seed] if isinstance(seed, (list, tuple, np.ndarray)) else int(seed)


class EnvpoolVectorEnv(VectorEnv):
    """A synchronous envpool pool as a gymnasium 1.x ``VectorEnv`` with ``AutoresetMode.SAME_STEP``.

    Args:
        environment_id: the gymnasium id, for messages.
        task_id: envpool's task id (:func:`envpool_task_id`).
        num_envs: number of envs, >= 1.
        seed: seed of the first reset (env ``i`` gets ``seed + i``), or a sequence of ``num_envs`` seeds;
            None draws one at random.
        atari: the pool is an Atari pool (game overs told apart from time limits by
            ``info["terminated"]``; dense ``final_obs``).
        **options: envpool options (``max_episode_steps``, ``num_threads``, ``repeat_action_probability``, ...).

    Raises:
        EnvironmentProblem: envpool is missing or fails to build the pool.
        UsageError: ``num_envs < 1`` or a ``batch_size`` other than ``num_envs`` (asynchronous pools are
            not supported).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    render_mode = None

    def __init__(self, environment_id: str, task_id: str, num_envs: int, seed: Any = None, atari: bool = False,
                 **options: Any) -> None:
        if num_envs < 1:
            raise UsageError(f"num_envs must be >= 1, got {num_envs}")
        if options.pop("batch_size", num_envs) != num_envs:
            raise UsageError("the envpool backend runs synchronous pools only: batch_size must equal num_envs")
        self.environment_id, self.task_id, self.atari = environment_id, task_id, atari
        self.num_envs = num_envs
        self._options = options
        self._envpool = import_envpool()
        self._pool: Any = None
        self._pool_seed: Any = None
        self._fresh = False  # the pool was built and never reset nor stepped
        self._build(np.random.SeedSequence().generate_state(1)[0] % 2**31 if seed is None else seed)
        self.single_observation_space = self._pool.single_observation_space
        self.single_action_space = _single_action_space(self._pool.single_action_space)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._pool_action_dtype = self._pool.single_action_space.dtype

    def _build(self, seed: Any) -> None:
        """(Re)build the pool with ``seed``: an int (env ``i`` gets ``seed + i``) or ``num_envs`` ints."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        seed = _normalize_seed(seed)
        try:
            self._pool = self._envpool.make_gymnasium(self.task_id, num_envs=self.num_envs,
                                                      batch_size=self.num_envs, seed=seed, **self._options)
        except Exception as error:  # noqa: BLE001 - any failure of envpool is reported in one line
            raise EnvironmentProblem(f"envpool could not create {self.environment_id} ({self.task_id}): "
                                     f"{type(error).__name__}: {error}") from error
        self._pool_seed, self._fresh = seed, True

    @property
    def config(self) -> dict[str, Any]:
        """envpool's resolved options of the pool (``max_episode_steps``, ``seed``, ``num_threads``, ...)."""
        return self._pool.config

    def _infos(self, info: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in info.items() if key not in DROPPED_INFO_KEYS}

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start new episodes in every env; with ``seed`` (an int: env ``i`` gets ``seed + i``; or
        ``num_envs`` ints) the pool is rebuilt with it, so the same seed gives the same episodes.

        Raises:
            ValueError: ``options`` (partial resets are not supported).
        """
        if options:
            raise ValueError(f"the envpool backend takes no reset options, got {sorted(options)}")
        if seed is not None:
            if isinstance(seed, (int, np.integer)):
                super().reset(seed=int(seed))
            if not (self._fresh and _normalize_seed(seed) == self._pool_seed):
                self._build(seed)
        self._fresh = False
        observations, info = self._pool.reset()
        return observations, self._infos(info)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env; envs whose episode ended are reset in the same call (see the module docstring)."""
        self._fresh = False
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"expected actions for {self.num_envs} envs, got shape {actions.shape}")
        observations, rewards, terminations, truncations, info = self._pool.step(
            actions.astype(self._pool_action_dtype, copy=False))
        truncations = np.asarray(truncations, dtype=bool)
        terminations = np.asarray(terminations, dtype=bool)
        if self.atari and "terminated" in info:  # a game over at the time limit is a termination too
            terminations = terminations | (truncations & (np.asarray(info["terminated"]) != 0))
        rewards = np.asarray(rewards, dtype=np.float64)
        infos = self._infos(info)
        done = terminations | truncations
        if done.any():
            finished = np.flatnonzero(done).astype(np.int32)
            if self.atari:
                final_observations = np.array(observations)
            else:
                final_observations = np.full(self.num_envs, None, dtype=object)
                for index in finished:
                    final_observations[index] = np.array(observations[index])
            reset_observations, reset_info = self._pool.reset(finished)
            order = np.asarray(reset_info["env_id"], dtype=np.int64)
            observations = np.array(observations)
            observations[order] = reset_observations
            final_info = infos
            infos = {key: np.array(value) for key, value in final_info.items()}
            for key, value in self._infos(reset_info).items():
                if key in infos and isinstance(value, np.ndarray) and value.shape[1:] == infos[key].shape[1:]:
                    infos[key][order] = value
            infos["final_obs"], infos["_final_obs"] = final_observations, done
            infos["final_info"], infos["_final_info"] = final_info, done.copy()
        return observations, rewards, terminations, truncations, infos

    def close_extras(self, **kwargs: Any) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.close()
            self._pool = None

    def __repr__(self) -> str:
        return f"EnvpoolVectorEnv({self.environment_id!r} -> {self.task_id!r}, num_envs={self.num_envs})"


def make_envpool_vector_env(environment_id: str, num_envs: int, seed: int | None = None,
                            **kwargs: Any) -> VectorEnv:
    """An :class:`EnvpoolVectorEnv` of ``num_envs`` copies of ``environment_id`` (no wrappers).

    Args:
        environment_id: a gymnasium id envpool has (:func:`envpool_task_id`): ``Hopper-v4``,
            ``ALE/Pong-v5``, ...
        num_envs: number of envs, >= 1.
        seed: seed until the first ``reset(seed=...)`` (env ``i`` gets ``seed + i``); None: random.
        **kwargs: envpool options, overriding the id's defaults: ``max_episode_steps``, ``num_threads``,
            ``repeat_action_probability`` (Atari sticky actions; ``sticky_action_probability`` is taken as
            an alias), ...

    Raises:
        EnvironmentProblem: envpool is not installed, lacks the id, or fails to build the pool (an unknown
            option included).
        UsageError: ``sticky_action_probability`` for a MuJoCo id, ``num_envs < 1``.
    """
    task_id, atari, options = envpool_task_id(environment_id)
    if "sticky_action_probability" in kwargs:
        if not atari:
            raise UsageError(f"{environment_id} is no Atari game: it has no sticky actions")
        kwargs["repeat_action_probability"] = kwargs.pop("sticky_action_probability")
    return EnvpoolVectorEnv(environment_id, task_id, num_envs, seed=seed, atari=atari, **{**options, **kwargs})


def make_envpool_training_env(environment_id: str, num_envs: int, seed: int | None = None, *,
                              evaluation: bool = False, **kwargs: Any) -> VectorEnv:
    """The envpool counterpart of ``make_vector_env`` (MuJoCo) and ``make_atari_vector_env`` (Atari), with
    the same wrappers on top, so episode statistics come in ``infos["episode"]``/``infos["_episode"]``
    exactly as on the gymnasium path.

    MuJoCo, inside out: :class:`EnvpoolVectorEnv` -> ``RecordEpisodeStatistics`` (raw returns) ->
    action clipping. Rewards stay raw: reward scaling is the trainer's (``ppo.reward_scaling.RewardScaler``,
    ``--normalize-rewards``), as on the gymnasium path.
    Atari: :class:`EnvpoolVectorEnv` -> ``RecordEpisodeStatistics`` (full-game raw scores) -> for training
    (not ``evaluation``) ``wrappers.atari.LifeLossTermination`` and ``TransformReward(np.sign)``.

    Args:
        environment_id, num_envs, seed, **kwargs: as :func:`make_envpool_vector_env`
            (``sticky_action_probability=`` for Atari, ``max_episode_steps=``, ``num_threads=``, ...).
        evaluation: Atari: whole games with raw rewards (no life-loss ends, no clipping); nothing for MuJoCo.

    Raises:
        EnvironmentProblem: envpool is not installed, lacks the id, or fails to build the pool.
    """
    envs = make_envpool_vector_env(environment_id, num_envs, seed=seed, **kwargs)
    if not envs.atari:
        from wrappers.vector import add_statistics_and_action_clipping
        return add_statistics_and_action_clipping(envs)
    statistics = vector_wrappers.RecordEpisodeStatistics(envs)
    if evaluation:
        return statistics
    from wrappers.atari import LifeLossTermination
    return vector_wrappers.TransformReward(LifeLossTermination(statistics), np.sign)
