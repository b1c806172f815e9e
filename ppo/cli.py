"""The command line shared by ``main.py`` and ``main_atari.py``: parse flags and dispatch to an action.

Each entry script describes itself with a :class:`ppo.entry.EntryPoint`. Training goes to :mod:`ppo.run`;
``--evaluate`` and ``--record`` to :mod:`ppo.actions`, ``--export`` to :mod:`ppo.export`. Errors the user can
fix end the program with one line on stderr and the exit codes of :mod:`common.errors`; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
from typing import Sequence

from common.errors import EXIT_INTERRUPTED, PPOError, UsageError
from ppo.config import add_config_arguments
from ppo.entry import EntryPoint
from ppo.presets import describe_presets

ACTIONS = ("evaluate", "eval_random", "record", "export", "output", "record_episodes", "resume", "list_presets",
           "debug")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage plus message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser(entry: EntryPoint) -> argparse.ArgumentParser:
    """The full parser: every :class:`ppo.config.PPOConfig` field plus the actions (evaluate, record, resume,
    presets)."""
    usage = f"python {entry.script} [FLAGS] | --evaluate/--record/--export/--resume CHECKPOINT | --list-presets"
    parser = _Parser(prog=entry.script, usage=usage, description=entry.description + " Values: the defaults below, "
                     "then the presets for the environment (--list-presets), then the flags given.",
                     formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=36, width=110))
    add_config_arguments(parser, entry.name)
    actions = parser.add_argument_group("Actions")
    actions.add_argument("--evaluate", metavar="CHECKPOINT", help="evaluate a saved policy on fresh envs (see "
                         "--eval-policy, --eval-episodes) and print its JSON result as the last line")
    actions.add_argument("--eval-random", action="store_true", help="with --evaluate: also report a uniformly "
                         "random agent's return on the same envs; with --record: record a random agent")
    actions.add_argument("--record", metavar="CHECKPOINT", help="record a saved policy as a video (--output "
                         "FILE.gif or FILE.mp4) and print JSON {returns, mean_return, episodes} as the last line")
    actions.add_argument("--export", metavar="CHECKPOINT", help="write a saved policy as an ONNX model (--output "
                         "FILE.onnx): raw observations in, deterministic actions out (README, Export)")
    actions.add_argument("--output", metavar="FILE", help="with --record: the video to write; with --export: the "
                         ".onnx file")
    actions.add_argument("--record-episodes", type=int, default=1, metavar="N",
                         help="with --record: episodes to record, one after another (default: 1)")
    actions.add_argument("--resume", metavar="CHECKPOINT", help="continue the run of this checkpoint in its "
                         "run directory")
    actions.add_argument("--list-presets", action="store_true", help="print the tuned presets and exit")
    actions.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def finish(code: int) -> int:
    """The entry scripts end with ``sys.exit(finish(main(ENTRY)))``: returns ``code`` after freezing the garbage
    collector's objects (``gc.freeze``), so that the interpreter's exit does not walk every object of torch,
    matplotlib and TensorBoard in its final collections (about 0.4 s of a 100k-step CartPole command, against
    0.1 s). Files are closed by then; objects are still freed by reference counting at exit. Call it only when
    the process ends next (tests call :func:`main` directly)."""
    gc.freeze()
    return code


def main(entry: EntryPoint, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; returns the process exit code (never raises for user errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        arguments = vars(build_parser(entry).parse_args(argv))
        action = {key: arguments.pop(key) for key in ACTIONS}
        if action["list_presets"]:
            print(describe_presets())
            return 0
        if sum(action[key] is not None for key in ("evaluate", "record", "export", "resume")) > 1:
            raise UsageError("--evaluate, --record, --export and --resume cannot be combined")
        if action["evaluate"]:
            from ppo.actions import describe_evaluation, run_evaluation
            result = run_evaluation(entry, action["evaluate"], arguments.get("eval_episodes"),
                                    action["eval_random"], arguments.get("use_gpu", False),
                                    arguments.get("eval_policy"))
            line = describe_evaluation(result)
            if "random_mean_return" in result:
                line += f"; random agent: {result['random_mean_return']:.2f} +- {result['random_std_return']:.2f}"
            print(line)
            print(json.dumps(result))
            return 0
        if action["record"]:
            from ppo.actions import record_checkpoint
            result = record_checkpoint(entry, action["record"], action["output"], action["record_episodes"],
                                       action["eval_random"], arguments.get("eval_policy"))
            print(result["path"])
            print(json.dumps({key: result[key] for key in ("returns", "mean_return", "episodes")}))
            return 0
        if action["export"]:
            from ppo.export import export_checkpoint
            result = export_checkpoint(entry, action["export"], action["output"])
            print(result["path"])
            print(json.dumps(result))
            return 0
        from ppo.run import run_training
        return run_training(entry, arguments, action["resume"])
    except PPOError as error:
        if debug:
            traceback.print_exc()
        print(f"{entry.script}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{entry.script}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the output went to a pipe that closed early (| head): nothing more to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush is silent
        return 0
