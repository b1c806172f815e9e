"""The videos of a training run (``--capture-video``): ``videos/before.gif`` of the untrained agent, and
``videos/after.gif``, ``videos/after.mp4`` and ``videos/before_after.gif`` of the trained one."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from videos.render import EnvFactory, Recording, record_episodes
from videos.writers import read_frames, write_gif, write_mp4, write_side_by_side_gif

VIDEO_DIR = "videos"
STAGES = ("before", "after")


def capture_training_videos(run_dir: str | os.PathLike, stage: str, environment_id: str, agent: nn.Module,
                            *, seed: int | None = None, env_factory: EnvFactory | None = None,
                            episodes: int = 1, deterministic: bool = True) -> tuple[list[Path], Recording]:
    """Record ``agent`` and write the videos of ``stage`` under ``run_dir/videos/``.

    ``"before"`` writes ``before.gif``; ``"after"`` writes ``after.gif``, ``after.mp4`` and, when a
    ``before.gif`` is there (also from the run's first part, before a resume), ``before_after.gif``. Use
    the same ``seed`` for both stages so that both start from the same initial state.

    Args:
        run_dir: the run directory.
        stage: ``"before"`` or ``"after"``.
        environment_id: the env to record.
        agent: a :class:`networks.ActorCritic`.
        seed: seed of the first reset.
        env_factory: see :func:`videos.render.record_episodes`.
        episodes: episodes to record, >= 1.
        deterministic: the policy's mode instead of samples.

    Returns:
        ``(paths written, the recording)``.

    Raises:
        ValueError: an unknown stage.
        EnvironmentProblem: the env cannot be built or rendered.
        OSError: a file cannot be written.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    directory = Path(run_dir) / VIDEO_DIR
    recording = record_episodes(environment_id, agent, episodes, deterministic=deterministic, seed=seed,
                                env_factory=env_factory)
    if stage == "before":
        return [write_gif(directory / "before.gif", recording.frames, recording.fps)], recording
    paths = [write_gif(directory / "after.gif", recording.frames, recording.fps),
             write_mp4(directory / "after.mp4", recording.frames, recording.fps)]
    before = directory / "before.gif"
    if before.is_file():
        paths.append(write_side_by_side_gif(directory / "before_after.gif", read_frames(before),
                                            recording.frames, recording.fps))
    return paths, recording
