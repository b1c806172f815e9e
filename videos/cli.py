"""``python -m videos CHECKPOINT --output FILE [--episodes N] [--stochastic] [--random]``.

Rebuilds a checkpoint's policy through the entry point that wrote it (``main.py``, ``main_atari.py``), records
it (deterministically unless ``--stochastic``; ``--random`` records a uniformly random agent on the same
environment instead) and writes a GIF or an MP4, chosen by the suffix of ``--output``. Prints the path and then
``{"returns": [...], "mean_return": ..., "episodes": N}`` as the last line. Errors are one line on stderr with
the exit codes of :mod:`ppo.errors` (2 bad usage, 3 environment, 4 checkpoint).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ppo.errors import CheckpointError, PPOError, UsageError

PROG = "python -m videos"
ROOT = Path(__file__).resolve().parent.parent
# Checkpoint "entry" field -> module at the repository root holding its ``ENTRY``.
ENTRY_MODULES = {"main": "main", "atari": "main_atari"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m videos`` parser."""
    parser = _Parser(prog=PROG, description="Record a saved policy as a GIF or MP4 video.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by main.py or "
                        "main_atari.py (e.g. runs/<run>/checkpoints/final.pt)")
    parser.add_argument("--output", required=True, metavar="FILE", help="the video to write: FILE.gif or "
                        "FILE.mp4")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to record, one after another "
                        "(default: 1)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the "
                        "policy's mode (argmax / Gaussian mean)")
    parser.add_argument("--random", action="store_true", help="record a uniformly random agent on the "
                        "checkpoint's environment instead of the policy")
    return parser


def load_entry(name: Any, path: str) -> Any:
    """The ``EntryPoint`` that wrote a checkpoint, imported lazily from the repository root.

    Raises:
        CheckpointError: an unknown entry name, or an entry script this checkout does not have.
    """
    module_name = ENTRY_MODULES.get(name) if isinstance(name, str) else None
    if module_name is None:
        raise CheckpointError(f"checkpoint '{path}' names an unknown entry point {name!r}")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise CheckpointError(f"checkpoint '{path}' was written by {module_name}.py, which this checkout "
                              "does not have") from error
    return module.ENTRY


def record_checkpoint(path: str, output: str, episodes: int = 1, stochastic: bool = False,
                      random_agent: bool = False) -> dict[str, Any]:
    """Record a checkpoint's policy (or a random agent on its environment) and write ``output``.

    Returns:
        ``{"path", "returns", "mean_return", "episodes"}``; returns in the units of the env's reward.

    Raises:
        UsageError: ``output`` is not ``.gif``/``.mp4`` or cannot be written, ``episodes < 1``.
        CheckpointError: the checkpoint is missing, unreadable or does not fit its environment.
        EnvironmentProblem: the environment cannot be built or rendered.
    """
    if Path(output).suffix.lower() not in (".gif", ".mp4"):
        raise UsageError(f"--output '{output}' must end in .gif or .mp4")
    if episodes < 1:
        raise UsageError(f"--episodes must be a positive integer, got {episodes}")
    if stochastic and random_agent:
        raise UsageError("--stochastic and --random cannot be combined")

    from ppo.checkpoint import load_checkpoint
    from ppo.cli import load_policy
    from videos.render import record_episodes
    from videos.writers import write_video

    try:  # fail before the (slow) recording rather than after it
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot write '{output}' ({error.strerror or error}); choose another --output") \
            from error
    state = load_checkpoint(path)
    entry = load_entry(state.get("entry"), path)
    config, _info, agent = load_policy(entry, state, path)
    factory = None
    if entry.make_render_env is not None:
        def factory(_environment_id: str) -> Any:
            return entry.make_render_env(config)
    recording = record_episodes(config.environment_id, None if random_agent else agent, episodes,
                                deterministic=not stochastic, seed=config.seed + 30_000, env_factory=factory)
    try:
        written = write_video(output, recording.frames, recording.fps)
    except OSError as error:
        raise UsageError(f"cannot write '{output}' ({error.strerror or error}); choose another --output") \
            from error
    return {"path": str(written), "returns": recording.returns,
            "mean_return": sum(recording.returns) / len(recording.returns), "episodes": episodes}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and record; returns the exit code (user errors never raise)."""
    try:
        arguments = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        result = record_checkpoint(arguments.checkpoint, arguments.output, arguments.episodes,
                                   arguments.stochastic, arguments.random)
    except PPOError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(result["path"])
    print(json.dumps({key: result[key] for key in ("returns", "mean_return", "episodes")}))
    return 0
