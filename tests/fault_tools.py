"""Helpers of tests/test_faults.py: scripted environments that fail or dawdle on purpose, and runs of
``main.py`` in real processes forked from a warm fork server (one interpreter start-up for all of them, so a
test can kill a run twenty times and resume it in seconds)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _mark(variable: str) -> None:
    """Append a byte to the file named by the environment variable ``variable``, if set."""
    marker = os.environ.get(variable)
    if marker:
        with open(marker, "ab") as handle:
            handle.write(b".")


class ScriptedEnv(gym.Env):
    """A tiny two-action env with episodes of ``length`` steps. ``raise_after``: ``step()`` raises RuntimeError
    once this instance has taken that many steps. ``step_sleep`` / ``render_sleep``: seconds each step /
    render takes. ``reset()`` and ``render()`` append a byte to the files named by $FAULT_RESET_MARKER and
    $FAULT_RENDER_MARKER, where set (so a test sees when evaluation or video capture began)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length=10, raise_after=None, step_sleep=0.0, render_sleep=0.0, render_mode=None):
        self.length, self.raise_after = length, raise_after
        self.step_sleep, self.render_sleep, self.render_mode = step_sleep, render_sleep, render_mode
        self.t = self.total = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        _mark("FAULT_RESET_MARKER")
        return np.zeros(2, np.float32), {}

    def step(self, action):
        if self.raise_after is not None and self.total >= self.raise_after:
            raise RuntimeError("sensor cable unplugged")
        if self.step_sleep:
            time.sleep(self.step_sleep)
        self.t += 1
        self.total += 1
        return np.full(2, 0.1 * action, np.float32), 1.0, False, self.t >= self.length, {}

    def render(self):
        _mark("FAULT_RENDER_MARKER")
        if self.render_sleep:
            time.sleep(self.render_sleep)
        return np.zeros((32, 32, 3), np.uint8)


def register_envs() -> None:
    """Register the scripted envs (idempotent)."""
    specs = {"FaultRaiseAfter100-v0": {"raise_after": 100},
             "FaultSlowSteps-v0": {"length": 200, "step_sleep": 0.002},
             "FaultSlowRender-v0": {"length": 100, "render_sleep": 0.002}}
    for name, kwargs in specs.items():
        if name not in gym.registry:
            gym.register(name, entry_point=ScriptedEnv, kwargs=kwargs)


register_envs()


def _child(argv: list[str], log: str, environ: dict[str, str]) -> None:
    """In a forked process: run ``main.py argv`` with stdout and stderr going to ``log``, ``environ`` added
    ($FAULT_SLOW_FSYNC: seconds every fsync waits, as on a slow disk); exits with main's code (1 after an
    exception that escaped it: its traceback is in the log)."""
    code = 1
    try:
        descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.close(descriptor)
        os.environ.update(environ)
        if environ.get("FAULT_SLOW_FSYNC"):  # a slow disk: every fsync takes this many seconds more
            fsync, delay = os.fsync, float(environ["FAULT_SLOW_FSYNC"])
            os.fsync = lambda descriptor: (time.sleep(delay), fsync(descriptor))[1]
        import main as main_script
        from ppo.cli import main
        code = main(main_script.ENTRY, argv)
    except BaseException:  # noqa: BLE001 - shown in the log, and the exit code says so
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no interpreter teardown in a forked child


def serve() -> None:
    """The fork server: imports the trainer once, then reads JSON commands, one a line, from stdin:
    ``{"start": [argv, log, environ]}`` forks a run and answers ``{"pid": PID}``; ``{"wait": PID}`` answers
    ``{"code": EXIT_CODE}`` once that run ended (-9 after SIGKILL). Ends when stdin closes."""
    import json

    import torch  # noqa: F401 - the point: imported once, before the forks
    import main  # noqa: F401
    import ppo.cli  # noqa: F401
    import ppo.run  # noqa: F401
    import ppo.checkpoint  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401
    import torch._inductor  # noqa: F401 - what torch.use_deterministic_algorithms imports (seconds)
    import matplotlib.backends.backend_agg  # noqa: F401 - the learning curve
    import matplotlib.figure  # noqa: F401
    import videos.curves  # noqa: F401
    import videos.capture  # noqa: F401 - --capture-video: imageio, cv2
    import imageio.v2  # noqa: F401
    import imageio.v3  # noqa: F401
    import imageio.plugins.pillow  # noqa: F401
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if "start" in command:
            pid = os.fork()
            if pid == 0:
                _child(*command["start"])
            answer = {"pid": pid}
        else:
            _, status = os.waitpid(command["wait"], 0)
            answer = {"code": os.waitstatus_to_exitcode(status)}
        print(json.dumps(answer), flush=True)


class ForkServer:
    """A running :func:`serve` process: :meth:`start` forks a run of ``main.py``, :meth:`wait` its exit code.
    Runs are the server's children; kill them with ``os.kill(pid, signal)``."""

    def __init__(self) -> None:
        import subprocess
        self.process = subprocess.Popen([sys.executable, __file__, "serve"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                        env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert self._answer() == {"ready": True}

    def _answer(self) -> dict:
        import json
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server ended (exit code {self.process.wait()})")
        return json.loads(line)

    def _ask(self, command: dict) -> dict:
        import json
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def start(self, argv: list[str], log: Path, **environ: str) -> int:
        """Fork ``main.py argv`` (output to ``log``, ``environ`` added); returns its pid."""
        return self._ask({"start": [[str(arg) for arg in argv], str(log), environ]})["pid"]

    def wait(self, pid: int) -> int:
        """The exit code of run ``pid`` once it ended: main's return value, or -N after signal N."""
        return self._ask({"wait": pid})["code"]

    def close(self) -> None:
        """Stop the server (its runs have ended: each was waited for)."""
        self.process.stdin.close()
        self.process.kill()  # no need to wait for the interpreter's teardown
        self.process.wait(timeout=30)


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve()
