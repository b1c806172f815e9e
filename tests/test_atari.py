"""Atari: preprocessing on real ROMs (ale-py ships them), the Nature CNN, and main_atari.py end to end."""

import csv
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from common.errors import UsageError
from networks import NatureCNNActorCritic
from ppo.config import FIELDS, PPOConfig
from ppo.loop import Trainer
from ppo.recorder import EPISODE_COLUMNS, METRIC_COLUMNS
from wrappers import describe_atari_environment, make_atari_env, make_atari_vector_env

FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
# Asterix: 3 lives, a random game lasts ~300 steps, and catching an object scores 50 raw points.
GAME, SEED, NUM_ENVS = "ALE/Asterix-v5", 3, 2


def test_describe_gives_the_preprocessed_observation_space():
    info = describe_atari_environment("ALE/Breakout-v5")
    assert info.family == "atari"
    assert info.observation_space == FRAMES
    assert info.action_space == gym.spaces.Discrete(4)  # Breakout's minimal action set


def test_observations_are_four_stacked_84x84_uint8_frames():
    envs = make_atari_vector_env("ALE/Breakout-v5", NUM_ENVS, evaluation=False, sticky_action_probability=0.25)
    try:
        assert envs.single_observation_space == FRAMES
        assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP  # what the trainer needs
        observations, _ = envs.reset(seed=SEED)
        assert observations.shape == (NUM_ENVS, 4, 84, 84) and observations.dtype == np.uint8
        next_observations, *_ = envs.step(np.zeros(NUM_ENVS, dtype=np.int64))
        assert next_observations.shape == (NUM_ENVS, 4, 84, 84) and next_observations.dtype == np.uint8
        # a stack of the last 4 frames: the newest frame is appended, the oldest dropped
        np.testing.assert_array_equal(next_observations[:, :3], observations[:, 1:])
    finally:
        envs.close()


@pytest.fixture(scope="module")
def paired_rollout():
    """The same random actions in a training and an evaluation env of the same seed, until every env has
    finished two games: both play the identical games, only what learning sees differs."""
    training = make_atari_vector_env(GAME, NUM_ENVS, evaluation=False, sticky_action_probability=0.25)
    evaluation = make_atari_vector_env(GAME, NUM_ENVS, evaluation=True, sticky_action_probability=0.25)
    steps = []
    try:
        train_obs, train_info = training.reset(seed=SEED)
        eval_obs, eval_info = evaluation.reset(seed=SEED)
        lives = train_info["lives"]
        rng = np.random.default_rng(SEED)
        games = np.zeros(NUM_ENVS, dtype=int)
        while games.min() < 2:
            actions = rng.integers(0, training.single_action_space.n, NUM_ENVS)
            train = training.step(actions)
            evaluated = evaluation.step(actions)
            np.testing.assert_array_equal(train[0], evaluated[0])  # same game, same frames
            final = train[4].pop("final_obs", None)  # keep no frames: ~100 KB a step
            evaluated[4].pop("final_obs", None)
            steps.append({"lives_before": lives, "train": train[1:], "eval": evaluated[1:],
                          "final_is_observation": None if final is None else (final == train[0]).all((1, 2, 3))})
            lives = train[4]["lives"]
            games += evaluated[4].get("_episode", np.zeros(NUM_ENVS, dtype=bool))
    finally:
        training.close()
        evaluation.close()
    return steps


def test_learning_rewards_are_clipped_while_logged_returns_are_raw_full_game_scores(paired_rollout):
    raw_game_return = np.zeros(NUM_ENVS)
    clipped_game_return = np.zeros(NUM_ENVS)
    games = 0
    for step in paired_rollout:
        train_rewards, _, _, train_infos = step["train"]
        raw_rewards, _, _, eval_infos = step["eval"]
        assert set(np.unique(train_rewards)) <= {-1, 0, 1}
        np.testing.assert_array_equal(train_rewards, np.sign(raw_rewards))
        raw_game_return += raw_rewards
        clipped_game_return += train_rewards
        # both envs log the game's raw score, at the same step (the real game end)
        np.testing.assert_array_equal(train_infos.get("_episode", np.zeros(NUM_ENVS, bool)),
                                      eval_infos.get("_episode", np.zeros(NUM_ENVS, bool)))
        for index in np.flatnonzero(train_infos.get("_episode", [])):
            assert train_infos["episode"]["r"][index] == eval_infos["episode"]["r"][index] \
                == raw_game_return[index]
            # a raw reward > 1 happened: the score exceeds the clipped sum (Asterix objects score 50)
            assert raw_game_return[index] > clipped_game_return[index] > 0
            raw_game_return[index] = clipped_game_return[index] = 0
            games += 1
    assert games >= 2 * NUM_ENVS


