"""Flags generated from the config dataclass, presets and their precedence."""

import pytest

from ppo.config import FIELDS, resolve_config
from common.errors import UsageError
from ppo.presets import load_presets, presets_for, published_result


@pytest.mark.parametrize("environment_id", sorted(load_presets()["environment"]))
def test_every_environment_preset_resolves_to_a_valid_config(environment_id):
    family = "discrete" if environment_id in ("CartPole-v1", "LunarLander-v3") else "continuous"
    presets = presets_for(environment_id, family)
    assert presets and all(source for source, _ in presets)
    config = resolve_config({"environment_id": environment_id}, *(values for _, values in presets))
    assert config.batch_size % config.num_mini_batches == 0


def test_flags_win_over_presets_and_presets_are_layered():
    family = {"num_envs": 4, "num_epochs": 4}
    environment = {"num_epochs": 20}
    config = resolve_config({"num_envs": 2}, family, environment)
    assert (config.num_envs, config.num_epochs) == (2, 20)


def test_unknown_preset_key_is_refused():
    with pytest.raises(UsageError, match="unknown hyperparameter 'num_env'"):
        resolve_config({}, {"num_env": 3})


def test_published_results_are_on_record_for_the_targets():
    for environment_id in ("CartPole-v1", "Pendulum-v1", "LunarLander-v3", "InvertedPendulum-v4", "Hopper-v4",
                           "HalfCheetah-v4", "Walker2d-v4", "Humanoid-v4"):
        assert {"steps", "mean_return", "source"} <= set(published_result(environment_id))
    assert published_result("NoSuchEnv-v0") is None


def test_list_presets_and_eval_random(cli, tmp_path):
    listing = cli("main.py", "--list-presets")
    assert listing.returncode == 0 and 'environment Hopper-v4' in listing.stdout
    run = cli("main.py", "--num-envs", "2", "--num-steps-collected", "16", "--num-mini-batches", "2",
              "--total-timesteps", "32", "--eval-episodes", "2", "--no-progress", "--output-dir", str(tmp_path),
              "--run-name", "r")
    assert run.returncode == 0, run.stderr
    assert "Compare: published PPO 500 at 100,000 steps (RL Zoo); gymnasium reward threshold 475.0" in run.stdout
    evaluation = cli("main.py", "--evaluate", str(tmp_path / "r" / "checkpoints" / "final.pt"), "--eval-random")
    assert evaluation.returncode == 0, evaluation.stderr
    assert "random agent:" in evaluation.stdout
    import json
    report = json.loads(evaluation.stdout.strip().splitlines()[-1])
    assert report["random_mean_return"] > 0 and report["episodes"] == 2


def test_every_field_has_help_and_a_flag():
    for name, f in FIELDS.items():
        assert f.metadata["help"], name
