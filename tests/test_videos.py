"""Videos and learning curves: frames rendered from real envs (CartPole through pygame, InvertedPendulum
through MuJoCo's EGL), GIF/MP4 files read back, the PNG of episodes.csv, and the --capture-video and
``--record`` command lines."""

import json
import math
import os

import gymnasium as gym
import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import main as main_entry
from networks import MLPActorCritic
from videos import (read_frames, record_episodes, side_by_side, write_gif, write_mp4, write_side_by_side_gif,
                    write_video)
from ppo.cli import main
from videos.curves import moving_average, plot_learning_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def expected_frames(lengths, stride):
    """One frame after each reset, then every stride-th step and the last step of each episode."""
    return sum(1 + math.ceil(length / stride) for length in lengths)


def mp4_frame_count_and_size(path):
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return reader.count_frames(), reader.get_meta_data()["size"]
    finally:
        reader.close()


def untrained_agent(environment_id):
    env = gym.make(environment_id)
    torch.manual_seed(0)
    agent = MLPActorCritic(env.observation_space.shape, env.action_space, normalize_observations=True)
    env.close()
    return agent


def test_random_cartpole_gif_and_mp4_have_every_frame(tmp_path):
    recording = record_episodes("CartPole-v1", None, 1, seed=0)
    # a random CartPole episode is short (< 200 steps): stride 1, every step kept; 600x400 -> 320x214
    assert recording.lengths[0] < 100 and recording.returns == [float(recording.lengths[0])]
    assert recording.stride == 1
    count = recording.lengths[0] + 1
    assert len(recording.frames) == count

    gif = write_gif(tmp_path / "random.gif", recording.frames, recording.fps)
    frames = iio.imread(gif, index=None)
    assert frames.shape == (count, 214, 320, 3)
    mp4 = write_mp4(tmp_path / "random.mp4", recording.frames, recording.fps)
    assert mp4_frame_count_and_size(mp4) == (count, (320, 214))
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]  # temporary files renamed


def test_untrained_mlp_agent_is_recorded_deterministically_and_stochastically(tmp_path):
    agent = untrained_agent("CartPole-v1")
    agent.train()
    first = record_episodes("CartPole-v1", agent, 2, seed=5)
    again = record_episodes("CartPole-v1", agent, 2, seed=5)
    assert agent.training  # mode restored
    assert first.returns == again.returns and len(first.returns) == 2
    assert len(first.frames) == expected_frames(first.lengths, first.stride)
    np.testing.assert_array_equal(first.frames[-1], again.frames[-1])
    # the last frame says the episode's return
    sampled = record_episodes("CartPole-v1", agent, 1, deterministic=False, seed=5)
    path = write_video(tmp_path / "sampled.gif", sampled.frames, sampled.fps)
    assert len(read_frames(path)) == expected_frames(sampled.lengths, sampled.stride)
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        write_video(tmp_path / "sampled.avi", sampled.frames)


def test_mujoco_renders_headless_with_egl(tmp_path):
    assert os.environ["MUJOCO_GL"] == "egl"
    agent = untrained_agent("InvertedPendulum-v4")
    # twice in one process, as --capture-video does before and after training
    for name in ("before", "after"):
        recording = record_episodes("InvertedPendulum-v4", agent, 1, seed=1)
        # the untrained agent falls within a few dozen steps of the 1000-step limit: the stride comes from the
        # episode's length (1), not the limit (6), so every step is a frame; rendered 320x320
        assert recording.stride == 1 and 5 < recording.lengths[0] < 199
        count = recording.lengths[0] + 1
        assert len(recording.frames) == count
        frames = np.stack(recording.frames)
        assert frames.shape == (count, 320, 320, 3) and frames.std() > 10  # a picture, not a blank
        write_gif(tmp_path / f"{name}.gif", recording.frames, recording.fps)
        write_mp4(tmp_path / f"{name}.mp4", recording.frames, recording.fps)
        assert iio.imread(tmp_path / f"{name}.gif", index=None).shape == (count, 320, 320, 3)
        assert mp4_frame_count_and_size(tmp_path / f"{name}.mp4") == (count, (320, 320))


