"""What the entry scripts do with a policy besides training it: evaluate it, record it as a video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import UsageError
from ppo.checkpoint import load_checkpoint
from ppo.config import PPOConfig
from ppo.entry import EntryPoint, configure_torch, load_policy, select_device
from ppo.evaluation import evaluate_policy


def evaluate_agent(entry: EntryPoint, config: PPOConfig, agent: torch.nn.Module | None, episodes: int,
                   device: torch.device, seed_offset: int = 10_000) -> dict[str, Any]:
    """Play ``episodes`` episodes of ``agent`` (None: a uniformly random agent) on fresh evaluation envs of
    ``config``'s environment, deterministically (the policy's mode).

    Returns:
        ``{"mean_return", "std_return", "episodes"}``, returns in the units of the env's reward.
    """
    envs = entry.make_envs(config, min(episodes, 16), evaluation=True)
    try:
        returns = evaluate_policy(agent, envs, episodes, device, seed=config.seed + seed_offset)
    finally:
        envs.close()
    return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "episodes": episodes}


def run_evaluation(entry: EntryPoint, path: str, episodes: int | None, eval_random: bool,
                   use_gpu: bool = False) -> dict[str, Any]:
    """``--evaluate CHECKPOINT``: evaluate a checkpoint's policy on fresh envs of its environment.

    Returns ``{"mean_return", "std_return", "episodes"}`` (plus ``random_mean_return`` and
    ``random_std_return`` with ``eval_random``).

    Raises:
        UsageError: ``episodes`` given and not positive.
        CheckpointError: unreadable checkpoint, or one that does not fit its environment.
        EnvironmentProblem: the environment cannot be built.
    """
    if episodes is not None and episodes <= 0:
        raise UsageError(f"--eval-episodes must be a positive integer with --evaluate, got {episodes}")
    state = load_checkpoint(path)
    device = select_device(use_gpu)
    config, _info, agent = load_policy(entry, state, path, device)
    configure_torch(config)
    episodes = episodes or config.eval_episodes or PPOConfig.eval_episodes  # the run may have had none
    result = evaluate_agent(entry, config, agent, episodes, device)
    if eval_random:
        random_result = evaluate_agent(entry, config, None, episodes, device, seed_offset=20_000)
        result["random_mean_return"] = random_result["mean_return"]
        result["random_std_return"] = random_result["std_return"]
    return result


def _render_factory(entry: EntryPoint, config: PPOConfig) -> Any:
    if entry.make_render_env is None:
        return None
    return lambda _environment_id: entry.make_render_env(config)


def record_videos(entry: EntryPoint, config: PPOConfig, agent: torch.nn.Module, run_dir: Path, stage: str) -> None:
    """``--capture-video``: write ``videos/before.gif`` (stage "before") or the "after" videos of a run."""
    from videos import capture_training_videos  # lazily: imageio and cv2 only when videos are wanted
    paths, recording = capture_training_videos(run_dir, stage, config.environment_id, agent,
                                               seed=config.seed + 30_000, env_factory=_render_factory(entry, config))
    returns = ", ".join(f"{value:.2f}" for value in recording.returns)
    print(f"Video ({stage} training, return {returns}): {', '.join(str(path) for path in paths)}")


def record_checkpoint(entry: EntryPoint, path: str, output: str, episodes: int = 1, stochastic: bool = False,
                      random_agent: bool = False) -> dict[str, Any]:
    """``--record CHECKPOINT --output FILE``: record a checkpoint's policy (or a random agent on its
    environment) for ``episodes`` episodes and write a GIF or MP4, chosen by the suffix of ``output``.

    Returns:
        ``{"path", "returns", "mean_return", "episodes"}``; returns in the units of the env's reward.

    Raises:
        UsageError: ``output`` missing, not ``.gif``/``.mp4`` or not writable; ``episodes < 1``.
        CheckpointError: the checkpoint is missing, unreadable or does not fit its environment.
        EnvironmentProblem: the environment cannot be built or rendered.
    """
    if output is None or Path(output).suffix.lower() not in (".gif", ".mp4"):
        raise UsageError(f"--record needs --output FILE.gif or FILE.mp4, got {output!r}")
    if episodes < 1:
        raise UsageError(f"--record-episodes must be a positive integer, got {episodes}")
    if stochastic and random_agent:
        raise UsageError("--stochastic and --eval-random cannot be combined with --record")
    from videos.render import record_episodes  # lazily: imageio and cv2 only when videos are wanted
    from videos.writers import write_video
    try:  # fail before the (slow) recording rather than after it
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot write '{output}' ({error.strerror or error}); choose another --output") from error
    config, _info, agent = load_policy(entry, load_checkpoint(path), path)
    recording = record_episodes(config.environment_id, None if random_agent else agent, episodes,
                                deterministic=not stochastic, seed=config.seed + 30_000,
                                env_factory=_render_factory(entry, config))
    try:
        written = write_video(output, recording.frames, recording.fps)
    except OSError as error:
        raise UsageError(f"cannot write '{output}' ({error.strerror or error}); choose another --output") from error
    return {"path": str(written), "returns": recording.returns,
            "mean_return": sum(recording.returns) / len(recording.returns), "episodes": episodes}
