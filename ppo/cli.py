"""The command line shared by ``main.py`` and ``main_atari.py``: flags -> config -> envs -> agent -> Trainer.

Each entry script describes itself with an :class:`EntryPoint` (how to check an env id, build its vector
envs and its network); everything else, from parsing to the run directory, checkpoints and evaluation,
is this one module. Errors the user can fix end the program with one line on stderr and the exit codes of
:mod:`ppo.errors`; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import threadpoolctl
import torch

from ppo.checkpoint import load_checkpoint
from ppo.config import PPOConfig, add_config_arguments, config_from_dict, resolve_config
from ppo.distributed import DistributedContext, init_from_environment
from ppo.errors import EXIT_INTERRUPTED, CheckpointError, NumericalError, PPOError, UsageError
from ppo.evaluation import evaluate_policy
from ppo.presets import describe_presets, presets_for, published_result
from ppo.recorder import RunRecorder
from ppo.trainer import Trainer, seed_rngs


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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage plus message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser(entry: EntryPoint) -> argparse.ArgumentParser:
    """The full parser: every :class:`PPOConfig` field plus the actions (evaluate, resume, presets)."""
    parser = _Parser(prog=entry.script, description=entry.description + " Values: base defaults, then the "
                     "presets for the environment (--list-presets), then the flags given.")
    add_config_arguments(parser)
    actions = parser.add_argument_group("Actions")
    actions.add_argument("--evaluate", metavar="CHECKPOINT", help="evaluate a saved policy deterministically "
                         "on fresh envs and print JSON {mean_return, std_return, episodes} as the last line")
    actions.add_argument("--eval-random", action="store_true", help="with --evaluate: also report a uniformly "
                         "random agent's return on the same envs")
    actions.add_argument("--resume", metavar="CHECKPOINT", help="continue the run of this checkpoint in its "
                         "run directory")
    actions.add_argument("--list-presets", action="store_true", help="print the tuned presets and exit")
    actions.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


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


def _space_metadata(info: Any) -> dict[str, Any]:
    action_space = info.action_space
    return {"environment_id": info.environment_id,
            "observation_shape": list(info.observation_space.shape),
            "observation_dtype": str(info.observation_space.dtype),
            "action_shape": list(action_space.shape),
            "action_n": int(getattr(action_space, "n", 0))}


def _prepare_run_dir(config: PPOConfig, resume_dir: Path | None) -> Path:
    if resume_dir is not None:
        # Temporary files of a checkpoint write cut short by kill -9 (the checkpoint itself is intact).
        for stale in (resume_dir / "checkpoints").glob(".*.tmp.*"):
            stale.unlink(missing_ok=True)
        return resume_dir
    name = config.run_name or (f"{config.environment_id.replace('/', '_')}__{config.seed}__"
                               f"{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir = Path(config.output_dir) / name
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write the run directory '{run_dir}' ({error.strerror}); choose another "
                         "--output-dir") from error
    return run_dir


def _check_checkpoint(state: dict[str, Any], entry: EntryPoint, path: str) -> PPOConfig:
    if state.get("entry") != entry.name:
        other = "main_atari.py" if state.get("entry") == "atari" else "main.py"
        raise CheckpointError(f"checkpoint '{path}' was written by {other}; use {other} with it")
    try:
        return config_from_dict(state["config"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint '{path}' has no readable config") from error


def _load_agent_state(agent: torch.nn.Module, state: dict[str, Any], path: str) -> None:
    try:
        agent.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint '{path}' does not fit this network/environment "
                              f"(different observation or action spaces, or network flags)") from error


def _check_spaces(state: dict[str, Any], info: Any, path: str) -> None:
    expected = _space_metadata(info)
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
    config = _check_checkpoint(state, entry, path)
    info = entry.describe(config.environment_id)
    _check_spaces(state, info, path)
    agent = entry.make_agent(config, info).to(device or torch.device("cpu"))
    _load_agent_state(agent, state, path)
    return config, info, agent


def _record_run_videos(entry: EntryPoint, config: PPOConfig, agent: torch.nn.Module, run_dir: Path,
                       stage: str) -> None:
    """``--capture-video``: write ``videos/before.gif`` (stage "before") or the "after" videos."""
    from videos import capture_training_videos  # lazily: imageio and cv2 only when videos are wanted
    factory = None
    if entry.make_render_env is not None:
        def factory(_environment_id: str) -> Any:
            return entry.make_render_env(config)
    paths, recording = capture_training_videos(run_dir, stage, config.environment_id, agent,
                                               seed=config.seed + 30_000, env_factory=factory)
    returns = ", ".join(f"{value:.2f}" for value in recording.returns)
    print(f"Video ({stage} training, return {returns}): {', '.join(str(path) for path in paths)}")


def _learning_curve_writer(run_dir: Path, finished: Callable[[], bool],
                           min_interval_s: float = 60.0) -> Callable[[Path], None]:
    """A :attr:`Trainer.on_checkpoint` hook that redraws ``learning_curve.png`` when episodes.csv changed:
    during training at most once per ``min_interval_s`` seconds (a plot costs tenths of a second, which
    short runs would feel), and always once ``finished()`` (the run ended or was interrupted)."""
    last_stamp: tuple[int, int] | None = None
    written = False
    last_time = time.monotonic()

    def write(_checkpoint: Path) -> None:
        nonlocal last_stamp, written, last_time
        if not finished() and time.monotonic() - last_time < min_interval_s:
            return
        episodes = run_dir / "episodes.csv"
        stamp = (episodes.stat().st_size, episodes.stat().st_mtime_ns) if episodes.exists() else None
        if written and stamp == last_stamp:
            return
        last_time = time.monotonic()
        from videos.curves import plot_learning_curve  # lazily: matplotlib stays off the training path
        try:
            plot_learning_curve(run_dir)
        except (OSError, ValueError, RuntimeError) as error:  # a missing plot must not end a training run
            print(f"warning: could not write learning_curve.png: {error}", file=sys.stderr)
        last_stamp, written = stamp, True

    return write


def run_evaluation(entry: EntryPoint, path: str, episodes: int | None, eval_random: bool,
                   use_gpu: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint's policy deterministically on fresh envs of its environment.

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
    config, info, agent = load_policy(entry, state, path, device)
    configure_torch(config)
    episodes = episodes or config.eval_episodes or PPOConfig.eval_episodes  # the run may have had none
    result = _evaluate(entry, config, agent, info, episodes, device)
    if eval_random:
        envs = entry.make_envs(config, min(episodes, 16), evaluation=True)
        try:
            random_returns = evaluate_policy(None, envs, episodes, device, seed=config.seed + 20_000)
        finally:
            envs.close()
        result["random_mean_return"] = float(np.mean(random_returns))
        result["random_std_return"] = float(np.std(random_returns))
    return result


def _evaluate(entry: EntryPoint, config: PPOConfig, agent: torch.nn.Module, info: Any, episodes: int,
              device: torch.device) -> dict[str, Any]:
    envs = entry.make_envs(config, min(episodes, 16), evaluation=True)
    try:
        returns = evaluate_policy(agent, envs, episodes, device, seed=config.seed + 10_000)
    finally:
        envs.close()
    return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "episodes": episodes}


def run_training(entry: EntryPoint, explicit: dict[str, Any], resume: str | None = None) -> int:
    """Train from flags (or resume a checkpoint) and write the run directory. Returns the exit code."""
    resume_state = None
    resume_dir = None
    if resume is not None:
        resume_state = load_checkpoint(resume)
        saved = _check_checkpoint(resume_state, entry, resume)
        # A resumed run keeps its saved hyperparameters; flags may only extend the budget or change
        # how it runs (threads, progress bar, checkpoint interval).
        allowed = {"total_timesteps", "num_threads", "progress", "checkpoint_interval", "use_gpu",
                   "capture_video", "compile"}
        changed = sorted(key for key, value in explicit.items()
                         if key not in allowed and getattr(saved, key) != value)
        if changed:
            raise UsageError(f"--resume keeps the checkpoint's hyperparameters; remove "
                             f"{', '.join('--' + key.replace('_', '-') for key in changed)}")
        config = dataclasses.replace(saved, **{k: v for k, v in explicit.items() if k in allowed})
        resume_dir = Path(resume).resolve().parent.parent
        saved_steps = int(resume_state["global_step"]) * int(resume_state.get("world_size", 1))  # all ranks'
        sources: list[str] = [f"resumed from {resume} at step {saved_steps}"]
        info = entry.describe(config.environment_id)
        _check_spaces(resume_state, info, resume)
    else:
        environment_id = explicit.get("environment_id", entry.default_environment_id)
        info = entry.describe(environment_id)
        presets = presets_for(environment_id, info.family)
        config = resolve_config({"environment_id": environment_id, **explicit},
                                *(values for _, values in presets))
        sources = [f"preset: {source}" for source, _ in presets]
    if entry.check_config is not None:
        entry.check_config(config)
    device = select_device(config.use_gpu)
    # Under torchrun (WORLD_SIZE > 1) join the process group; a single process gets a no-op context.
    distributed = init_from_environment(config.use_gpu)
    try:
        code = _train_and_evaluate(entry, config, info, sources, resume, resume_state, resume_dir,
                                   distributed.device if distributed.enabled else device, distributed)
    except BaseException:
        distributed.close()
        raise
    distributed.close(wait_for_all=True)
    if distributed.enabled and not distributed.is_main:
        # Ranks other than 0 wrote nothing and hold nothing to flush: they leave without the interpreter's
        # teardown, where threads of the communication backend have aborted the process (SIGABRT).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _silent(*_args: Any, **_kwargs: Any) -> None:
    """``print`` of the ranks other than 0 of a distributed run."""


def _model_tensors(agent: torch.nn.Module) -> list[torch.Tensor]:
    """Weights and buffers (observation statistics) of ``agent``, for the cross-rank equality check."""
    return [*agent.parameters(), *agent.buffers()]


def _train_and_evaluate(entry: EntryPoint, config: PPOConfig, info: Any, sources: list[str], resume: str | None,
                        resume_state: dict[str, Any] | None, resume_dir: Path | None, device: torch.device,
                        distributed: DistributedContext) -> int:
    """The training run of :func:`run_training` on this process (one rank of a distributed run).

    Only rank 0 creates the run directory, prints, writes metrics, checkpoints, the learning curve and
    videos, and evaluates at the end; the other ranks train silently.
    """
    world_size, is_main = distributed.world_size, distributed.is_main
    say = print if is_main else _silent
    if resume_state is not None and int(resume_state.get("world_size", 1)) != world_size:
        saved_world = int(resume_state.get("world_size", 1))
        how = (f"python {entry.script}" if saved_world == 1
               else f"torchrun and {saved_world} processes in all (--nnodes x --nproc_per_node)")
        raise UsageError(f"checkpoint '{resume}' was written by a run of {saved_world} process(es), this is a "
                         f"run of {world_size}; resume it with {how} (steps are counted per process)")
    run_dir = _prepare_run_dir(config, resume_dir) if is_main else None
    say(f"Run directory: {run_dir}", flush=True)
    for line in sources:
        say(line)
    say(f"{config.environment_id}: {config.num_envs} envs x {config.num_steps_collected} steps, "
        f"{config.num_mini_batches} minibatches of {config.minibatch_size}, {config.num_epochs} epochs, "
        f"{config.total_timesteps} steps on {device}")
    if distributed.enabled:
        say(f"Distributed: {world_size} processes, each with the numbers above (rank r seeds its envs with "
            f"seed + 1000 r); gradients averaged over {world_size * config.batch_size} transitions per "
            f"update, {world_size * config.total_timesteps} steps in all")
    configure_torch(config)

    envs = entry.make_envs(config, config.num_envs, evaluation=False)
    recorder = None
    interrupted = False
    try:
        seed_rngs(config.seed)  # the network's initial weights depend on it (the same on every rank)
        agent = entry.make_agent(config, info).to(device)
        if config.capture_video and resume_state is None and is_main:
            _record_run_videos(entry, config, agent, run_dir, "before")
        env_state = None
        if entry.env_state is not None:
            getter, setter = entry.env_state
            if distributed.enabled:
                # The checkpoint holds rank 0's envs: every rank takes the saved reward-scaler statistics
                # but starts new episodes of its own ("envs": None keeps the simulators as reset).
                env_state = (lambda: getter(envs),
                             lambda state: setter(envs, {**state, "envs": None} if isinstance(state, dict)
                                                  else state))
            else:
                env_state = (lambda: getter(envs), lambda state: setter(envs, state))
        metadata = {"entry": entry.name, **_space_metadata(info)}
        if distributed.enabled:
            metadata["world_size"] = world_size
        trainer = Trainer(config, envs, agent, device,
                          checkpoint_dir=run_dir / "checkpoints" if is_main else None,
                          checkpoint_metadata=metadata, env_state=env_state, distributed=distributed)
        if resume_state is not None:
            _load_agent_state(agent, resume_state, resume)
            trainer.load_state_dict(resume_state)
            if distributed.enabled:
                say("Distributed resume: every rank starts new episodes (the checkpoint holds rank 0's state)")
            elif not trainer.env_restored:
                print("The environments cannot be restored exactly (only classic control and MuJoCo in "
                      "sync mode can): new episodes start")
        if distributed.enabled and not distributed.identical_across_ranks(_model_tensors(agent)):
            raise NumericalError(f"the initial weights differ across the {world_size} ranks (same --seed, same "
                                 "torch version and device type on every node?)")
        if is_main:
            recorder = RunRecorder(run_dir, config,
                                   resume_step=trainer.global_step * world_size if resume_state else None)
            trainer.recorder = recorder
            trainer.on_checkpoint = _learning_curve_writer(
                run_dir, lambda: trainer.stop_requested or trainer.iteration >= config.num_iterations)

        def request_stop(signum: int, _frame: Any) -> None:
            if trainer.stop_requested:  # a second signal: stop at once, without a checkpoint
                raise KeyboardInterrupt
            trainer.stop_requested = True

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        progress = _progress_bar(config, trainer.global_step, world_size) if is_main else None
        try:
            trainer.train(progress)
        finally:
            if progress is not None:
                progress.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        interrupted = trainer.stop_requested and trainer.iteration < config.num_iterations
        if distributed.enabled and not interrupted:
            if not distributed.identical_across_ranks(_model_tensors(agent)):
                raise NumericalError(f"the parameters differ across the {world_size} ranks after training; "
                                     "checkpoints/latest.pt holds rank 0's last saved state")
            compared = ("weights and observation statistics" if getattr(agent, "normalizer", None) is not None
                        else "weights")
            say(f"Parameters identical across {world_size} ranks ({compared})")
        latest = trainer.save("latest.pt")
        if interrupted:
            if is_main:
                print(f"Interrupted at step {trainer.global_step * world_size}; resume with: "
                      f"{entry.script if world_size == 1 else 'torchrun ... ' + entry.script} --resume {latest}",
                      file=sys.stderr)
            return EXIT_INTERRUPTED
        final = trainer.save("final.pt")
        say(f"Saved {final}")
        t = trainer.timings
        say(f"Time: env {t['env']:.1f}s, inference {t['inference']:.1f}s, update {t['update']:.1f}s, "
            f"total {trainer.wall_time():.1f}s" + (" (rank 0)" if distributed.enabled else ""))
    finally:
        if recorder is not None:
            recorder.close()
        envs.close()
    if not is_main:
        return 0
    if config.eval_episodes:
        result = _evaluate(entry, config, agent, info, config.eval_episodes, device)
        (run_dir / "evaluation.json").write_text(json.dumps(result) + "\n")
        print(f"Evaluation ({config.eval_episodes} episodes, deterministic): "
              f"{result['mean_return']:.2f} +- {result['std_return']:.2f}")
        print(_comparison_line(config, info))
    if config.capture_video:
        _record_run_videos(entry, config, agent, run_dir, "after")
    return 0


def _comparison_line(config: PPOConfig, info: Any) -> str:
    """Where the result stands: the published PPO number for this env and gymnasium's reward threshold."""
    parts = []
    published = published_result(config.environment_id)
    if published is not None:
        parts.append(f"published PPO {published['mean_return']} at {published['steps']:,} steps "
                     f"({published['source']})")
    threshold = getattr(info, "reward_threshold", None)
    if threshold is not None:
        parts.append(f"gymnasium reward threshold {threshold}")
    return "Compare: " + ("; ".join(parts) if parts else "no published PPO result or reward threshold on record")


