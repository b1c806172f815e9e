"""Render a policy (or a random agent) to RGB frames with the episode return written on them.

Size of a recording, chosen so that a video of a 1000-step MuJoCo episode stays small:

- **Frames per episode** are capped at ``max_frames`` (default 200): only every ``stride``-th step is
  rendered, with ``stride = ceil(L / (max_frames - 1))`` taken from the length ``L`` of the longest recorded
  episode, so a short episode keeps every frame (an untrained InvertedPendulum falls in about 30 steps: 31
  frames) and a 1000-step MuJoCo episode keeps every 6th. The frame after the reset and the last frame of
  every episode are always kept, so an episode of ``L`` steps gives ``1 + ceil(L / stride)`` frames. The
  length is known before the first frame is rendered: each episode is played once without rendering (the
  policy's actions are kept), then replayed from the same reset seed with those actions, rendering only
  the frames that are kept. Episodes without a time limit are cut after 27,000 steps.
- **Frame size**: the longer side is scaled down to ``max_size`` pixels (default 320), both sides even
  (H.264 needs even sizes). MuJoCo envs are rendered at ``max_size`` x ``max_size`` directly, which is
  also what makes software rendering (EGL without a GPU: about 65 ms a frame for HalfCheetah on 2 cores)
  affordable; they use the model's ``track`` camera, which follows a running body.
- **Playback rate**: ``fps = clamp(render_fps / stride, 10, 50)``: real time when that gives at least 10
  frames per second, faster otherwise; never above 50, the fastest rate GIF viewers honour.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

from wrappers.quiet import headless_gl_default

# headless MuJoCo rendering (EGL) when there is no display; read when a render context is made
if headless_gl_default() is None:
    os.environ.setdefault("MUJOCO_GL", "egl")
# pygame (classic control, Box2D) draws rgb_array frames off screen; without a display its default video
# driver prints "XDG_RUNTIME_DIR is invalid" on stderr.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import cv2
import gymnasium as gym
import numpy as np
import torch
from torch import nn

from common.errors import EnvironmentProblem

DEFAULT_MAX_FRAMES = 200
DEFAULT_MAX_SIZE = 320
# Episodes of envs without a time limit are cut here (Atari's usual 108k frames at frame skip 4).
FALLBACK_MAX_EPISODE_STEPS = 27_000
MIN_FPS, MAX_FPS = 10.0, 50.0

EnvFactory = Callable[[str], gym.Env]


@dataclass
class Recording:
    """Frames and returns of recorded episodes.

    Attributes:
        frames: ``[H, W, 3]`` uint8 RGB images, all of one size, episodes one after another.
        returns: undiscounted return of each episode, in the units of the environment's reward.
        lengths: environment steps of each episode.
        fps: suggested playback rate in frames per second (see the module docstring).
        stride: environment steps between two rendered frames, from the longest episode's length.
    """

    frames: list[np.ndarray] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    fps: float = 30.0
    stride: int = 1


def _is_mujoco(environment_id: str) -> bool:
    try:
        entry_point = gym.spec(environment_id).entry_point
    except gym.error.Error:
        return False
    return isinstance(entry_point, str) and entry_point.startswith("gymnasium.envs.mujoco")


def make_render_env(environment_id: str, max_size: int = DEFAULT_MAX_SIZE) -> gym.Env:
    """One (not vector) env of ``environment_id`` with ``render_mode="rgb_array"``, for videos.

    ``gymnasium.make(environment_id, render_mode="rgb_array")``, with ``FlattenObservation`` for Dict
    observations (DM Control) so observations match what the agent was trained on. MuJoCo envs are asked
    for ``max_size`` x ``max_size`` images from the model's ``track`` camera, which follows the body. No
    reward scaling and no action clipping: raw rewards come back, and :func:`record_episodes` clips Box
    actions itself.

    Raises:
        EnvironmentProblem: unknown id, missing package, or an env that fails to build.
    """
    from wrappers.vector import environment_spec

    environment_spec(environment_id)  # registers ALE/ and dm_control/ namespaces; unknown id -> one line
    kwargs: dict[str, object] = {}
    if _is_mujoco(environment_id):
        # gymnasium 1.4 renders MuJoCo through a free camera that stays where the episode started, so a
        # running Hopper or HalfCheetah leaves the picture; the models' own "track" camera follows the
        # body (models without one fall back to the free camera).
        kwargs = {"width": max_size, "height": max_size, "camera_name": "track"}
    try:
        try:
            env = gym.make(environment_id, render_mode="rgb_array", **kwargs)
        except TypeError:  # an env class that takes no camera_name
            kwargs.pop("camera_name", None)
            env = gym.make(environment_id, render_mode="rgb_array", **kwargs)
    except Exception as error:  # noqa: BLE001 - third-party env code may raise anything
        raise EnvironmentProblem(f"could not create {environment_id} for rendering: "
                                 f"{type(error).__name__}: {error}") from error
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = gym.wrappers.FlattenObservation(env)
    return env


def resize_frame(frame: np.ndarray, max_size: int = DEFAULT_MAX_SIZE) -> np.ndarray:
    """Scale ``[H, W, 3]`` uint8 so that its longer side is at most ``max_size``, both sides even.

    Grayscale ``[H, W]`` and RGBA frames are converted to RGB.
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    frame = frame[:, :, :3].astype(np.uint8, copy=False)
    height, width = frame.shape[:2]
    scale = min(1.0, max_size / max(height, width))
    new_height = max(2, int(round(height * scale / 2)) * 2)
    new_width = max(2, int(round(width * scale / 2)) * 2)
    if (new_height, new_width) == (height, width):
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, (new_width, new_height), interpolation=cv2.INTER_AREA)


