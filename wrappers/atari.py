"""Atari environments with the DeepMind preprocessing (Mnih et al. 2015; Machado et al. 2018).

Training and evaluation envs come from ale-py's C++ vector env (``gymnasium.make_vec(id,
vectorization_mode="vector_entry_point")``, ``ale_py.vector_env.AtariVectorEnv``), which does the
preprocessing in C++ threads:

- a random number (up to 30) of no-op actions after each reset, and FIRE in games that need it to start;
- each action repeated for 4 frames, the observation being the pixel-wise max of the last 2 frames;
- frames converted to grayscale and resized to 84 x 84; the last 4 stacked: ``(4, 84, 84)`` uint8;
- sticky actions with probability ``sticky_action_probability`` (Machado et al. 2018; 0.25 in ``-v5``);
- games cut (truncated, so bootstrapped) at 108,000 frames = 27,000 steps.

In games whose action 1 is FIRE (Breakout, ...), FIRE is also pressed after every lost life, in training and
in evaluation, as openai/baselines and CleanRL do (``FireResetEnv`` around ``EpisodicLifeEnv``): without it an
agent must learn to relaunch the ball itself, and an untrained one idles until the 27,000-step cap
(:class:`FireAfterLifeLoss`). On top of it, for learning only (not in evaluation envs): a lost life ends the
learning episode while the game goes on (DeepMind's ``EpisodicLifeEnv``), and rewards are clipped to their
sign. Episode
statistics (``infos["episode"]["r"|"l"]``, mask ``infos["_episode"]``) are recorded *before* both, by
gymnasium's vector ``RecordEpisodeStatistics``: they are full-game raw scores (all lives, unclipped), and
lengths in agent steps (4 frames each).

Why ale-py's env: measured on a 2-core CPU machine (shared with other jobs, so ranges over 3 runs), 8 envs,
random actions, steps/s (1 step = 4 frames): ale-py's vector env 1,660-2,220 on Breakout and 2,300-2,660
on Pong (2,040 and 2,600 with this module's wrappers on top); gymnasium's sync vector env of
``AtariPreprocessing`` + ``FrameStackObservation`` envs 1,000-1,320 and 1,220-1,770; async 930-1,120 and
1,300-1,500. It also does no-op starts and FIRE resets itself and supports SAME_STEP autoreset.

The C++ env renders no RGB frames; for videos, :func:`make_atari_env` builds one gymnasium env with the
same preprocessing from gymnasium's ``AtariPreprocessing`` and ``FrameStackObservation`` wrappers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.wrappers import vector as vector_wrappers

from common.errors import EnvironmentProblem
from wrappers.vector import (EnvironmentInfo, _make_error, describe_environment, environment_spec,
                             is_atari)

FRAME_SIZE = 84
FRAME_STACK = 4
FRAME_SKIP = 4
NOOP_MAX = 30
# One env's observations after preprocessing: 4 stacked 84x84 grayscale frames.
ATARI_OBSERVATION_SPACE = gym.spaces.Box(0, 255, (FRAME_STACK, FRAME_SIZE, FRAME_SIZE), np.uint8)


def describe_atari_environment(environment_id: str) -> EnvironmentInfo:
    """The :class:`EnvironmentInfo` of an ``ALE/<Game>-v5`` id, with the preprocessed observation space
    ``Box(0, 255, (4, 84, 84), uint8)``, the game's minimal ``Discrete`` action set and family "atari".

    Raises:
        EnvironmentProblem: not an Atari id (pointing to ``main.py``), an Atari id of another version
            (pointing to ``ALE/<Game>-v5``), an unknown game, or a game that fails to build.
    """
    if not is_atari(environment_id):
        raise EnvironmentProblem(f"{environment_id} is not an Atari game (main_atari.py takes ALE/<Game>-v5 "
                                 "ids such as ALE/Breakout-v5): train it with main.py")
    game = environment_id.removeprefix("ALE/").split("NoFrameskip")[0].split("-v")[0]
    wrong_version = EnvironmentProblem(f"{environment_id}: main_atari.py takes ALE/<Game>-v5 ids (ale-py's "
                                       f"vector env, preprocessing built in): use ALE/{game}-v5")
    if not environment_id.startswith("ALE/"):
        raise wrong_version
    if environment_spec(environment_id).vector_entry_point is None:
        raise wrong_version
    info = describe_environment(environment_id)
    return dataclasses.replace(info, observation_space=ATARI_OBSERVATION_SPACE, family="atari")


class FinalObservationMask(VectorWrapper):
    """Adds the ``infos["_final_obs"]`` mask (``terminations | truncations``, ``[num_envs]`` bool) that
    ale-py's SAME_STEP vector env leaves out next to ``infos["final_obs"]`` (``[num_envs, 4, 84, 84]``)."""

    def step(self, actions: np.ndarray) -> tuple[Any, Any, np.ndarray, np.ndarray, dict[str, Any]]:
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        if "final_obs" in infos and "_final_obs" not in infos:
            infos["_final_obs"] = terminations | truncations
        return observations, rewards, terminations, truncations, infos