def test_life_loss_ends_learning_episodes_but_not_evaluation_ones(paired_rollout):
    life_losses = 0
    for step in paired_rollout:
        _, train_terminations, train_truncations, train_infos = step["train"]
        _, eval_terminations, eval_truncations, eval_infos = step["eval"]
        game_over = eval_infos.get("_episode", np.zeros(NUM_ENVS, dtype=bool))
        # evaluation episodes end only when the game does
        np.testing.assert_array_equal(eval_terminations | eval_truncations, game_over)
        lost = (train_infos["lives"] < step["lives_before"]) & ~game_over
        # learning episodes end at every lost life too, without resetting the game
        np.testing.assert_array_equal(train_terminations, eval_terminations | lost)
        if lost.any():
            # the final observation of a life is the observation the game goes on from
            assert train_infos["_final_obs"][lost].all() and step["final_is_observation"][lost].all()
        life_losses += int(lost.sum())
    assert life_losses >= 2 * NUM_ENVS  # 3 lives: at least 2 lost before each game over


def test_render_env_for_videos_matches_the_vector_observations():
    env = make_atari_env("ALE/Breakout-v5")
    try:
        observation, _ = env.reset(seed=SEED)
        assert env.observation_space == FRAMES and observation.shape == (4, 84, 84)
        assert observation.dtype == np.uint8 and env.render().shape == (210, 160, 3)
    finally:
        env.close()


def test_nature_cnn_shapes_scaling_and_initialisation():
    torch.manual_seed(0)
    agent = NatureCNNActorCritic((4, 84, 84), gym.spaces.Discrete(6))
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    out = agent.get_action_and_value(frames)
    assert out.action.shape == out.log_prob.shape == out.entropy.shape == out.value.shape == (3,)
    assert out.action.dtype == torch.int64
    # frames are scaled by 1/255 inside the network
    torch.testing.assert_close(agent.preprocess(frames), frames.float() / 255.0)
    hidden, critic_hidden = agent.features(agent.preprocess(frames))
    assert hidden.shape == (3, 512) and hidden is critic_hidden  # one shared trunk
    # orthogonal init: W W^T = gain^2 I (rows fewer than columns); policy gain 0.01 -> near-uniform policy
    conv1 = agent.trunk[0][0].weight.flatten(1)  # [32, 4*8*8]
    torch.testing.assert_close(conv1 @ conv1.T, 2.0 * torch.eye(32), atol=1e-4, rtol=0)
    logits = agent.action_head.logits.weight  # [6, 512]
    torch.testing.assert_close(logits @ logits.T, 1e-4 * torch.eye(6), atol=1e-8, rtol=0)
    assert agent.value_head.weight.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert out.entropy.min().item() == pytest.approx(math.log(6), abs=1e-3)
    with pytest.raises(ValueError):
        NatureCNNActorCritic((4, 84, 84), gym.spaces.Box(-1, 1, (2,)))


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# Pong ends after 21 points; an untrained deterministic policy loses them in well under 1,000 steps.
TINY = ["--environment-id", "ALE/Pong-v5", "--num-envs", "2", "--num-steps-collected", "16",
        "--num-mini-batches", "2", "--num-epochs", "1", "--total-timesteps", "64", "--eval-episodes", "1",
        "--no-progress"]


def test_main_atari_trains_evaluates_and_writes_the_run_directory(cli, tmp_path):
    result = cli("main_atari.py", *TINY, "--output-dir", str(tmp_path), "--run-name", "run")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    assert result.stdout.splitlines()[0] == f"Run directory: {run_dir}"
    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) == set(FIELDS) | {"resolved_learner"}
    # the atari family preset, then Pong's own (envpool's Pong-v5: clip 0.2, no sticky actions), then the flags
    assert (config["environment_id"], config["num_envs"], config["sticky_action_probability"]) == (
        "ALE/Pong-v5", 2, 0.0)
    assert (config["clip_coeff"], config["ent_loss_coeff"], config["learning_rate"]) == (0.2, 0.01, 2.5e-4)
    metrics = read_csv(run_dir / "metrics.csv")
    assert tuple(metrics[0]) == METRIC_COLUMNS and int(metrics[-1]["global_step"]) == 64
    assert tuple((run_dir / "episodes.csv").read_text().splitlines()[0].split(",")) == EPISODE_COLUMNS
    assert any((run_dir / "tensorboard").iterdir())
    checkpoint = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert checkpoint["entry"] == "atari" and checkpoint["global_step"] == 64
    assert checkpoint["observation_shape"] == [4, 84, 84] and checkpoint["observation_dtype"] == "uint8"
    assert -21 <= json.loads((run_dir / "evaluation.json").read_text())["mean_return"] <= 21

    evaluation = cli("main_atari.py", "--evaluate", str(run_dir / "checkpoints" / "final.pt"),
                     "--eval-episodes", "1")
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads(evaluation.stdout.strip().splitlines()[-1])
    assert set(report) == {"mean_return", "std_return", "episodes", "policy", "seconds"} and report["episodes"] == 1
    assert report["policy"] == "sample"  # the atari preset samples, as RL Zoo and CleanRL evaluate Atari agents
    assert -21 <= report["mean_return"] <= 21  # a raw Pong score, not a clipped per-life one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_main_atari_trains_on_the_gpu(cli, tmp_path):
    result = cli("main_atari.py", *TINY, "--use-gpu", "--output-dir", str(tmp_path), "--run-name", "gpu")
    assert result.returncode == 0, result.stderr
    assert "64 steps on cuda" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists")