def put_label(frame: np.ndarray, text: str, corner: str = "top") -> np.ndarray:
    """Write ``text`` on a copy of ``frame`` ``[H, W, 3]`` uint8: white on a dark band, so it reads on any
    background and survives GIF palettes; ``corner`` is ``"top"`` (top left) or ``"bottom"`` (bottom left)."""
    frame = frame.copy()
    height, width = frame.shape[:2]
    scale = max(0.4, width / 640)
    thickness = 1 if scale < 0.8 else 2
    (text_width, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(3, int(round(5 * scale)))
    band_height = text_height + baseline + 2 * margin
    top = 0 if corner == "top" else height - band_height
    band = frame[top:top + band_height, : text_width + 2 * margin]
    band[:] = (band.astype(np.uint16) * 3 // 10).astype(np.uint8)  # darken to 30 %
    cv2.putText(frame, text, (margin, top + margin + text_height), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return frame


def _policy(agent: nn.Module | None, env: gym.Env, deterministic: bool) -> Callable[[np.ndarray], object]:
    """observation -> action for ``env.step``: the agent's (Box actions clipped to the bounds) or random."""
    space = env.action_space
    if agent is None:
        return lambda _observation: space.sample()
    device = next(agent.parameters()).device
    low = high = None
    if isinstance(space, gym.spaces.Box):
        low, high = space.low, space.high

    def act(observation: np.ndarray) -> object:
        observation = np.asarray(observation)
        dtype = torch.uint8 if observation.dtype == np.uint8 else torch.float32
        batch = torch.as_tensor(observation, dtype=dtype, device=device).unsqueeze(0)  # [1, *obs_shape]
        with torch.inference_mode():
            action = agent.act(batch, deterministic)[0].cpu().numpy()
        if low is not None:
            return np.clip(action, low, high).astype(space.dtype)
        return int(action) if action.ndim == 0 else action

    return act


def _render(env: gym.Env, max_size: int, environment_id: str) -> np.ndarray:
    try:
        frame = env.render()
    except Exception as error:  # noqa: BLE001 - OpenGL/EGL failures come as many exception types
        hint = " (headless MuJoCo needs MUJOCO_GL=egl and EGL libraries)" if _is_mujoco(environment_id) else ""
        raise EnvironmentProblem(f"cannot render {environment_id}{hint}: {type(error).__name__}: "
                                 f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}") from error
    if frame is None:
        raise EnvironmentProblem(f"{environment_id} rendered nothing: its env was not made with "
                                 "render_mode='rgb_array'")
    return resize_frame(frame, max_size)


def _play(env: gym.Env, policy: Callable[[np.ndarray], object], seed: int, max_steps: int) -> list[object]:
    """Play one episode from ``env.reset(seed=seed)`` without rendering; returns the actions taken (at most
    ``max_steps``)."""
    observation, _ = env.reset(seed=seed)
    actions = []
    done = False
    while not done:
        action = policy(observation)
        observation, _, terminated, truncated, _ = env.step(action)
        actions.append(action)
        done = terminated or truncated or len(actions) >= max_steps
    return actions


def record_episodes(environment_id: str, agent: nn.Module | None = None, episodes: int = 1, *,
                    deterministic: bool = True, seed: int | None = None,
                    env_factory: EnvFactory | None = None, max_frames: int = DEFAULT_MAX_FRAMES,
                    max_size: int = DEFAULT_MAX_SIZE) -> Recording:
    """Run ``agent`` (or a uniformly random agent) for ``episodes`` episodes and keep rendered frames.

    Every frame carries ``"episode i  return R"`` in its top left corner, R being the return so far (the
    episode's full return on its last frame). Observation normalization is inside the agent and frozen
    here (the agent is put in eval mode and restored afterwards).

    Args:
        environment_id: the gymnasium id, passed to ``env_factory``.
        agent: a :class:`networks.ActorCritic` whose ``act(observations [1, *obs_shape], deterministic)``
            returns actions ``[1]`` (Discrete) or ``[1, d]`` (Box); None records a random agent.
        episodes: number of episodes, >= 1.
        deterministic: the policy's mode (argmax / Gaussian mean) instead of sampling.
        seed: seed of the first episode's reset (episode ``i``: ``seed + i - 1``) and of the random agent's
            action space; None: random seeds.
        env_factory: ``environment_id -> gymnasium.Env`` with ``render_mode="rgb_array"``; default
            :func:`make_render_env`. Atari (or any other family) plugs in its own maker here. The env is
            closed at the end.
        max_frames: frames kept per episode at most, >= 2 (see the module docstring).
        max_size: longer side of the frames in pixels.

    Returns:
        A :class:`Recording` with ``[H, W, 3]`` uint8 frames.

    Raises:
        ValueError: ``episodes < 1`` or ``max_frames < 2``.
        EnvironmentProblem: the env cannot be built or rendered.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2, got {max_frames}")
    env = (env_factory or make_render_env)(environment_id)
    was_training = agent.training if agent is not None else False
    try:
        if agent is not None:
            agent.eval()
        max_steps = (env.spec.max_episode_steps if env.spec is not None else None) or FALLBACK_MAX_EPISODE_STEPS
        policy = _policy(agent, env, deterministic)
        if seed is not None:
            env.action_space.seed(seed)
        # Each episode from its own reset seed, so that it can be replayed: played first without rendering,
        # which gives its length and so the stride, then replayed with the same actions, rendering.
        seeds = ([seed + index for index in range(episodes)] if seed is not None else
                 [int(value) for value in np.random.default_rng().integers(2**31 - 1, size=episodes)])
        played = [_play(env, policy, episode_seed, max_steps) for episode_seed in seeds]
        stride = max(1, math.ceil(max(len(actions) for actions in played) / (max_frames - 1)))
        render_fps = float(env.metadata.get("render_fps") or 30)
        recording = Recording(fps=min(MAX_FPS, max(MIN_FPS, render_fps / stride)), stride=stride)
        for episode, (episode_seed, actions) in enumerate(zip(seeds, played), start=1):
            env.reset(seed=episode_seed)
            episode_return, steps = 0.0, 0
            frames = [put_label(_render(env, max_size, environment_id), f"episode {episode}  return 0.0")]
            for action in actions:  # the env is deterministic given the seed and the actions
                _, reward, terminated, truncated, _ = env.step(action)
                episode_return += float(reward)
                steps += 1
                done = terminated or truncated or steps == len(actions)
                if done or steps % stride == 0:
                    frames.append(put_label(_render(env, max_size, environment_id),
                                            f"episode {episode}  return {episode_return:.1f}"))
                if done:  # earlier than the first play only if the env is not deterministic
                    break
            recording.frames.extend(frames)
            recording.returns.append(episode_return)
            recording.lengths.append(steps)
        return recording
    finally:
        if agent is not None:
            agent.train(was_training)
        env.close()
