"""Never lose a run (issue #23): run-name collisions, write failures (full disk, quota, read-only file system,
I/O error), SIGKILL at random moments with resumes, signals during the final evaluation and the videos, an
environment that raises, and bad input at scale (hypothesis)."""

from __future__ import annotations

import builtins
import contextlib
import csv
import errno
import hashlib
import importlib
import io
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import main as main_script
from ppo.checkpoint import load_checkpoint
from ppo.cli import main
from tests import fault_tools  # noqa: F401 - registers the scripted envs
from tests.fault_tools import ForkServer

TINY = ["--num-envs", "2", "--num-steps-collected", "16", "--num-mini-batches", "2", "--num-epochs", "1",
        "--no-progress", "--num-threads", "1"]
DOCUMENTED_CODES = {0, 2, 3, 4, 5, 6, 130}


def run(*argv: str, entry=main_script.ENTRY) -> tuple[int, str, str]:
    """``main.py argv`` (or ``entry``'s script) in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(entry, list(argv))
    return code, out.getvalue(), err.getvalue()


def one_error_line(stderr: str, script: str = "main.py") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checked_note(line: str) -> tuple[Path, int]:
    """The checkpoint and step a message calls intact; the file must load and hold that step."""
    match = re.search(r"the last good checkpoint (\S+) \(step (\d+)\) is intact", line)
    assert match, line
    path, step = Path(match.group(1)), int(match.group(2))
    assert int(load_checkpoint(path)["global_step"]) == step > 0
    return path, step


# 1. Run-name collisions ----------------------------------------------------------------------------------------
def test_an_existing_run_name_is_refused_and_the_first_run_is_untouched(tmp_path):
    assert run("--output-dir", str(tmp_path), "--run-name", "same", *TINY, "--total-timesteps", "64",
               "--eval-episodes", "1")[0] == 0
    run_dir = tmp_path / "same"
    before = {path.name: digest(path) for path in [*run_dir.glob("*.*"), *run_dir.glob("checkpoints/*")]}
    code, _, stderr = run("--output-dir", str(tmp_path), "--run-name", "same", *TINY, "--total-timesteps", "32")
    assert code == 2
    line = one_error_line(stderr)
    assert f"--resume {run_dir / 'checkpoints' / 'latest.pt'}" in line and "--run-name" in line
    assert {path.name: digest(path) for path in [*run_dir.glob("*.*"), *run_dir.glob("checkpoints/*")]} == before
    # an existing directory that is not a run is refused as well (only --resume writes into a directory)
    (tmp_path / "mine").mkdir()
    code, _, stderr = run("--output-dir", str(tmp_path), "--run-name", "mine", *TINY, "--total-timesteps", "32")
    assert code == 2 and "--resume CHECKPOINT" in one_error_line(stderr)
    assert list((tmp_path / "mine").iterdir()) == []


def test_default_run_names_never_collide(tmp_path, monkeypatch):
    # every run "starts in the same second": 4 threads x 8 runs claim directories at once
    import ppo.run_dir
    from ppo.config import PPOConfig
    monkeypatch.setattr(ppo.run_dir, "default_run_name", lambda config: "CartPole-v1__1__20260101-000000")
    config = PPOConfig(output_dir=str(tmp_path))
    claimed: list[Path] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        for _ in range(8):
            claimed.append(ppo.run_dir.prepare_run_dir(config, None))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    with ppo.run_dir.run_dir_locks():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    names = sorted(path.name for path in claimed)
    assert len(set(names)) == 32 and len(list(tmp_path.iterdir())) == 32
    base = "CartPole-v1__1__20260101-000000"
    assert set(names) == {base} | {f"{base}-{index}" for index in range(2, 33)}
    # and a run started with a taken default name trains in the next one
    code, stdout, _ = run("--output-dir", str(tmp_path), *TINY, "--total-timesteps", "32", "--eval-episodes", "0")
    assert code == 0 and f"Run directory: {tmp_path / (base + '-33')}" in stdout
    assert (tmp_path / f"{base}-33" / "checkpoints" / "final.pt").exists()


# 2. Write failures ---------------------------------------------------------------------------------------------
class _Unwritable:
    """A file whose writes fail with ``error`` once ``budget[0]`` writes (shared with other files) went through;
    everything else goes to the real file."""

    def __init__(self, real, error: OSError, budget: list[int]) -> None:
        self._real, self._error, self._budget = real, error, budget

    def write(self, data):
        if not len(data):
            return 0
        if self._budget[0] <= 0:
            raise self._error
        self._budget[0] -= 1
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __iter__(self):
        return iter(self._real)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._real.close()


@contextlib.contextmanager
def failing_writes(root: Path, target: str, code: int, allow: int = 0):
    """Files under ``root`` whose path contains ``target`` accept ``allow`` writes, then every write fails with
    OSError(``code``), as on a disk that just filled up (for all threads: TensorBoard writes in its own)."""
    real_open = builtins.open
    budget = [allow]

    def fake_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        path = os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else ""
        if any(flag in mode for flag in "wax") and path.startswith(str(root)) and target in path[len(str(root)):]:
            return _Unwritable(handle, OSError(code, os.strerror(code), path), budget)
        return handle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, "open", fake_open)
        patch.setattr(io, "open", fake_open)
        yield


WRITE_FAILURES = [  # (what fails, errno, writes that still succeed)
    ("latest", errno.ENOSPC, 2),  # the third checkpoint
    ("metrics.csv", errno.EDQUOT, 4),  # the header and three rows
    ("episodes.csv", errno.EIO, 3),
    ("tensorboard", errno.EROFS, 60),  # the events of about four iterations (written by its own thread)
    ("evaluation", errno.ENOSPC, 0),  # evaluation.json, after training: final.pt is the one kept
]


@pytest.mark.parametrize("target,code,allow", WRITE_FAILURES, ids=[case[0] for case in WRITE_FAILURES])
def test_a_write_failure_is_one_line_naming_the_file_and_the_intact_checkpoint(tmp_path, target, code, allow):
    with failing_writes(tmp_path, target, code, allow):
        result = run("--output-dir", str(tmp_path), "--run-name", "w", *TINY, "--total-timesteps", "320",
                     "--checkpoint-interval", "1", "--eval-episodes", "1")
    assert result[0] == 6, result[2]
    line = one_error_line(result[2])
    assert f"could not write '{tmp_path / 'w'}" in line and target in line.split("(")[0], line
    assert f"({os.strerror(code)})" in line
    path, step = checked_note(line)
    if target == "evaluation":
        assert path.name == "final.pt" and step == 320
    assert not list((tmp_path / "w" / "checkpoints").glob(".*"))  # no temporary file left behind


def test_videos_and_curves_that_cannot_be_written_warn_once_and_the_run_goes_on(tmp_path):
    with failing_writes(tmp_path, "videos", errno.ENOSPC), failing_writes(tmp_path, "learning_curve", errno.ENOSPC):
        code, stdout, stderr = run("--output-dir", str(tmp_path), "--run-name", "v", *TINY, "--total-timesteps",
                                   "64", "--eval-episodes", "1", "--capture-video")
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.strip()]
    assert len(warnings) == 2 and "Traceback" not in stderr, stderr  # before and after videos: one warning
    assert "could not write the before videos" in warnings[0] and "No space left on device" in warnings[0]
    assert "learning_curve.png" in warnings[1] and "training goes on" in warnings[1]
    assert int(load_checkpoint(tmp_path / "v" / "checkpoints" / "final.pt")["global_step"]) == 64
    assert (tmp_path / "v" / "evaluation.json").exists() and "Evaluation" in stdout


@pytest.fixture
def small_filesystem(tmp_path):
    """A 512 KiB tmpfs, where this test may mount one (root on Linux); skipped elsewhere."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the injected-OSError tests cover the same paths)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_ends_the_run_with_one_line_and_the_last_checkpoint_intact(small_filesystem):
    (small_filesystem / "filler").write_bytes(b"\0" * 300 * 1024)  # leave about 200 KiB
    code, _, stderr = run("--output-dir", str(small_filesystem), "--run-name", "full", *TINY, "--total-timesteps",
                          "100000", "--checkpoint-interval", "1", "--eval-episodes", "0")
    assert code == 6, stderr
    line = one_error_line(stderr)
    assert "No space left on device" in line and f"could not write '{small_filesystem / 'full'}" in line
    checked_note(line)


