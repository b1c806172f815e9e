"""Start-up and exit of the entry scripts: what ``import main`` loads, no TorchDynamo for a CartPole run, and
the frozen garbage collector at the end (``ppo.cli.finish``). The times themselves are measured by
``benchmarks/startup.py``; these tests check the behaviour that gives them, in fresh interpreters."""

import json
import subprocess
import sys

from tests.conftest import ROOT

# Loaded when they are used (videos, curves, TensorBoard, export, namespaces), not by ``import main``.
LAZY = ["matplotlib", "torch.utils.tensorboard", "tensorboard", "torch._dynamo", "cv2", "imageio", "onnx",
        "onnxscript", "ppo.export", "ppo.run", "videos", "PIL", "mujoco", "ale_py", "pygame", "dm_control"]


def python(code):
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_entry_scripts_loads_none_of_the_lazy_modules():
    loaded = python(f"import json, sys, main, main_atari; print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))")
    assert loaded == []


def test_a_cartpole_run_and_its_resume_never_import_torchdynamo(tmp_path):
    code = f"""
import gc, json, sys
import main
from ppo.cli import finish, main as cli
args = ["--num-envs", "2", "--num-steps-collected", "32", "--total-timesteps", "128", "--eval-episodes", "1",
        "--no-progress", "--output-dir", {str(tmp_path)!r}]
first = cli(main.ENTRY, [*args, "--run-name", "a"])
resumed = cli(main.ENTRY, ["--resume", {str(tmp_path / 'a' / 'checkpoints' / 'final.pt')!r}, "--total-timesteps",
                           "256", "--no-progress"])
dynamo = "torch._dynamo" in sys.modules
frozen_before = gc.get_freeze_count()
code = finish(first + resumed)
print(json.dumps([code, dynamo, frozen_before, gc.get_freeze_count() > 0]))
"""
    code, dynamo, frozen_before, frozen = python(code)
    assert code == 0 and not dynamo  # the optimizer was made, stepped, saved and loaded without TorchDynamo
    assert frozen_before == 0 and frozen


def test_the_learning_curve_does_not_load_the_video_modules():
    loaded = python("import json, sys; from videos import plot_learning_curve; import videos.curves; "
                    "print(json.dumps([m for m in ('cv2', 'imageio', 'videos.render', 'videos.writers') "
                    "if m in sys.modules]))")
    assert loaded == []


def test_the_final_learning_curve_is_drawn_after_the_evaluation(cli, tmp_path):
    result = cli("main.py", "--num-envs", "2", "--num-steps-collected", "32", "--total-timesteps", "128",
                 "--eval-episodes", "2", "--no-progress", "--output-dir", str(tmp_path), "--run-name", "run")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    # drawn by run_training once the evaluation is printed (not at the last checkpoint, before it)
    assert (run / "learning_curve.png").stat().st_mtime_ns > (run / "evaluation.json").stat().st_mtime_ns