def _progress_bar(config: PPOConfig, initial: int, world_size: int = 1) -> Any:
    """tqdm over the steps of all ranks (``world_size`` processes of ``config.total_timesteps`` each)."""
    if not config.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=config.num_iterations * config.batch_size * world_size, initial=initial * world_size,
                unit="step", unit_scale=True, dynamic_ncols=True, desc=config.environment_id)


def main(entry: EntryPoint, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; returns the process exit code (never raises for user errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser(entry)
        namespace = parser.parse_args(argv)
        arguments = vars(namespace)
        actions = {key: arguments.pop(key) for key in ("evaluate", "eval_random", "resume", "list_presets",
                                                        "debug")}
        if actions["list_presets"]:
            print(describe_presets())
            return 0
        if actions["evaluate"]:
            if actions["resume"]:
                raise UsageError("--evaluate and --resume cannot be combined")
            result = run_evaluation(entry, actions["evaluate"], arguments.get("eval_episodes"),
                                    actions["eval_random"], arguments.get("use_gpu", False))
            line = (f"deterministic policy: {result['mean_return']:.2f} +- {result['std_return']:.2f} over "
                    f"{result['episodes']} episodes")
            if "random_mean_return" in result:
                line += (f"; random agent: {result['random_mean_return']:.2f} +- "
                         f"{result['random_std_return']:.2f}")
            print(line)
            print(json.dumps(result))
            return 0
        return run_training(entry, arguments, actions["resume"])
    except PPOError as error:
        if debug:
            traceback.print_exc()
        print(f"{entry.script}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{entry.script}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