# 3. Faults at any moment ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fork_server():
    server = ForkServer()
    yield server
    server.close()


def read_rows(path: Path, drop: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    with path.open(newline="") as handle:
        return [tuple(value for key, value in row.items() if key not in drop) for row in csv.DictReader(handle)]


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def rows_in(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_moments_then_resume_loses_nothing(fork_server, tmp_path):
    """24 SIGKILLs of one run at random moments (start-up and resume, rollouts and updates, checkpoint
    writes), each followed by --resume from checkpoints/latest.pt: after every kill the newest checkpoint
    loads, and the run ends with the curves and weights of an uninterrupted one: no gaps, no repeats."""
    iterations = 160
    flags = ["--environment-id", "CartPole-v1", *TINY, "--checkpoint-interval", "1", "--deterministic-torch",
             "--eval-episodes", "0", "--total-timesteps", str(32 * iterations), "--output-dir", str(tmp_path)]
    reference = fork_server.start([*flags, "--run-name", "reference"], tmp_path / "reference.log")
    assert fork_server.wait(reference) == 0, (tmp_path / "reference.log").read_text()

    rng = random.Random(23)
    run_dir = tmp_path / "killed"
    checkpoints, latest = run_dir / "checkpoints", run_dir / "checkpoints" / "latest.pt"
    argv = [*flags, "--run-name", "killed"]
    kills = during_writes = step = 0
    while kills < 24:
        # checkpoint writes take 5 ms (a slow disk), so that kills land inside them on fast disks too
        pid = fork_server.start(argv, tmp_path / f"life{kills}.log", FAULT_SLOW_FSYNC="0.005")
        if kills == 0:
            wait_for(latest.exists)  # before the first checkpoint there is nothing to resume
        mode = kills % 3
        if mode == 0:  # anywhere, start-up and the resume's own writes included (at most 4 iterations on)
            deadline = time.monotonic() + rng.uniform(0.0, 0.2)
            wait_for(lambda: time.monotonic() > deadline or rows_in(run_dir / "metrics.csv") >= step // 32 + 4)
        elif mode == 1:  # as soon as a checkpoint is being written
            wait_for(lambda: any(name.startswith(".latest.") for name in os.listdir(checkpoints))
                     or rows_in(run_dir / "metrics.csv") >= step // 32 + 4)
        else:  # a few iterations on, somewhere in a rollout or an update
            target = step // 32 + rng.randint(1, 3)
            wait_for(lambda: rows_in(run_dir / "metrics.csv") >= target)
            time.sleep(rng.uniform(0.0, 0.02))
        os.kill(pid, signal.SIGKILL)
        assert fork_server.wait(pid) == -signal.SIGKILL, (tmp_path / f"life{kills}.log").read_text()
        kills += 1
        during_writes += any(name.startswith(".latest.") for name in os.listdir(checkpoints))
        newest = int(load_checkpoint(latest)["global_step"])  # the newest checkpoint loads, every time
        assert newest >= step
        step = newest
        argv = ["--resume", str(latest), "--no-progress"]
    assert step < 32 * iterations  # every kill struck a run under way
    pid = fork_server.start(argv, tmp_path / "last.log")
    assert fork_server.wait(pid) == 0, (tmp_path / "last.log").read_text()
    assert during_writes >= 4, during_writes  # kills that left a checkpoint half written

    times = ("wall_time_s", "sps")
    metrics = read_rows(run_dir / "metrics.csv", times)
    assert [int(row[0]) for row in metrics] == list(range(1, iterations + 1))
    assert metrics == read_rows(tmp_path / "reference" / "metrics.csv", times)
    assert read_rows(run_dir / "episodes.csv", times) == read_rows(tmp_path / "reference" / "episodes.csv", times)
    final, expected = load_checkpoint(checkpoints / "final.pt"), load_checkpoint(
        tmp_path / "reference" / "checkpoints" / "final.pt")
    assert all(torch.equal(final["model"][key], expected["model"][key]) for key in expected["model"])
    assert not [path for path in [*run_dir.glob(".*.tmp.*"), *checkpoints.glob(".*")]]  # stale temporaries removed


def test_a_run_under_way_cannot_be_resumed_twice_and_a_killed_one_can(fork_server, tmp_path):
    # a second --resume of a live run would write the same files: refused; after kill -9 the lock is gone
    log, latest = tmp_path / "run.log", tmp_path / "live" / "checkpoints" / "latest.pt"
    pid = fork_server.start(["--environment-id", "CartPole-v1", *TINY, "--checkpoint-interval", "1",
                             "--total-timesteps", "10000000", "--output-dir", str(tmp_path), "--run-name", "live"], log)
    try:
        wait_for(latest.exists)
        code, _, stderr = run("--resume", str(latest), "--no-progress")
        assert code == 2
        assert f"is in use by another run (pid {pid})" in one_error_line(stderr)
    finally:
        os.kill(pid, signal.SIGKILL)
        fork_server.wait(pid)
    step = int(load_checkpoint(latest)["global_step"])
    code, _, stderr = run("--resume", str(latest), "--no-progress", "--total-timesteps", str(step + 32))
    assert code == 0, stderr
    assert int(load_checkpoint(tmp_path / "live" / "checkpoints" / "final.pt")["global_step"]) == step + 32


SLOW = ["--num-envs", "1", "--num-steps-collected", "16", "--num-mini-batches",
        "2", "--num-epochs", "1", "--total-timesteps", "64", "--no-progress", "--checkpoint-interval", "0"]


@pytest.mark.parametrize("phase", ["final evaluation", "video capture"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_training_exits_130_naming_the_final_checkpoint(fork_server, tmp_path, phase, sig):
    marker = tmp_path / "marker"
    marker.touch()
    if phase == "final evaluation":  # 16 slow episodes of 200 steps; the evaluation envs' resets tell it began
        flags, variable = ["--environment-id", "FaultSlowSteps-v0", "--eval-episodes", "16"], "FAULT_RESET_MARKER"
    else:  # a slowly rendered episode of 100 steps; its renders tell that the capture began
        flags = ["--environment-id", "FaultSlowRender-v0", "--eval-episodes", "0", "--capture-video"]
        variable = "FAULT_RENDER_MARKER"
    log, final = tmp_path / "run.log", tmp_path / "s" / "checkpoints" / "final.pt"
    pid = fork_server.start([*SLOW, *flags, "--output-dir", str(tmp_path), "--run-name", "s"], log,
                            **{variable: str(marker)})
    wait_for(lambda: rows_in(tmp_path / "s" / "metrics.csv") > 0)  # training under way: no resets or renders
    marks = marker.stat().st_size
    wait_for(final.exists)
    wait_for(lambda: marker.stat().st_size > marks)
    os.kill(pid, sig)
    assert fork_server.wait(pid) == 130, log.read_text()
    output = log.read_text()
    assert "Traceback" not in output
    message = [line for line in output.splitlines() if line.startswith("Interrupted")]
    assert message == [f"Interrupted during the {phase}; training had finished: the last good checkpoint "
                       f"{final} (step 64) is intact"], output
    assert int(load_checkpoint(final)["global_step"]) == 64
    assert not (tmp_path / "s" / "evaluation.json").exists()


def test_a_signal_as_training_ends_still_names_the_final_checkpoint(fork_server, tmp_path):
    # SIGTERM as soon as final.pt exists: while files and envs close, or as the evaluation begins
    log, final = tmp_path / "run.log", tmp_path / "s" / "checkpoints" / "final.pt"
    pid = fork_server.start([*SLOW, "--environment-id", "FaultSlowSteps-v0", "--eval-episodes", "16",
                             "--output-dir", str(tmp_path), "--run-name", "s"], log)
    wait_for(final.exists)
    os.kill(pid, signal.SIGTERM)
    assert fork_server.wait(pid) == 130, log.read_text()
    output = log.read_text()
    message = [line for line in output.splitlines() if line.startswith("Interrupted")]
    assert len(message) == 1 and message[0].endswith(f"the last good checkpoint {final} (step 64) is intact"), output
    assert "Traceback" not in output and "main.py: interrupted" not in output


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_environment_that_raises_is_one_line_and_the_last_iteration_is_kept(fork_server, tmp_path, mode):
    # FaultRaiseAfter100-v0 raises in step() at its 101st step: in the 7th rollout of 16 steps (async: in the
    # worker process, and gymnasium's own warnings about it are kept off stderr); a real process, so that
    # what reaches stderr is what a user sees
    log = tmp_path / "run.log"
    pid = fork_server.start(["--environment-id", "FaultRaiseAfter100-v0", "--vectorization-mode", mode, "--num-envs",
                             "1", "--num-steps-collected", "16", "--num-mini-batches", "2", "--num-epochs", "1",
                             "--total-timesteps", "320", "--checkpoint-interval", "0", "--no-progress",
                             "--output-dir", str(tmp_path), "--run-name", "e"], log)
    code = fork_server.wait(pid)
    stderr = "\n".join(line for line in log.read_text().splitlines() if "error" in line.lower()
                       or "warning" in line.lower() or "Traceback" in line)
    assert code == 3
    line = one_error_line(stderr)
    latest = tmp_path / "e" / "checkpoints" / "latest.pt"
    assert ("environment FaultRaiseAfter100-v0 raised RuntimeError in step(): sensor cable unplugged" in line
            and f"{latest} holds the last completed iteration (step 96)" in line and "--resume" in line), line
    state = load_checkpoint(latest)
    assert (int(state["iteration"]), int(state["global_step"])) == (6, 96)
    assert len(read_rows(tmp_path / "e" / "metrics.csv")) == 6


# 4. Bad input at scale -----------------------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


def _flag_strategies(entry, paths: list[str]):
    """One strategy per option of ``entry``'s parser: its flag followed by a value (good or bad) if it takes
    one."""
    import argparse
    from ppo.cli import build_parser

    junk = st.sampled_from(["", "-1", "0", "nan", "inf", "1e309", "x", "3.5", "--", "é", "1" * 30])
    strategies = []
    for action in build_parser(entry)._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings or action.dest == "debug":
            continue
        flag = st.sampled_from(action.option_strings)
        if action.nargs == 0:
            strategies.append(st.tuples(flag))
            continue
        if action.choices:
            value = st.one_of(st.sampled_from([str(choice) for choice in action.choices]), junk)
        elif action.type is int:
            value = st.one_of(st.integers(-5, 5000).map(str), junk)
        elif action.type is float:
            value = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.floats(-2, 2).map(repr),
                              st.sampled_from(["1e-4", "0.99", "0.5"]), junk)
        else:
            value = st.one_of(st.sampled_from(paths), junk,
                              st.sampled_from(["CartPole-v1", "Pendulum-v1", "ALE/Pong-v5", "ALE/Breakout-v5",
                                               "ALE/Nope-v5", "brax/ant", "Nope-v0"]))
        strategies.append(st.tuples(flag, value))
    return strategies


@pytest.fixture(scope="module")
def bad_input_world(tmp_path_factory):
    """Paths to give the flags: a real checkpoint, broken ones, a directory, a file as a directory."""
    root = tmp_path_factory.mktemp("bad-input")
    assert run("--output-dir", str(root), "--run-name", "good", *TINY, "--total-timesteps", "32",
               "--eval-episodes", "0")[0] == 0
    (root / "garbage.pt").write_bytes(os.urandom(512))
    (root / "text.pt").write_text("hello")
    (root / "a-file").write_text("")
    return root, [str(root / "good" / "checkpoints" / "final.pt"), str(root / "missing.pt"),
                  str(root / "garbage.pt"), str(root / "text.pt"), str(root), str(root / "a-file" / "sub"),
                  str(root / "out.gif"), str(root / "out.mp4"), str(root / "out.txt")]


@pytest.mark.parametrize("script,examples", [("main.py", 300), ("main_atari.py", 60)])
def test_random_flag_combinations_exit_with_documented_codes_and_no_traceback(bad_input_world, monkeypatch, script,
                                                                              examples):
    """A few hundred random combinations of flags and values per run. Training is not the point: a run stops
    once its arguments are resolved (the run directory, evaluation and recording are stubbed), so every
    combination checks parsing, presets, validation, environment ids and checkpoint reading."""
    import ppo.actions
    import ppo.run
    import videos.render
    root, paths = bad_input_world
    monkeypatch.chdir(root)
    monkeypatch.setattr(ppo.run, "_run", lambda *args, **kwargs: 0)
    monkeypatch.setattr(ppo.actions, "evaluate_agent", lambda *args, **kwargs: {
        "mean_return": 1.0, "std_return": 0.0, "episodes": 1, "policy": "mode", "seconds": 0.0})
    monkeypatch.setattr(videos.render, "record_episodes", lambda *args, **kwargs: videos.render.Recording(
        frames=[np.zeros((8, 8, 3), np.uint8)], returns=[1.0], lengths=[1]))
    before = digest(Path(paths[0]))
    outcomes: dict[int, int] = {}

    entry = importlib.import_module(script[:-3]).ENTRY

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(*_flag_strategies(entry, paths)), max_size=6))
    def check(flags):
        argv = [part for flag in flags for part in flag]
        code, stdout, stderr = run(*argv, entry=entry)
        outcomes[code] = outcomes.get(code, 0) + 1
        assert code in DOCUMENTED_CODES, (argv, code, stderr)
        assert "Traceback" not in stdout + stderr, (argv, stderr)
        if code:
            one_error_line(stderr, script)

    check()
    assert digest(Path(paths[0])) == before  # no combination changed the checkpoint
    assert sum(outcomes.values()) >= examples // 2 and set(outcomes) - {0}, outcomes  # refusals among them
