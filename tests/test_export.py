"""``--export CHECKPOINT --output FILE.onnx``: the ONNX policy, run by onnxruntime on real observations, takes
the actions of the PyTorch policy (``agent.act(obs, deterministic=True)``, Box actions clipped to the bounds)
for a CartPole and a Pendulum MLP with trained observation statistics and for the Atari CNN."""

import json

import numpy as np
import pytest
import torch

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import main as main_entry  # noqa: E402
import main_atari as atari_entry  # noqa: E402
from ppo.checkpoint import load_checkpoint  # noqa: E402
from ppo.config import PPOConfig  # noqa: E402
from ppo.entry import load_policy  # noqa: E402
from ppo.export import export_policy  # noqa: E402

TRAIN = ["--num-envs", "2", "--num-steps-collected", "64", "--num-mini-batches", "2", "--num-epochs", "1",
         "--total-timesteps", "256", "--eval-episodes", "0", "--no-progress", "--run-name", "run"]


def train(cli, script, environment_id, tmp_path, *flags):
    result = cli(script, "--environment-id", environment_id, *TRAIN, *flags, "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    return tmp_path / "run" / "checkpoints" / "final.pt"


def real_observations(entry, config, steps=40):
    """Observations ``[2 * steps, ...]`` of two evaluation envs under random actions."""
    envs = entry.make_envs(config, 2, evaluation=True)
    try:
        observations, _ = envs.reset(seed=3)
        envs.action_space.seed(3)
        batch = [observations]
        for _ in range(steps - 1):
            observations = envs.step(envs.action_space.sample())[0]
            batch.append(observations)
    finally:
        envs.close()
    return np.concatenate(batch)


def check_export(cli, script, entry, checkpoint, tmp_path):
    """Export through the command line and compare onnxruntime's actions with the agent's."""
    output = tmp_path / "exported" / "policy.onnx"
    result = cli(script, "--export", str(checkpoint), "--output", str(output))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == str(output) and output.is_file()
    summary = json.loads(lines[-1])
    config, info, agent = load_policy(entry, load_checkpoint(checkpoint), str(checkpoint))
    observations = real_observations(entry, config)
    dtype = np.uint8 if summary["observation_dtype"] == "uint8" else np.float32
    session = onnxruntime.InferenceSession(str(output))
    for batch in (observations, observations[:1]):  # the batch dimension is dynamic
        batch = batch.astype(dtype)
        actions = session.run(["actions"], {"observations": batch})[0]
        with torch.inference_mode():
            expected = agent.act(torch.as_tensor(batch), deterministic=True).numpy()
        if summary["actions"] == "continuous":
            expected = np.clip(expected, info.action_space.low, info.action_space.high)
            assert actions.dtype == np.float32 and actions.shape == expected.shape
            np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=1e-5)
        else:
            assert actions.dtype == np.int64 and actions.shape == (len(batch),)
            np.testing.assert_array_equal(actions, expected)
    return summary, agent, observations, session


@pytest.mark.parametrize("environment_id,kind", [("CartPole-v1", "discrete"), ("Pendulum-v1", "continuous")])
def test_exported_mlp_takes_the_agents_actions(cli, tmp_path, environment_id, kind):
    checkpoint = train(cli, "main.py", environment_id, tmp_path, "--normalize-observations")
    summary, agent, observations, _ = check_export(cli, "main.py", main_entry.ENTRY, checkpoint, tmp_path)
    assert summary["actions"] == kind and summary["environment_id"] == environment_id
    # the statistics the export must carry are not the identity: without them the actions would differ
    normalizer = agent.normalizer
    assert normalizer is not None and normalizer.count > 100
    assert not torch.allclose(normalizer(torch.as_tensor(observations)), torch.as_tensor(observations))


def test_exported_box_actions_are_clipped_to_the_bounds(tmp_path):
    """A Pendulum agent whose mean is far outside [-2, 2]: the model returns the clipped mean."""
    info = main_entry.describe("Pendulum-v1")
    config = PPOConfig(environment_id="Pendulum-v1")
    agent = main_entry.make_agent(config, info)
    with torch.no_grad():
        agent.action_head.mean.bias.fill_(50.0)
    path = export_policy(agent, info, tmp_path / "policy.onnx")
    observations = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    actions = onnxruntime.InferenceSession(str(path)).run(["actions"], {"observations": observations})[0]
    np.testing.assert_array_equal(actions, np.full((5, 1), 2.0, dtype=np.float32))


def test_exported_cnn_takes_the_agents_actions(cli, tmp_path):
    checkpoint = train(cli, "main_atari.py", "ALE/Pong-v5", tmp_path)
    summary, _, observations, session = check_export(cli, "main_atari.py", atari_entry.ENTRY, checkpoint, tmp_path)
    assert summary["observation_dtype"] == "uint8" and observations.shape[1:] == (4, 84, 84)
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["environment_id"] == "ALE/Pong-v5" and json.loads(metadata["observation_shape"]) == [4, 84, 84]


@pytest.mark.parametrize("output,message", [(None, "--output FILE.onnx"), ("policy.gif", "--output FILE.onnx")])
def test_export_needs_an_onnx_output(cli, tmp_path, output, message):
    args = ["--export", str(tmp_path / "missing.pt")] + (["--output", str(tmp_path / output)] if output else [])
    result = cli("main.py", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_export_of_a_missing_checkpoint_is_a_checkpoint_error(cli, tmp_path):
    result = cli("main.py", "--export", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "p.onnx"))
    assert result.returncode == 4 and "does not exist" in result.stderr
    assert not (tmp_path / "p.onnx").exists()


def test_export_cannot_be_combined_with_evaluate(cli, tmp_path):
    result = cli("main.py", "--export", "a.pt", "--evaluate", "a.pt", "--output", str(tmp_path / "p.onnx"))
    assert result.returncode == 2 and "cannot be combined" in result.stderr
