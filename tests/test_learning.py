"""main.py with its defaults learns CartPole-v1, with either learner."""

import json

import pytest


@pytest.mark.parametrize("learner", ["numpy", "torch"])
def test_default_cartpole_reaches_475(cli, tmp_path, learner):
    result = cli("main.py", "--seed", "1", "--learner", learner, "--output-dir", str(tmp_path), "--run-name", "learn",
                 "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"Learner: {learner} (--learner)" in result.stdout.splitlines()
    evaluation = cli("main.py", "--evaluate", str(tmp_path / "learn" / "checkpoints" / "final.pt"))
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads(evaluation.stdout.strip().splitlines()[-1])
    assert report["episodes"] == 10
    assert report["mean_return"] >= 475, report