@functools.lru_cache(maxsize=None)
def fire_action(environment_id: str) -> int | None:
    """The index of FIRE in a game's minimal action set when the game needs FIRE to start or relaunch (its
    action 1 is FIRE and it has at least 3 actions, the test of openai/baselines' ``FireResetEnv``), else None."""
    env = gym.make(environment_id)
    try:
        meanings = env.unwrapped.get_action_meanings()
    finally:
        env.close()
    return 1 if len(meanings) >= 3 and meanings[1] == "FIRE" else None


class FireAfterLifeLoss(VectorWrapper):
    """Presses FIRE at the step after an env loses a life (and has lives left), in place of the action given.

    ale-py's vector env presses FIRE only when a game starts (``use_fire_reset``). The reference wrappers
    (openai/baselines and CleanRL: ``FireResetEnv`` around ``EpisodicLifeEnv``) also press it after every lost
    life, inside the reset of the new learning episode. A vector env cannot step one game alone, so here the
    first action after a lost life becomes FIRE; the agent's sampled action for that step is stored as usual
    and its log-probability does not depend on what the env did, so its expected policy gradient there is
    zero. Needs ``infos["lives"]``.

    Args:
        env: the vector env (all games of one id).
        fire: the FIRE action index (:func:`fire_action`).
    """

    def __init__(self, env: VectorEnv, fire: int) -> None:
        super().__init__(env)
        self.fire = fire
        self.lives = np.zeros(self.num_envs, dtype=np.int64)
        self.pending = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        observations, infos = self.env.reset(seed=seed, options=options)
        self.lives = np.array(infos["lives"], dtype=np.int64)
        self.pending[:] = False
        return observations, infos

    def step(self, actions: np.ndarray) -> tuple[Any, Any, np.ndarray, np.ndarray, dict[str, Any]]:
        if self.pending.any():
            actions = np.where(self.pending, self.fire, actions)
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        lives = np.array(infos["lives"], dtype=np.int64)
        self.pending = (0 < lives) & (lives < self.lives) & ~(terminations | truncations)
        self.lives = lives
        return observations, rewards, terminations, truncations, infos


class LifeLossTermination(VectorWrapper):
    """Ends the *learning* episode of an env when it loses a life, while its game goes on.

    DeepMind's ``EpisodicLifeEnv`` (Mnih et al. 2015; openai/baselines ``atari_wrappers.py``): a step is
    terminal when ``0 < lives < lives before the step``; the env is not reset (the next observation
    continues the game), its ``final_obs`` is that same observation. Real game ends pass through
    unchanged. Needs ``infos["lives"]`` (``[num_envs]`` int) from reset and step, as ale-py gives it.
    Wrap it outside ``RecordEpisodeStatistics`` so that episode statistics stay full-game.
    """

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        self.lives = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        observations, infos = self.env.reset(seed=seed, options=options)
        self.lives = np.array(infos["lives"], dtype=np.int64)
        return observations, infos

    def step(self, actions: np.ndarray) -> tuple[Any, Any, np.ndarray, np.ndarray, dict[str, Any]]:
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        lives = np.array(infos["lives"], dtype=np.int64)
        # After a game end the env has already reset (SAME_STEP): its lives went up, not down.
        lost = (0 < lives) & (lives < self.lives) & ~(terminations | truncations)
        self.lives = lives
        if lost.any():
            final = np.array(infos.get("final_obs", observations))  # a copy: never write into ale's buffer
            final[lost] = observations[lost]
            infos["final_obs"] = final
            infos["_final_obs"] = infos.get("_final_obs", np.zeros(self.num_envs, dtype=bool)) | lost
            terminations = terminations | lost
        return observations, rewards, terminations, truncations, infos


