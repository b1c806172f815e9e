"""A training run's life: resolve the config (or a resume), the run directory, the header, the trainer, signals,
checkpoints at the end, the final evaluation and the videos; returns the exit code."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from common.errors import (EXIT_INTERRUPTED, EnvironmentProblem, NumericalError, UsageError, WriteFailure,
                           write_failure)
from common.files import atomic_write
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


def run_training(entry: EntryPoint, explicit: dict[str, Any], resume: str | None = None) -> int:
    """Train from flags (or resume a checkpoint) and write the run directory. Returns the exit code."""
    plan = plan_run(entry, explicit, resume)
    if entry.check_config is not None:
        entry.check_config(plan.config)
    device = select_device(plan.config.use_gpu)
    # Under torchrun (WORLD_SIZE > 1) join the process group; a single process gets a no-op context.
    distributed = init_from_environment(plan.config.use_gpu)
    try:
        with _signals_interrupt(), _run_dir_locks():
            try:
                code = _run(entry, plan, distributed.device if distributed.enabled else device, distributed)
            finally:
                _draw_deferred_curves()  # the run's final learning curve, once its last line is printed
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


def default_run_name(config: PPOConfig) -> str:
    """``ENV__SEED__YYYYmmdd-HHMMSS`` (``/`` of the id as ``_``), the run name when ``--run-name`` is not given."""
    return f"{config.environment_id.replace('/', '_')}__{config.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(config: PPOConfig, resume_dir: Path | None) -> Path:
    """The run directory: a resumed run's own (stale temporary files removed), or a new one that no other run
    has. Only ``--resume`` writes into an existing run directory: a ``--run-name`` whose directory exists is
    refused; without ``--run-name`` the directory is :func:`default_run_name`, with ``-2``, ``-3``, ... added
    when another run took that name (two runs started in the same second). Directories are claimed with an
    exclusive ``mkdir``, so concurrent runs (also several ranks' worth of runs) never share one.

    The run holds an exclusive lock on ``run_dir/.lock`` (its pid inside) until it ends, so a ``--resume`` of a
    run that is still going is refused; the kernel drops the lock of a process that dies, ``kill -9`` included.

    Raises:
        UsageError: the ``--run-name`` directory exists (naming ``--resume``), another live run holds the
            directory, or the directory cannot be created or written.
    """
    if resume_dir is not None:
        # Temporary files of a write cut short by kill -9 (checkpoints, config.json, a resume's trimmed CSVs;
        # the files themselves are intact). Locked first: a live run's own temporary files are not stale.
        _lock_run_dir(resume_dir)
        for stale in [*(resume_dir / "checkpoints").glob(".*.tmp.*"), *resume_dir.glob(".*.tmp.*")]:
            stale.unlink(missing_ok=True)
        return resume_dir
    output_dir = Path(config.output_dir)
    run_dir = output_dir / (config.run_name or default_run_name(config))
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        if config.run_name is not None:
            try:
                run_dir.mkdir()
            except FileExistsError:
                latest = run_dir / "checkpoints" / "latest.pt"
                target = str(latest) if latest.is_file() else "CHECKPOINT"
                raise UsageError(f"run directory '{run_dir}' already exists; continue that run with --resume "
                                 f"{target}, or choose another --run-name") from None
        else:
            base, suffix = run_dir.name, 1
            while True:
                try:
                    run_dir.mkdir()
                    break
                except FileExistsError:
                    suffix += 1
                    run_dir = output_dir / f"{base}-{suffix}"
        _lock_run_dir(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write the run directory '{run_dir}' ({error.strerror}); choose another "
                         "--output-dir") from error
    return run_dir


_RUN_DIR_LOCKS: list[int] = []  # descriptors of the run-directory locks this process holds


def _lock_run_dir(run_dir: Path) -> None:
    """Take the exclusive advisory lock ``run_dir/.lock`` (flock) for the rest of the run; :func:`_run_dir_locks`
    releases it, the kernel does when the process dies. Where flock is missing or unsupported (not POSIX, some
    network file systems) the run goes on unlocked.

    Raises:
        UsageError: another live process holds the lock.
    """
    try:
        import fcntl
    except ImportError:
        return
    descriptor = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() if isinstance(
            error, BlockingIOError) else ""
        os.close(descriptor)
        if isinstance(error, BlockingIOError):
            raise UsageError(f"run directory '{run_dir}' is in use by another run (pid {holder or 'unknown'}); "
                             "wait for it to end, or stop it first") from None
        return
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is only for the message of a refused run
    _RUN_DIR_LOCKS.append(descriptor)


@contextlib.contextmanager
def _run_dir_locks() -> Iterator[None]:
    """Release the run-directory locks taken inside (:func:`_lock_run_dir`) when the block ends."""
    held = len(_RUN_DIR_LOCKS)
    try:
        yield
    finally:
        while len(_RUN_DIR_LOCKS) > held:
            os.close(_RUN_DIR_LOCKS.pop())


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
    warn_once = _Warnings()
    try:
        seed_rngs(config.seed)  # the network's initial weights depend on it (the same on every rank)
        agent = entry.make_agent(config, info).to(device)
        learner, why = make_learner(config, agent, device, distributed, distributed.rank_seed(config.seed))
        say(f"Learner: {learner.name} ({why})")
        if device.type == "cuda" and learner.name == "torch" and type(agent).__name__ == "MLPActorCritic":
            say("Note: an MLP's update on the GPU without CUDA graphs is slower than on the CPU (docs/performance.md:"
                " Humanoid-v4 896 steps/s against 1,838 on the CPU); --learner cuda-graph was 2,229")
        if config.capture_video and resume_state is None and is_main:
            _record_videos(entry, config, agent, run_dir, "before", warn_once)
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
            trainer.on_checkpoint = _learning_curve_writer(
                run_dir, lambda: trainer.stop_requested or trainer.iteration >= config.num_iterations, warn=warn_once)
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
        _INTERRUPTS.defer()  # a signal while files and envs close is raised once the final phase begins
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
        _INTERRUPTS.resume()
        return _after_training(entry, config, info, agent, device, run_dir, warn_once, phase)
    except WriteFailure as error:
        raise WriteFailure(f"{error}; {_checkpoint_note(trainer)}", error.path, error.reason) from error
    except KeyboardInterrupt:
        print(f"Interrupted during the {phase[0]}; training had finished: {_checkpoint_note(trainer)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _after_training(entry: EntryPoint, config: PPOConfig, info: Any, agent: torch.nn.Module, device: torch.device,
                    run_dir: Path, warn_once: "_Warnings", phase: list[str]) -> int:
    """The final evaluation (``evaluation.json``) and the "after" videos, once ``final.pt`` is written;
    ``phase[0]`` is set to the phase under way, for an interrupt's message.

    Raises:
        WriteFailure: ``evaluation.json`` cannot be written.
        KeyboardInterrupt: SIGINT or SIGTERM.
    """
    if config.eval_episodes:
        phase[0] = "final evaluation"
        result = evaluate_agent(entry, config, agent, config.eval_episodes, device)
        _write_json(run_dir / "evaluation.json", result)
        print(f"Evaluation, {describe_evaluation(result)}")
        print(_comparison_line(config, info))
    if config.capture_video:
        phase[0] = "video capture"
        _record_videos(entry, config, agent, run_dir, "after", warn_once)
    return 0


class _Warnings:
    """Warnings on stderr, each kind once per run (a full disk fails every curve and video after the first)."""

    def __init__(self) -> None:
        self.given: set[str] = set()

    def __call__(self, kind: str, message: str) -> None:
        if kind not in self.given:
            self.given.add(kind)
            print(f"warning: {message}", file=sys.stderr, flush=True)


def _record_videos(entry: EntryPoint, config: PPOConfig, agent: torch.nn.Module, run_dir: Path, stage: str,
                   warn: _Warnings) -> None:
    """:func:`ppo.actions.record_videos`; a video that cannot be written (disk full, ...) is a warning, once,
    and the run goes on."""
    try:
        record_videos(entry, config, agent, run_dir, stage)
    except (OSError, RuntimeError) as error:
        failure = write_failure(run_dir / "videos", error)
        warn("videos", f"could not write the {stage} videos under '{failure.path}' ({failure.reason}); the run "
                       "goes on without them")


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as one line of JSON, atomically.

    Raises:
        WriteFailure: the file cannot be written.
    """
    try:
        atomic_write(path, lambda temporary: Path(temporary).write_text(json.dumps(data) + "\n"))
    except OSError as error:
        raise write_failure(path, error) from error


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


class _Interrupts:
    """The SIGINT/SIGTERM handler outside training: raise KeyboardInterrupt. After :meth:`defer` the first
    signal is kept (a second one still raises at once) and :meth:`resume` raises it, so that a signal while the
    training's files close is reported by the final phase, which knows what was saved."""

    def __init__(self) -> None:
        self.deferred = self.pending = False

    def handle(self, _signum: int, _frame: Any) -> None:
        if self.deferred and not self.pending:
            self.pending = True
            return
        raise KeyboardInterrupt

    def defer(self) -> None:
        self.deferred = True

    def resume(self) -> None:
        """Stop deferring; raise KeyboardInterrupt for a signal kept meanwhile."""
        pending, self.deferred, self.pending = self.pending, False, False
        if pending:
            raise KeyboardInterrupt


_INTERRUPTS = _Interrupts()


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (:data:`_INTERRUPTS`; training installs its own
    stop-at-the-next-step handler), so a signal during set-up, the final evaluation or the videos ends the run
    with exit code 130 and a line naming the checkpoint kept. Outside the main thread signals cannot be handled
    and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _INTERRUPTS.deferred = _INTERRUPTS.pending = False
    previous = {sig: signal.signal(sig, _INTERRUPTS.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        _INTERRUPTS.deferred = _INTERRUPTS.pending = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def _learning_curve_writer(run_dir: Path, finished: Callable[[], bool], min_interval_s: float = 60.0,
                           warn: Callable[[str, str], None] | None = None) -> Callable[[Path], None]:
    """A :attr:`Trainer.on_checkpoint` hook that redraws ``learning_curve.png`` when episodes.csv changed:
    during training at most once per ``min_interval_s`` seconds (a plot costs tenths of a second, which
    short runs would feel), and always once ``finished()`` (the run ended or was interrupted): that last one is
    drawn by :func:`run_training` after the run's last line."""
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

        def draw() -> None:
            from videos.curves import plot_learning_curve  # lazily: matplotlib stays off the training path
            try:
                plot_learning_curve(run_dir)
            except Exception as error:  # noqa: BLE001 - a missing plot must not end a training run
                failure = write_failure(run_dir / "learning_curve.png", error)
                (warn or _Warnings())("curve", f"could not write '{failure.path}' ({failure.reason}); training goes on")
        if finished():  # matplotlib's import and the drawing (about 0.5 s) wait until the evaluation is printed
            _DEFERRED_CURVES.append(draw)
        else:
            draw()
        last_stamp, written = stamp, True

    return write


# The final drawings of :func:`_learning_curve_writer`, made by :func:`run_training` once the run has printed its
# last line (the evaluation): the result is on the screen half a second sooner, the command takes as long.
_DEFERRED_CURVES: list[Callable[[], None]] = []


def _draw_deferred_curves() -> None:
    while _DEFERRED_CURVES:
        _DEFERRED_CURVES.pop(0)()


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
