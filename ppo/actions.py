"""What the entry scripts do with a policy besides training it: evaluate it, record it as a video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dataclasses
import time

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
    ``config``'s environment, with ``config.eval_policy``'s actions (the policy's mode, or samples).

    Returns:
        ``{"mean_return", "std_return", "episodes", "policy", "seconds"}``, returns in the units of the env's
        reward, ``policy`` "mode", "sample" or "random", ``seconds`` the wall time of the evaluation.
    """
    started = time.perf_counter()
    envs = entry.make_envs(config, min(episodes, 16), evaluation=True)
    try:
        returns = evaluate_policy(agent, envs, episodes, device, seed=config.seed + seed_offset,
                                  deterministic=config.eval_policy == "mode")
    finally:
        envs.close()
    return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "episodes": episodes,
            "policy": "random" if agent is None else config.eval_policy,
            "seconds": round(time.perf_counter() - started, 3)}


def describe_evaluation(result: dict[str, Any]) -> str:
    """One line for an :func:`evaluate_agent` result: "policy mode: 475.20 +- 3.10 over 10 episodes (2.1 s)"."""
    episodes = result["episodes"]
    return (f"policy {result['policy']}: {result['mean_return']:.2f} +- {result['std_return']:.2f} over {episodes} "
            f"episode{'s' if episodes != 1 else ''} ({result['seconds']:.1f} s)")


def run_evaluation(entry: EntryPoint, path: str, episodes: int | None, eval_random: bool,
                   use_gpu: bool = False, eval_policy: str | None = None) -> dict[str, Any]:
    """``--evaluate CHECKPOINT``: evaluate a checkpoint's policy on fresh envs of its environment, with
    ``eval_policy`` or else the run's own ``eval_policy``.

    Returns :func:`evaluate_agent`'s result (plus ``random_mean_return`` and ``random_std_return`` with
    ``eval_random``).

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
    if eval_policy is not None:
        config = dataclasses.replace(config, eval_policy=eval_policy)
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
                                               seed=config.seed + 30_000, env_factory=_render_factory(entry, config),
                                               deterministic=config.eval_policy == "mode")
    returns = ", ".join(f"{value:.2f}" for value in recording.returns)
    print(f"Video ({stage} training, return {returns}): {', '.join(str(path) for path in paths)}")


def record_checkpoint(entry: EntryPoint, path: str, output: str, episodes: int = 1, random_agent: bool = False,
                      eval_policy: str | None = None) -> dict[str, Any]:
    """``--record CHECKPOINT --output FILE``: record a checkpoint's policy (its mode or samples: ``eval_policy``,
    or else the run's own) or a random agent on its environment, for ``episodes`` episodes, and write a GIF or
    MP4, chosen by the suffix of ``output``.

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
    if eval_policy is not None and random_agent:
        raise UsageError("--eval-policy and --eval-random cannot be combined with --record")
    from videos.render import record_episodes  # lazily: imageio and cv2 only when videos are wanted
    from videos.writers import write_video
    try:  # fail before the (slow) recording rather than after it
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot write '{output}' ({error.strerror or error}); choose another --output") from error
    config, _info, agent = load_policy(entry, load_checkpoint(path), path)
    recording = record_episodes(config.environment_id, None if random_agent else agent, episodes,
                                deterministic=(eval_policy or config.eval_policy) == "mode", seed=config.seed + 30_000,
                                env_factory=_render_factory(entry, config))
    try:
        written = write_video(output, recording.frames, recording.fps)
    except OSError as error:
        raise UsageError(f"cannot write '{output}' ({error.strerror or error}); choose another --output") from error
    return {"path": str(written), "returns": recording.returns,
            "mean_return": sum(recording.returns) / len(recording.returns), "episodes": episodes}