def make_atari_vector_env(environment_id: str, num_envs: int, vectorization_mode: str = "sync",
                          evaluation: bool = False, sticky_action_probability: float = 0.25,
                          render_mode: str | None = None) -> VectorEnv:
    """A SAME_STEP-autoreset vector env of ``num_envs`` preprocessed Atari games (see the module docstring).

    Observations are ``[num_envs, 4, 84, 84]`` uint8, actions ``[num_envs]`` int (the game's minimal action
    set). Wrapper order, inside out: ale-py's vector env (raw rewards, terminal only at game over) ->
    :class:`FinalObservationMask` -> :class:`FireAfterLifeLoss` (FIRE games) -> ``RecordEpisodeStatistics``
    (full-game raw scores) -> for training only,
    :class:`LifeLossTermination` and ``TransformReward(np.sign)`` (rewards in {-1, 0, 1}).

    Args:
        environment_id: an ``ALE/<Game>-v5`` id.
        num_envs: number of games, >= 1.
        vectorization_mode: ``"sync"`` or ``"async"``; only used with ``render_mode`` (gymnasium's vector
            env of :func:`make_atari_env` envs); ale-py's env steps its games in its own C++ threads.
        evaluation: no life-loss episode ends and no reward clipping (raw full-game scores).
        sticky_action_probability: probability in [0, 1] that the emulator repeats the previous action
            instead of the new one, per frame (Machado et al. 2018).
        render_mode: e.g. ``"rgb_array"``; evaluation envs only.

    Raises:
        EnvironmentProblem: the id is not an ``ALE/<Game>-v5`` game, or the env cannot be built.
        ValueError: ``render_mode`` for training envs.
    """
    describe_atari_environment(environment_id)
    if render_mode is not None:
        if not evaluation:
            raise ValueError("render_mode is only supported for evaluation envs (no life-loss episode ends)")
        envs = gym.make_vec(environment_id, num_envs=num_envs, vectorization_mode=vectorization_mode,
                            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, frameskip=1,
                            repeat_action_probability=sticky_action_probability, render_mode=render_mode,
                            wrappers=[_preprocess])
        return vector_wrappers.RecordEpisodeStatistics(envs)
    try:
        envs = gym.make_vec(environment_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                            autoreset_mode=AutoresetMode.SAME_STEP,
                            repeat_action_probability=sticky_action_probability,
                            frameskip=FRAME_SKIP, noop_max=NOOP_MAX, maxpool=True, img_height=FRAME_SIZE,
                            img_width=FRAME_SIZE, grayscale=True, stack_num=FRAME_STACK, use_fire_reset=True,
                            episodic_life=False, life_loss_info=False, reward_clipping=False)
    except Exception as error:  # noqa: BLE001 - any failure of third-party env code is reported in one line
        raise _make_error(environment_id, error) from error
    envs = FinalObservationMask(envs)
    if fire_action(environment_id) is not None:
        envs = FireAfterLifeLoss(envs, fire_action(environment_id))
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    if not evaluation:
        envs = vector_wrappers.TransformReward(LifeLossTermination(envs), np.sign)
    return envs


class FireOnReset(gym.Wrapper):
    """Presses FIRE (then action 2) after each reset in games whose action 1 is FIRE, as ale-py's vector
    env does with ``use_fire_reset`` (openai/baselines ``FireResetEnv``). Observations unchanged."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        meanings = self.env.unwrapped.get_action_meanings()
        if len(meanings) < 3 or meanings[1] != "FIRE":
            return observation, info
        for action in (1, 2):
            observation, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                observation, info = self.env.reset(**kwargs)
        return observation, info


def _preprocess(env: gym.Env) -> gym.Env:
    env = gym.wrappers.AtariPreprocessing(env, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=FRAME_SIZE,
                                          terminal_on_life_loss=False, grayscale_obs=True)
    return gym.wrappers.FrameStackObservation(FireOnReset(env), FRAME_STACK)


def make_atari_env(environment_id: str, sticky_action_probability: float = 0.25,
                   render_mode: str | None = "rgb_array") -> gym.Env:
    """One (not vector) preprocessed game for videos: observations ``(4, 84, 84)`` uint8 like the vector
    env's, raw rewards, episodes ending at game over only, ``env.render()`` giving ``[210, 160, 3]`` RGB.

    Built from gymnasium's wrappers on ``gymnasium.make(id, frameskip=1)``: ``AtariPreprocessing`` (30 no-ops,
    frame skip 4 with max-pooling, 84x84 grayscale), :class:`FireOnReset`, ``FrameStackObservation(4)``.
    Resizing may differ from ale-py's C++ env by a grey level here and there.

    Raises:
        EnvironmentProblem: the id is not an ``ALE/<Game>-v5`` game, or the env cannot be built.
    """
    describe_atari_environment(environment_id)
    try:
        env = gym.make(environment_id, frameskip=1, repeat_action_probability=sticky_action_probability,
                       render_mode=render_mode)
    except Exception as error:  # noqa: BLE001
        raise _make_error(environment_id, error) from error
    return _preprocess(env)
