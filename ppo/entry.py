"""What an entry script (``main.py``, ``main_atari.py``) tells the run about itself, and what every action on a
checkpoint needs: rebuilding its policy, choosing the device, configuring torch."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import threadpoolctl
import torch

from common.errors import CheckpointError, UsageError
from ppo.config import PPOConfig, config_from_dict


@dataclass(frozen=True)
class EntryPoint:
    """What differs between ``main.py`` and ``main_atari.py``.

    Attributes:
        name: stored in checkpoints ("main" or "atari"); a checkpoint is only evaluated by its own entry.
        script: the script's file name, for messages.
        description: the ``--help`` text.
        default_environment_id: used when ``--environment-id`` is not given.
        describe: env id -> ``wrappers.EnvironmentInfo``; raises EnvironmentProblem for ids this entry
            does not support (naming the other script).
        make_envs: ``(config, num_envs, evaluation, render_mode)`` -> vector env. Evaluation envs get no
            reward scaling (and for Atari, no life-loss episode ends).
        make_agent: ``(config, info)`` -> ``networks.ActorCritic``.
        env_state: ``(get(envs), set(envs, state))`` for env-side statistics in checkpoints, or None.
        check_config: ``config`` -> None; raises UsageError for flags this entry cannot honour (run
            before any work).
        make_render_env: ``config`` -> one (not vector) ``gymnasium.Env`` with ``render_mode="rgb_array"``
            for videos (``--capture-video``, ``python -m videos``), or None for ``videos.make_render_env``.
    """

    name: str
    script: str
    description: str
    default_environment_id: str
    describe: Callable[[str], Any]
    make_envs: Callable[..., Any]
    make_agent: Callable[[PPOConfig, Any], torch.nn.Module]
    env_state: tuple[Callable[[Any], Any], Callable[[Any, Any], None]] | None = None
    make_render_env: Callable[[PPOConfig], Any] | None = None
    check_config: Callable[[PPOConfig], None] | None = None


def select_device(use_gpu: bool) -> torch.device:
    """``cuda`` when asked for, else ``cpu``.

    Raises:
        UsageError: ``use_gpu`` without a CUDA device.
    """
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("--use-gpu was given but no CUDA device is available; drop --use-gpu to train on the CPU")
    return torch.device("cuda")


def configure_torch(config: PPOConfig) -> None:
    """Thread counts (torch's and numpy's BLAS) and determinism settings."""
    # One thread is fastest for the small networks of PPO on a few cores (per-op overhead dominates and
    # env workers need the other cores); 0 picks that, a positive value overrides it. numpy's BLAS runs the
    # MLP's rollouts and gradient (ppo/mlp_gradient.py): with its default of one thread per core, a
    # 128-sample minibatch of CartPole took several times longer on a busy machine than with one.
    threads = config.num_threads or 1
    torch.set_num_threads(threads)
    threadpoolctl.threadpool_limits(threads, user_api="blas")
    if config.deterministic_torch:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if not config.compile:
        skip_dynamo_import()


# Methods of torch.optim.Optimizer that torch wraps with ``torch._disable_dynamo`` (torch/_compile.py), so that
# TorchDynamo does not trace into them. The wrapper imports torch._dynamo on its first call and caches the
# disabled function on the wrapped one as ``__dynamo_disable``: creating an Adam optimizer thus imports all of
# TorchDynamo (about 1 s, a fifth of a 100k-step CartPole command) even when nothing is ever compiled.
DYNAMO_DISABLED_OPTIMIZER_METHODS = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")


def skip_dynamo_import() -> None:
    """Let torch.optim's optimizers run without importing torch._dynamo, for runs that compile nothing.

    Fills the cache of torch's ``_disable_dynamo`` wrapper of each method in
    :data:`DYNAMO_DISABLED_OPTIMIZER_METHODS` with the method itself, which is what the disabled function
    calls when no TorchDynamo frame is active. Call it only when nothing is compiled (``--compile`` imports
    TorchDynamo anyway and keeps torch's wrappers); does nothing once torch._dynamo is imported, and nothing
    for a method that has no such wrapper (another torch version). The optimizer's arithmetic is unchanged.
    ``Optimizer.step`` still imports torch._dynamo on its first call: learners that step a torch optimizer
    (torch, cuda-graph, numpy for large networks) pay it then, the numpy learner of small MLPs never.
    """
    if "torch._dynamo" in sys.modules:
        return
    for name in DYNAMO_DISABLED_OPTIMIZER_METHODS:
        method = getattr(torch.optim.Optimizer, name, None)
        wrapped = getattr(method, "__wrapped__", None)
        if wrapped is not None and getattr(wrapped, "__dynamo_disable", None) is None:
            setattr(wrapped, "__dynamo_disable", wrapped)


def space_metadata(info: Any) -> dict[str, Any]:
    action_space = info.action_space
    return {"environment_id": info.environment_id,
            "observation_shape": list(info.observation_space.shape),
            "observation_dtype": str(info.observation_space.dtype),
            "action_shape": list(action_space.shape),
            "action_n": int(getattr(action_space, "n", 0))}


def check_checkpoint(state: dict[str, Any], entry: EntryPoint, path: str) -> PPOConfig:
    if state.get("entry") != entry.name:
        other = "main_atari.py" if state.get("entry") == "atari" else "main.py"
        raise CheckpointError(f"checkpoint '{path}' was written by {other}; use {other} with it")
    try:
        return config_from_dict(state["config"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint '{path}' has no readable config") from error


def load_agent_state(agent: torch.nn.Module, state: dict[str, Any], path: str) -> None:
    try:
        agent.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint '{path}' does not fit this network/environment "
                              f"(different observation or action spaces, or network flags)") from error


def check_spaces(state: dict[str, Any], info: Any, path: str) -> None:
    expected = space_metadata(info)
    for key in ("observation_shape", "action_shape", "action_n"):
        if key in state and state[key] != expected[key]:
            raise CheckpointError(f"checkpoint '{path}' was trained with {key} {state[key]}, but "
                                  f"{info.environment_id} has {expected[key]}")


def load_policy(entry: EntryPoint, state: dict[str, Any], path: str,
                device: torch.device | None = None) -> tuple[PPOConfig, Any, torch.nn.Module]:
    """Rebuild the agent of a loaded checkpoint ``state`` (from :func:`load_checkpoint` of ``path``).

    Returns:
        ``(config, environment info, agent)``, the agent on ``device`` (default CPU) with its weights and
        observation statistics.

    Raises:
        CheckpointError: the checkpoint belongs to another entry point or does not fit its environment.
        EnvironmentProblem: the environment cannot be built.
    """
    config = check_checkpoint(state, entry, path)
    info = entry.describe(config.environment_id)
    check_spaces(state, info, path)
    agent = entry.make_agent(config, info).to(device or torch.device("cpu"))
    load_agent_state(agent, state, path)
    return config, info, agent