def test_use_gpu_without_cuda_is_a_one_line_error(cli, tmp_path):
    result = cli("main_atari.py", *TINY, "--use-gpu", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "main_atari.py: error: --use-gpu was given but no CUDA device is available; drop --use-gpu to train "
        "on the CPU"]


def test_main_atari_refuses_other_environments_naming_main_py(cli):
    result = cli("main_atari.py", "--environment-id", "CartPole-v1")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("main_atari.py: error: CartPole-v1") and "main.py" in lines[0]


def test_main_refuses_atari_games_naming_main_atari_py(cli):
    result = cli("main.py", "--environment-id", "ALE/Pong-v5")
    assert result.returncode == 3
    # the last line: ale-py may print its start-up banner on stderr before it
    assert result.stderr.strip().splitlines()[-1] == (
        "main.py: error: ALE/Pong-v5 is an Atari game: train it with main_atari.py")


def test_normalization_flags_are_not_atari_flags(tmp_path, capsys):
    """main_atari.py scales frames in the network and clips rewards: its command line has no normalization
    flags, and a config that asks for them (a preset, a checkpoint) is refused before any work."""
    import main_atari
    from ppo.cli import main
    code = main(main_atari.ENTRY, [*TINY, "--normalize-rewards", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "unrecognized arguments: --normalize-rewards" in capsys.readouterr().err
    with pytest.raises(UsageError, match="drop --normalize-rewards"):
        main_atari.check_config(PPOConfig(environment_id="ALE/Pong-v5", normalize_rewards=True,
                                          normalize_observations=False))
    assert not any(tmp_path.iterdir())  # no run directory was created


def test_fire_follows_every_lost_life_so_a_noop_agent_still_ends_its_games():
    """Breakout needs FIRE to relaunch the ball after a lost life: without it a NOOP agent's first lost life
    freezes the game until the 27,000-step cap. With FIRE after each lost life (training and evaluation envs),
    its games end within a few hundred steps, and in training every lost life ends a learning episode."""
    for evaluation in (False, True):
        envs = make_atari_vector_env("ALE/Breakout-v5", 2, evaluation=evaluation)
        envs.reset(seed=1)
        learning_episode_ends = games = 0
        for _ in range(1500):
            _, _, terminations, truncations, infos = envs.step(np.zeros(2, np.int64))
            learning_episode_ends += int((terminations | truncations).sum())
            games += int(infos.get("_episode", np.zeros(2, bool)).sum())
        envs.close()
        assert games >= 4, (evaluation, games)
        assert learning_episode_ends >= (games if evaluation else 5 * games), (evaluation, learning_episode_ends, games)


def test_breakout_rollout_lines_up_and_one_update_follows_the_advantages():
    """A real Breakout rollout through the collector: rewards clipped to their sign, every lost life a
    termination where the GAE chain is cut (A = r - V there), and one torch update raising the log-probability
    of actions in proportion to their advantage (sign-flipped advantages or a broken loss make it negative)."""
    config = PPOConfig(environment_id="ALE/Breakout-v5", num_envs=8, num_steps_collected=64, num_mini_batches=4,
                       num_epochs=2, total_timesteps=512, learning_rate=2.5e-4, clip_coeff=0.1, ent_loss_coeff=0.01,
                       normalize_observations=False, normalize_rewards=False, learner="torch")
    info = describe_atari_environment(config.environment_id)
    envs = make_atari_vector_env(config.environment_id, config.num_envs)
    torch.manual_seed(0)
    agent = NatureCNNActorCritic(info.observation_space.shape, info.action_space)
    trainer = Trainer(config, envs, agent, torch.device("cpu"))
    trainer.seed_everything()
    assert trainer.collect_rollout()
    envs.close()
    buffer = trainer.buffer
    assert set(buffer.rewards.unique().tolist()) <= {-1.0, 0.0, 1.0} and buffer.rewards.abs().sum() > 0
    terminal = buffer.terminations.bool()
    assert terminal.sum() >= 2 and not buffer.truncations.any()
    torch.testing.assert_close(buffer.advantages[terminal], buffer.rewards[terminal] - buffer.values[terminal])
    observations, actions = buffer.observations.flatten(0, 1), buffer.actions.flatten()
    advantages = buffer.advantages.flatten()
    advantages = (advantages - advantages.mean()) / advantages.std()
    with torch.no_grad():
        before = agent.get_action_and_value(observations, actions).log_prob
    trainer.learner.update(buffer, config.clip_coeff)
    with torch.no_grad():
        after = agent.get_action_and_value(observations, actions).log_prob
    assert float(((after - before) * advantages).mean()) > 0
