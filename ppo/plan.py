"""What a training run starts from: the config resolved from defaults, presets and flags (or a checkpoint's, for
a resume), and the header lines that say what will run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from common.errors import UsageError
from ppo.checkpoint import load_checkpoint
from ppo.config import PPOConfig, resolve_config
from ppo.entry import EntryPoint, check_checkpoint, check_spaces
from ppo.presets import presets_for

# Flags a resumed run may change: the budget and how it runs, not what it computes.
RESUME_FLAGS = {"total_timesteps", "num_threads", "progress", "checkpoint_interval", "use_gpu", "capture_video",
                "compile", "learner"}


@dataclasses.dataclass
class RunPlan:
    """What a run starts from: its config, environment info, the lines saying where the values came from,
    and, for a resume, the checkpoint's state, path and run directory."""

    config: PPOConfig
    info: Any
    sources: list[str]
    resume_state: dict[str, Any] | None = None
    resume_path: str | None = None
    resume_dir: Path | None = None


def plan_run(entry: EntryPoint, explicit: dict[str, Any], resume: str | None = None) -> RunPlan:
    """The config of a new run (base defaults, then presets, then ``explicit`` flags), or of a resumed one
    (the checkpoint's, with only :data:`RESUME_FLAGS` changed).

    Raises:
        UsageError: invalid values, or flags a resume cannot change.
        CheckpointError: the checkpoint cannot be read or does not fit its environment.
        EnvironmentProblem: the environment is unknown or cannot be built.
    """
    if resume is None:
        environment_id = explicit.get("environment_id", entry.default_environment_id)
        info = entry.describe(environment_id)
        presets = [values for _, values in presets_for(environment_id, info.family)]
        config = resolve_config({"environment_id": environment_id, **explicit}, *presets)
        sources = [f"preset: {source}" for source, _ in presets_for(environment_id, info.family)]
        return RunPlan(config, info, sources + _size_changes(environment_id, explicit, presets, config))
    state = load_checkpoint(resume)
    saved = check_checkpoint(state, entry, resume)
    changed = sorted(key for key, value in explicit.items() if key not in RESUME_FLAGS and getattr(saved, key) != value)
    if changed:
        raise UsageError(f"--resume keeps the checkpoint's hyperparameters; remove "
                         f"{', '.join('--' + key.replace('_', '-') for key in changed)}")
    config = dataclasses.replace(saved, **{k: v for k, v in explicit.items() if k in RESUME_FLAGS})
    info = entry.describe(config.environment_id)
    check_spaces(state, info, resume)
    saved_steps = int(state["global_step"]) * int(state.get("world_size", 1))  # all ranks'
    return RunPlan(config, info, [f"resumed from {resume} at step {saved_steps}"], state, resume,
                   Path(resume).resolve().parent.parent)


def _size_changes(environment_id: str, explicit: dict[str, Any], presets: list[dict[str, Any]],
                  config: PPOConfig) -> list[str]:
    """One line for each rollout or minibatch size that typed flags changed from what the presets chose."""
    sizes = ("num_envs", "num_steps_collected", "num_mini_batches")
    typed = [key for key in sizes if key in explicit]
    if not typed:
        return []
    try:
        preset = resolve_config({"environment_id": environment_id}, *presets)
    except UsageError:
        return []
    flags = " ".join(f"--{key.replace('_', '-')} {explicit[key]}" for key in typed)
    lines = []
    if preset.batch_size != config.batch_size:
        lines.append(f"{flags} changes the preset's rollout from {preset.batch_size} to {config.batch_size} "
                     "transitions")
    if preset.minibatch_size != config.minibatch_size:
        keep = config.batch_size // preset.minibatch_size
        hint = (f" (--num-mini-batches {keep} keeps {preset.minibatch_size})"
                if "num_mini_batches" not in explicit and keep * preset.minibatch_size == config.batch_size else "")
        lines.append(f"{flags} changes the preset's minibatch size from {preset.minibatch_size} to "
                     f"{config.minibatch_size}{hint}")
    return lines


def header_lines(config: PPOConfig, device: torch.device) -> list[str]:
    """What will run, after every preset and flag: the rollout, minibatch and epoch sizes and the steps, with
    the rounding to whole rollouts named when ``total_timesteps`` is not a multiple of the rollout."""
    minibatches = f"{config.num_mini_batches} minibatch{'es' if config.num_mini_batches != 1 else ''}"
    lines = [f"{config.environment_id}: {config.num_envs} envs x {config.num_steps_collected} steps = rollouts of "
             f"{config.batch_size}, {minibatches} of {config.minibatch_size}, {config.num_epochs} epochs, "
             f"{config.num_iterations * config.batch_size} steps on {device}"]
    if config.num_iterations * config.batch_size != config.total_timesteps:
        lines.append(f"--total-timesteps {config.total_timesteps} is not a whole number of rollouts of "
                     f"{config.batch_size}: training {config.num_iterations} rollouts = "
                     f"{config.num_iterations * config.batch_size} steps")
    return lines