class LongEpisodeEnv(gym.Env):
    """No time limit, terminates after 100 steps; renders a 64x64 image whose colour is the step count."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    observation_space = gym.spaces.Box(0.0, 1000.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, self.t >= 100, False, {}

    def render(self):
        return np.full((64, 64, 3), self.t % 256, dtype=np.uint8)


def test_env_factory_is_pluggable_and_long_episodes_are_thinned():
    made = []

    def factory(environment_id):
        made.append(environment_id)
        return LongEpisodeEnv()

    recording = record_episodes("LongEpisode-v0", None, 1, env_factory=factory, max_frames=10)
    assert made == ["LongEpisode-v0"] and recording.returns == [100.0] and recording.lengths == [100]
    # 100 steps, at most 10 frames: stride ceil(100 / 9) = 12, steps 0, 12, ..., 96 and the last one
    steps = [int(frame[60, 60, 0]) for frame in recording.frames]  # below the label
    assert recording.stride == 12 and steps == [0, 12, 24, 36, 48, 60, 72, 84, 96, 100]
    assert recording.frames[0].shape == (64, 64, 3)


class ShortThenLongEnv(LongEpisodeEnv):
    """Episodes of 30 steps from even reset seeds, 100 from odd ones; renders the step count."""

    def reset(self, *, seed=None, options=None):
        observation, info = super().reset(seed=seed)
        self.length = 30 if seed is not None and seed % 2 == 0 else 100
        return observation, info

    def step(self, action):
        observation, reward, _, truncated, info = super().step(action)
        return observation, reward, self.t >= self.length, truncated, info


def test_the_stride_comes_from_the_longest_recorded_episode():
    short = record_episodes("Short-v0", None, 1, seed=0, env_factory=lambda _: ShortThenLongEnv(), max_frames=50)
    assert short.lengths == [30] and short.stride == 1 and len(short.frames) == 31
    both = record_episodes("Both-v0", None, 2, seed=0, env_factory=lambda _: ShortThenLongEnv(), max_frames=50)
    # episode 1 (seed 0) 30 steps, episode 2 (seed 1) 100 steps: stride ceil(100 / 49) = 3 for both
    assert both.lengths == [30, 100] and both.returns == [30.0, 100.0] and both.stride == 3
    steps = [int(frame[60, 60, 0]) for frame in both.frames]
    assert steps == [*range(0, 30, 3), 30, *range(0, 100, 3), 100]
    assert len(both.frames) == expected_frames(both.lengths, 3)


def test_side_by_side_pads_the_shorter_sequence_and_labels_both(tmp_path):
    left = [np.full((40, 60, 3), 10 * i, np.uint8) for i in range(3)]
    right = [np.full((50, 80, 3), 100 + 20 * i, np.uint8) for i in range(5)]
    frames = side_by_side(left, right)
    assert len(frames) == 5 and frames[0].shape == (50, 60 + 4 + 80, 3)
    np.testing.assert_array_equal(frames[3][:30, :60], frames[4][:30, :60])  # left holds its last frame
    assert (frames[0][45:, :60] != 0).any()  # "before" written at the bottom left of the padded half
    path = write_side_by_side_gif(tmp_path / "pair.gif", left, right, fps=10)
    assert iio.imread(path, index=None).shape == (5, 50, 144, 3)


def read_png(path):
    import matplotlib.image
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(path)


def test_learning_curve_with_and_without_episodes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "episodes.csv").write_text("global_step,wall_time_s,return,length\n")
    assert read_png(plot_learning_curve(empty)).shape[:2] == (450, 800)

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"environment_id": "CartPole-v1", "seed": 3}))
    rows = [f"{16 * i},{0.1 * i:.3f},{i % 7 + 10},{i}" for i in range(1, 60)]
    (run / "episodes.csv").write_text("global_step,wall_time_s,return,length\n" + "\n".join(rows) + "\n9")
    path = plot_learning_curve(run)
    assert path == run / "learning_curve.png" and read_png(path).shape[:2] == (450, 800)
    assert not [name for name in os.listdir(run) if ".tmp" in name]


def test_moving_average_is_trailing_with_a_short_start():
    np.testing.assert_allclose(moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])


TINY_RUN = ["--environment-id", "CartPole-v1", "--num-envs", "2", "--num-steps-collected", "16",
            "--num-mini-batches", "2", "--num-epochs", "1", "--total-timesteps", "64", "--eval-episodes", "1",
            "--no-progress"]


def test_capture_video_run_and_record(cli, tmp_path):
    result = cli("main.py", *TINY_RUN, "--capture-video", "--output-dir", str(tmp_path), "--run-name", "run")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    # recording the untrained agent does not change what is trained
    plain = cli("main.py", *TINY_RUN, "--output-dir", str(tmp_path), "--run-name", "plain")
    assert plain.returncode == 0, plain.stderr
    weights = [torch.load(tmp_path / name / "checkpoints" / "final.pt", weights_only=True)["model"]
               for name in ("run", "plain")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    read_png(tmp_path / "plain" / "learning_curve.png")  # written with or without videos
    assert not (tmp_path / "plain" / "videos").exists()
    assert json.loads((run / "config.json").read_text())["capture_video"] is True
    videos = run / "videos"
    before = iio.imread(videos / "before.gif", index=None)
    after = iio.imread(videos / "after.gif", index=None)
    assert before.shape[1:] == after.shape[1:] == (214, 320, 3) and len(before) >= 2 and len(after) >= 2
    assert mp4_frame_count_and_size(videos / "after.mp4") == (len(after), (320, 214))
    pair = iio.imread(videos / "before_after.gif", index=None)
    assert pair.shape == (max(len(before), len(after)), 214, 644, 3)
    read_png(run / "learning_curve.png")

    final = run / "checkpoints" / "final.pt"
    recorded = cli("main.py", "--record", str(final), "--output", str(tmp_path / "x.gif"), "--record-episodes", "1")
    assert recorded.returncode == 0, recorded.stderr
    lines = recorded.stdout.strip().splitlines()
    assert lines[0] == str(tmp_path / "x.gif")
    report = json.loads(lines[-1])
    assert report["episodes"] == 1 and len(report["returns"]) == 1
    assert len(iio.imread(tmp_path / "x.gif", index=None)) >= 2

    random = cli("main.py", "--record", str(final), "--output", str(tmp_path / "random.mp4"), "--eval-random",
                 "--record-episodes", "2")
    assert random.returncode == 0, random.stderr
    assert len(json.loads(random.stdout.strip().splitlines()[-1])["returns"]) == 2
    assert mp4_frame_count_and_size(tmp_path / "random.mp4")[1] == (320, 214)


@pytest.mark.parametrize("arguments, code, message", [
    (["{checkpoint}", "--output", "x.avi"], 2, "FILE.gif or FILE.mp4"),
    (["{checkpoint}", "--output", "x.gif", "--record-episodes", "0"], 2, "--record-episodes must be a positive"),
    (["{checkpoint}", "--output", "x.gif", "--eval-random", "--eval-policy", "sample"], 2, "cannot be combined"),
    (["{checkpoint}"], 2, "--output"),
    (["{missing}", "--output", "x.gif"], 4, "does not exist"),
    (["{checkpoint}", "--output", "x.gif"], 4, "broken.pt"),
])
def test_record_errors_are_one_line(tmp_path, capsys, arguments, code, message):
    checkpoint = tmp_path / "broken.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    argv = [a.format(checkpoint=checkpoint, missing=tmp_path / "missing.pt") for a in arguments]
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    assert main(main_entry.ENTRY, ["--record", *argv]) == code
    error = capsys.readouterr().err
    assert error.startswith("main.py: error:") and message in error and len(error.splitlines()) == 1
