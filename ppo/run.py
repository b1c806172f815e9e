"""A training run's life: the plan (config or resume), the run directory, the header, the trainer, signals,
checkpoints at the end, the final evaluation and the videos; returns the exit code."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from common.errors import EXIT_INTERRUPTED, EnvironmentProblem, NumericalError, UsageError, WriteFailure
from ppo.actions import describe_evaluation, evaluate_agent
from ppo.checkpoint import seed_rngs
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext, init_from_environment
from ppo.entry import EntryPoint, configure_torch, load_agent_state, select_device, space_metadata
from ppo.learners import make_learner
from ppo.loop import Trainer
from ppo.plan import RunPlan, header_lines, plan_run
from ppo.presets import published_result
from ppo.recorder import RunRecorder
from ppo.run_dir import (Warnings, default_run_name, draw_deferred_curves, learning_curve_writer, prepare_run_dir,
                         record_run_videos, run_dir_locks, write_json)
from ppo.signals import INTERRUPTS, signals_interrupt, train_with_signals


def run_training(entry: EntryPoint, explicit: dict[str, Any], resume: str | None = None) -> int:
    """Train from flags (or resume a checkpoint) and write the run directory. Returns the exit code."""
    plan = plan_run(entry, explicit, resume)
    if entry.check_config is not None:
        entry.check_config(plan.config)
    device = select_device(plan.config.use_gpu)
    # Under torchrun (WORLD_SIZE > 1) join the process group; a single process gets a no-op context.
    distributed = init_from_environment(plan.config.use_gpu)
    try:
        with signals_interrupt(), run_dir_locks():
            try:
                code = _run(entry, plan, distributed.device if distributed.enabled else device, distributed)
            finally:
                draw_deferred_curves()  # the run's final learning curve, once its last line is printed
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
    run_dir = prepare_run_dir(config, plan.resume_dir) if is_main else None
    if config.run_name is None:  # the name taken (another run may have had the default one)
        config = dataclasses.replace(config, run_name=run_dir.name if run_dir is not None else default_run_name(config))
    say(f"Run directory: {run_dir}", flush=True)
    for line in plan.sources:
        say(line)
    for line in header_lines(config, device):
        say(line)
    if distributed.enabled:
        say(f"Distributed: {world_size} processes, each with the numbers above (rank r seeds its envs with "
            f"seed + 1000 r); gradients averaged over {world_size * config.batch_size} transitions per "
            f"update, {world_size * config.total_timesteps} steps in all")
    configure_torch(config)

    envs = entry.make_envs(config, config.num_envs, evaluation=False)
    recorder = trainer = None
    warn_once = Warnings()
    try:
        seed_rngs(config.seed)  # the network's initial weights depend on it (the same on every rank)
        agent = entry.make_agent(config, info).to(device)
        learner, why = make_learner(config, agent, device, distributed, distributed.rank_seed(config.seed))
        say(f"Learner: {learner.name} ({why})")
        if device.type == "cuda" and learner.name == "torch" and type(agent).__name__ == "MLPActorCritic":
            say("Note: an MLP's update on the GPU without CUDA graphs is slower than on the CPU (docs/performance.md:"
                " Humanoid-v4 896 steps/s against 1,838 on the CPU); --learner cuda-graph was 2,229")
        if config.capture_video and resume_state is None and is_main:
            record_run_videos(entry, config, agent, run_dir, "before", warn_once)
        metadata = {"entry": entry.name, **space_metadata(info)}
        if distributed.enabled:
            metadata["world_size"] = world_size
        trainer = Trainer(config, envs, agent, device, learner=learner,
                          checkpoint_dir=run_dir / "checkpoints" if is_main else None, checkpoint_metadata=metadata,
                          env_state=_env_state(entry, envs, distributed), distributed=distributed)
        if resume_state is not None:
            load_agent_state(agent, resume_state, plan.resume_path)
            trainer.load_state_dict(resume_state)
            trainer.last_checkpoint = (Path(plan.resume_path), int(resume_state["global_step"]) * world_size)
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
            trainer.on_checkpoint = learning_curve_writer(
                run_dir, lambda: trainer.stop_requested or trainer.iteration >= config.num_iterations, warn=warn_once)
        train_with_signals(trainer, _progress_bar(config, trainer.global_step, world_size) if is_main else None)
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
            if is_main:  # the saved step: a rollout cut short by the signal is not in the checkpoint
                print(f"Interrupted; saved step {int(trainer.resume_point['global_step']) * world_size}; resume with: "
                      f"{entry.script if world_size == 1 else 'torchrun ... ' + entry.script} --resume {latest}",
                      file=sys.stderr)
            return EXIT_INTERRUPTED
        say(f"Saved {trainer.save('final.pt')}")
        say(_time_line(trainer) + (" (rank 0)" if distributed.enabled else ""))
    except WriteFailure as error:  # the disk is full, ...: say what is safe
        raise WriteFailure(f"{error}; {_checkpoint_note(trainer)}", error.path, error.reason) from error
    except EnvironmentProblem as error:  # the env raised in reset() or step()
        if trainer is None:
            raise
        raise EnvironmentProblem(f"{error}; {_save_after_env_failure(trainer, entry)}") from error
    except KeyboardInterrupt:  # a second signal, or one before training began
        if is_main:
            print(f"Interrupted at once; {_checkpoint_note(trainer)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        INTERRUPTS.defer()  # a signal while files and envs close is raised once the final phase begins
        if recorder is not None:
            try:
                recorder.close(quiet=sys.exc_info()[1] is not None)
            except WriteFailure as error:
                raise WriteFailure(f"{error}; {_checkpoint_note(trainer)}", error.path, error.reason) from error
        envs.close()
    if not is_main:
        return 0
    phase = ["end of the run"]
    try:
        INTERRUPTS.resume()
        return _after_training(entry, config, info, agent, device, run_dir, warn_once, phase)
    except WriteFailure as error:
        raise WriteFailure(f"{error}; {_checkpoint_note(trainer)}", error.path, error.reason) from error
    except KeyboardInterrupt:
        print(f"Interrupted during the {phase[0]}; training had finished: {_checkpoint_note(trainer)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _after_training(entry: EntryPoint, config: PPOConfig, info: Any, agent: torch.nn.Module, device: torch.device,
                    run_dir: Path, warn_once: Warnings, phase: list[str]) -> int:
    """The final evaluation (``evaluation.json``) and the "after" videos, once ``final.pt`` is written;
    ``phase[0]`` is set to the phase under way, for an interrupt's message.

    Raises:
        WriteFailure: ``evaluation.json`` cannot be written.
        KeyboardInterrupt: SIGINT or SIGTERM.
    """
    if config.eval_episodes:
        phase[0] = "final evaluation"
        result = evaluate_agent(entry, config, agent, config.eval_episodes, device)
        write_json(run_dir / "evaluation.json", result)
        print(f"Evaluation, {describe_evaluation(result)}")
        print(_comparison_line(config, info))
    if config.capture_video:
        phase[0] = "video capture"
        record_run_videos(entry, config, agent, run_dir, "after", warn_once)
    return 0


def _checkpoint_note(trainer: Trainer | None) -> str:
    """Which checkpoint is safe: "the last good checkpoint PATH (step N) is intact", or that none was written."""
    if trainer is None or trainer.last_checkpoint is None:
        return "no checkpoint was written yet"
    path, step = trainer.last_checkpoint
    return f"the last good checkpoint {path} (step {step}) is intact"


def _save_after_env_failure(trainer: Trainer, entry: EntryPoint) -> str:
    """After the environment raised during a rollout: write ``latest.pt`` with the last completed iteration (the
    rollout under way is abandoned, as on an interrupt); returns what was kept, for the error line."""
    if trainer.iteration > 0 and trainer.resume_point is not None and trainer.checkpoint_dir is not None:
        trainer.abandoned_rollout = True
        try:
            path = trainer.save("latest.pt")
        except WriteFailure as error:
            return f"{_checkpoint_note(trainer)} (writing a newer one failed: {error.reason})"
        return (f"{path} holds the last completed iteration (step {trainer.last_checkpoint[1]}); resume with "
                f"{entry.script} --resume {path}")
    return _checkpoint_note(trainer)


def _time_line(trainer: Trainer) -> str:
    """Where the training time went: env steps, sampling, updates, and the rest named (logging, checkpoints
    with the learning curve, and the rollout's own bookkeeping: bootstrap values, episodes, copies)."""
    timings = {**trainer.collector.timings, **trainer.timings}
    total = trainer.wall_time()
    rest = total - sum(timings.values())
    return (f"Time: env {timings['env']:.1f}s, inference {timings['inference']:.1f}s, update {timings['update']:.1f}s, "
            f"total {total:.1f}s (the rest: logging {timings['logging']:.1f}s, checkpoints and curve "
            f"{timings['checkpoints']:.1f}s, rollout bookkeeping {rest:.1f}s)")


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


def _model_tensors(agent: torch.nn.Module) -> list[torch.Tensor]:
    """Weights and buffers (observation statistics) of ``agent``, for the cross-rank equality check."""
    return [*agent.parameters(), *agent.buffers()]


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
