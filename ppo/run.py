"""A training run's life: resolve the config (or a resume), the run directory, the header, the trainer, signals,
checkpoints at the end, the final evaluation and the videos; returns the exit code."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from common.errors import EXIT_INTERRUPTED, NumericalError, UsageError
from ppo.actions import describe_evaluation, evaluate_agent, record_videos
from ppo.checkpoint import load_checkpoint, seed_rngs
from ppo.config import PPOConfig, resolve_config
from ppo.distributed import DistributedContext, init_from_environment
from ppo.entry import (EntryPoint, check_checkpoint, check_spaces, configure_torch, load_agent_state,
                       select_device, space_metadata)
from ppo.learners import make_learner
from ppo.loop import Trainer
from ppo.presets import presets_for, published_result
from ppo.recorder import RunRecorder

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
        presets = presets_for(environment_id, info.family)
        config = resolve_config({"environment_id": environment_id, **explicit}, *(values for _, values in presets))
        return RunPlan(config, info, [f"preset: {source}" for source, _ in presets])
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


def run_training(entry: EntryPoint, explicit: dict[str, Any], resume: str | None = None) -> int:
    """Train from flags (or resume a checkpoint) and write the run directory. Returns the exit code."""
    plan = plan_run(entry, explicit, resume)
    if entry.check_config is not None:
        entry.check_config(plan.config)
    device = select_device(plan.config.use_gpu)
    # Under torchrun (WORLD_SIZE > 1) join the process group; a single process gets a no-op context.
    distributed = init_from_environment(plan.config.use_gpu)
    try:
        code = _run(entry, plan, distributed.device if distributed.enabled else device, distributed)
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


def prepare_run_dir(config: PPOConfig, resume_dir: Path | None) -> Path:
    """The run directory: a resumed run's own (stale temporary files removed), or ``output_dir/run_name``.

    Raises:
        UsageError: the directory cannot be created or written.
    """
    if resume_dir is not None:
        # Temporary files of a checkpoint write cut short by kill -9 (the checkpoint itself is intact).
        for stale in (resume_dir / "checkpoints").glob(".*.tmp.*"):
            stale.unlink(missing_ok=True)
        return resume_dir
    run_dir = Path(config.output_dir) / config.run_name
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write the run directory '{run_dir}' ({error.strerror}); choose another "
                         "--output-dir") from error
    return run_dir


def _run(entry: EntryPoint, plan: RunPlan, device: torch.device, distributed: DistributedContext) -> int:
    """The run on this process (one rank of a distributed run). Only rank 0 creates the run directory, prints,
    writes metrics, checkpoints, the learning curve and videos, and evaluates at the end."""
    config, info, resume_state = plan.config, plan.info, plan.resume_state
    world_size, is_main = distributed.world_size, distributed.is_main
    say: Callable[..., None] = print if is_main else (lambda *_args, **_kwargs: None)
    if resume_state is not None and int(resume_state.get("world_size", 1)) != world_size:
        saved_world = int(resume_state.get("world_size", 1))
        how = (f"python {entry.script}" if saved_world == 1
               else f"torchrun and {saved_world} processes in all (--nnodes x --nproc_per_node)")
        raise UsageError(f"checkpoint '{plan.resume_path}' was written by a run of {saved_world} process(es), "
                         f"this is a run of {world_size}; resume it with {how} (steps are counted per process)")
    if config.run_name is None:
        config = dataclasses.replace(config, run_name=f"{config.environment_id.replace('/', '_')}__{config.seed}__"
                                                      f"{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir = prepare_run_dir(config, plan.resume_dir) if is_main else None
    say(f"Run directory: {run_dir}", flush=True)
    for line in plan.sources:
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
    try:
        seed_rngs(config.seed)  # the network's initial weights depend on it (the same on every rank)
        agent = entry.make_agent(config, info).to(device)
        learner, why = make_learner(config, agent, device, distributed, distributed.rank_seed(config.seed))
        say(f"Learner: {learner.name} ({why})")
        if config.capture_video and resume_state is None and is_main:
            record_videos(entry, config, agent, run_dir, "before")
        metadata = {"entry": entry.name, **space_metadata(info)}
        if distributed.enabled:
            metadata["world_size"] = world_size
        trainer = Trainer(config, envs, agent, device, learner=learner,
                          checkpoint_dir=run_dir / "checkpoints" if is_main else None, checkpoint_metadata=metadata,
                          env_state=_env_state(entry, envs, distributed), distributed=distributed)
        if resume_state is not None:
            load_agent_state(agent, resume_state, plan.resume_path)
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
            recorder = RunRecorder(run_dir, config, resolved={"resolved_learner": learner.name},
                                   resume_step=trainer.global_step * world_size if resume_state else None)
            trainer.recorder = recorder
            trainer.on_checkpoint = _learning_curve_writer(
                run_dir, lambda: trainer.stop_requested or trainer.iteration >= config.num_iterations)
        _train_with_signals(trainer, _progress_bar(config, trainer.global_step, world_size) if is_main else None)
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
        say(f"Saved {trainer.save('final.pt')}")
        timings = {**trainer.collector.timings, **trainer.timings}
        say(f"Time: env {timings['env']:.1f}s, inference {timings['inference']:.1f}s, update {timings['update']:.1f}s, "
            f"total {trainer.wall_time():.1f}s" + (" (rank 0)" if distributed.enabled else ""))
    finally:
        if recorder is not None:
            recorder.close()
        envs.close()
    if not is_main:
        return 0
    if config.eval_episodes:
        result = evaluate_agent(entry, config, agent, config.eval_episodes, device)
        (run_dir / "evaluation.json").write_text(json.dumps(result) + "\n")
        print(f"Evaluation, {describe_evaluation(result)}")
        print(_comparison_line(config, info))
    if config.capture_video:
        record_videos(entry, config, agent, run_dir, "after")
    return 0


def _env_state(entry: EntryPoint, envs: Any, distributed: DistributedContext
               ) -> tuple[Callable[[], Any], Callable[[Any], bool]] | None:
    """The entry's env-state ``(get, set)`` bound to ``envs``. Distributed, the checkpoint holds rank 0's envs:
    every rank takes the saved reward-scaler statistics but starts new episodes of its own."""
    if entry.env_state is None:
        return None
    getter, setter = entry.env_state
    if distributed.enabled:
        return (lambda: getter(envs),
                lambda state: setter(envs, {**state, "envs": None} if isinstance(state, dict) else state))
    return lambda: getter(envs), lambda state: setter(envs, state)


def _train_with_signals(trainer: Trainer, progress: Any) -> None:
    """:meth:`Trainer.train` with SIGINT and SIGTERM asking it to stop at the next step (a second signal stops
    at once, without a checkpoint)."""
    def request_stop(_signum: int, _frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.train(progress)
    finally:
        if progress is not None:
            progress.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _model_tensors(agent: torch.nn.Module) -> list[torch.Tensor]:
    """Weights and buffers (observation statistics) of ``agent``, for the cross-rank equality check."""
    return [*agent.parameters(), *agent.buffers()]


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
