"""The CUDA-graph learner (``--learner cuda-graph``) against the torch reference.

On the CPU: the module imports, ``--learner cuda-graph`` without a GPU fails with a clear message, and the
update's and the rollout's bookkeeping (minibatch order, skipped steps, statistics, checkpoints of the
optimizer, rows written into the buffer) run with graph capture replaced by eager calls. On CUDA: the same
comparisons with real graphs, for an MLP with Box actions and the Nature CNN on uint8 frames, and a short
CartPole run through the command line.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo.learners.cuda_graph_policy as cuda_graph
from common.errors import UsageError
from networks import MLPActorCritic, NatureCNNActorCritic
from ppo.buffer import RolloutBuffer
from ppo.config import PPOConfig
from ppo.learners import LEARNERS, choose_learner
from ppo.learners.cuda_graph import CudaGraphLearner
from ppo.learners.cuda_graph_policy import CudaGraphRolloutPolicy
from ppo.learners.torch_learner import TorchLearner
from ppo.rollout import TorchRolloutPolicy

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

BOX = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
DISCRETE = gym.spaces.Discrete(6)


# Helpers ----------------------------------------------------------------------------------------------------
class EagerGraph:
    """Stands in for a captured graph on the CPU: replay calls the function and copies its outputs into the
    tensors the capture returned, as a replay rewrites them."""

    def __init__(self, function, outputs):
        self.function, self.outputs = function, outputs

    def replay(self):
        new = self.function()
        if self.outputs is not None:
            for old, value in zip(self.outputs, new):
                old.copy_(value)


def eager_capture(function, what, pool=None):
    for _ in range(cuda_graph.WARMUP_ITERATIONS):
        function()
    outputs = function()
    return EagerGraph(function, outputs), outputs


class EagerCudaGraphLearner(CudaGraphLearner):
    requires_cuda = False


@pytest.fixture
def eager(monkeypatch):
    """The cuda-graph learner's code on the CPU, graph capture replaced by eager calls."""
    monkeypatch.setattr(cuda_graph, "capture", eager_capture)
    return EagerCudaGraphLearner


def make_agent(kind: str, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "mlp":  # Pendulum-like: 3 observations, one Box action, observation normalization
        agent = MLPActorCritic((3,), BOX, normalize_observations=True)
        agent.update_normalizer(torch.randn(64, 3, dtype=torch.float64) * 2.0 + 1.0)
    else:  # Atari-like frames
        agent = NatureCNNActorCritic((4, 84, 84), DISCRETE)
    return agent.to(device)


def make_config(kind: str, **overrides) -> PPOConfig:
    values = dict(num_envs=4, num_steps_collected=16, num_mini_batches=4, num_epochs=2, total_timesteps=64,
                  learning_rate=3e-3 if kind == "mlp" else 2.5e-4, ent_loss_coeff=0.0 if kind == "mlp" else 0.01,
                  clip_coeff=0.2 if kind == "mlp" else 0.1, normalize_observations=kind == "mlp", seed=3)
    values.update(overrides)
    return PPOConfig(**values)


def make_buffer(kind: str, agent, config: PPOConfig, device: torch.device, seed: int = 1) -> RolloutBuffer:
    """A rollout of random observations with the agent's own actions, log-probabilities (slightly off, so that
    ratios differ from 1) and values, random advantages and returns."""
    generator = torch.Generator().manual_seed(seed)
    T, N = config.num_steps_collected, config.num_envs
    if kind == "mlp":
        buffer = RolloutBuffer(T, N, (3,), torch.float32, (1,), torch.float32, device)
        buffer.observations.copy_(torch.randn((T, N, 3), generator=generator) * 2.0 + 1.0)
    else:
        buffer = RolloutBuffer(T, N, (4, 84, 84), torch.uint8, (), torch.int64, device)
        buffer.observations.copy_(torch.randint(0, 256, (T, N, 4, 84, 84), generator=generator, dtype=torch.uint8))
    with torch.no_grad():
        out = agent.get_action_and_value(buffer.observations.flatten(0, 1))
    buffer.actions.copy_(out.action.reshape(buffer.actions.shape))
    noise = torch.randn((T, N), generator=generator).to(device)
    buffer.log_probs.copy_(out.log_prob.reshape(T, N) + 0.1 * noise)
    buffer.values.copy_(out.value.reshape(T, N))
    buffer.advantages = torch.randn((T, N), generator=generator).to(device)
    buffer.returns = buffer.values + torch.randn((T, N), generator=generator).to(device)
    return buffer


def flat_weights(learner) -> torch.Tensor:
    return torch.cat([flat.detach().reshape(-1) for flat in learner.parameters])


def pair(kind: str, learner_class, device: torch.device, **overrides):
    """``(reference TorchLearner, learner_class)`` on copies of one agent, with one config and seed."""
    config = make_config(kind, **overrides)
    agent = make_agent(kind, device)
    twin = copy.deepcopy(agent)
    return TorchLearner(agent, config, device), learner_class(twin, config, device), config


def assert_same_update(reference, learner, buffer, clip_coeff, rtol=1e-4, atol=1e-6):
    expected = reference.update(buffer, clip_coeff)
    got = learner.update(buffer, clip_coeff)
    assert got["skipped_minibatches"] == expected["skipped_minibatches"]
    for key, value in expected.items():
        assert np.isclose(got[key], value, rtol=1e-3, atol=1e-6, equal_nan=True), (key, got[key], value)
    a, b = flat_weights(reference), flat_weights(learner)
    assert torch.allclose(a, b, rtol=rtol, atol=atol), f"max weight difference {(a - b).abs().max().item():.3g}"
    return expected, got


def compare_updates(kind, learner_class, device, rtol=1e-4, atol=1e-6, **overrides):
    reference, learner, config = pair(kind, learner_class, device, **overrides)
    buffer = make_buffer(kind, reference.agent, config, device)
    for iteration, fraction in enumerate((1.0, 0.5)):  # a second update with annealed lr and clip
        reference.anneal(fraction)
        learner.anneal(fraction)
        assert learner.learning_rate == pytest.approx(reference.learning_rate)
        assert_same_update(reference, learner, buffer, config.clip_coeff * fraction, rtol, atol)
    return reference, learner, buffer


def compare_rollouts(kind, learner_class, device, num_steps=6, num_envs=4):
    """TorchRolloutPolicy and the cuda-graph rollout policy, from the same RNG state, on the same observation
    sequence: the same noise, so the same actions and log-probabilities; values as close as float32 allows."""
    config = make_config(kind, num_envs=num_envs, num_steps_collected=num_steps)
    agent = make_agent(kind, device)
    learner = learner_class(agent, config, device)
    generator = torch.Generator().manual_seed(5)
    if kind == "mlp":
        frames = [torch.randn((num_envs, 3), generator=generator).numpy().astype(np.float64)
                  for _ in range(num_steps + 1)]
        shape, dtype, action_shape, action_dtype = (3,), torch.float32, (1,), torch.float32
    else:
        frames = [torch.randint(0, 256, (num_envs, 4, 84, 84), generator=generator, dtype=torch.uint8).numpy()
                  for _ in range(num_steps + 1)]
        shape, dtype, action_shape, action_dtype = (4, 84, 84), torch.uint8, (), torch.int64
    buffers = [RolloutBuffer(num_steps, num_envs, shape, dtype, action_shape, action_dtype, device) for _ in range(2)]
    results = []
    for index, buffer in enumerate(buffers):
        torch.manual_seed(11)
        with torch.inference_mode():
            policy = (TorchRolloutPolicy(agent, num_steps, num_envs, device, dtype) if index == 0
                      else learner.rollout_policy(buffer, False))
            policy.start(torch.as_tensor(frames[0], dtype=dtype, device=device))
            actions = []
            for step in range(num_steps):
                actions.append(np.array(policy.act(step)))
                policy.observe(step + 1, frames[step + 1])
            bootstrap = policy.value(frames[2][:2])
            last, last_values = policy.finish(buffer)
        results.append((actions, bootstrap, last, last_values))
    (actions_a, bootstrap_a, last_a, values_a), (actions_b, bootstrap_b, last_b, values_b) = results
    reference, graphed = buffers
    assert torch.equal(reference.observations, graphed.observations)
    assert torch.equal(last_a, last_b)
    close = dict(rtol=1e-4, atol=1e-5)
    if kind == "mlp":
        np.testing.assert_allclose(np.stack(actions_a), np.stack(actions_b), **close)
        torch.testing.assert_close(reference.actions, graphed.actions, **close)
    else:  # Gumbel-max: float32 differences in the logits may flip a near tie, rarely
        assert (np.stack(actions_a) == np.stack(actions_b)).mean() >= 0.95
        assert (reference.actions == graphed.actions).float().mean() >= 0.95
    torch.testing.assert_close(reference.values, graphed.values, **close)
    torch.testing.assert_close(values_a, values_b, **close)
    torch.testing.assert_close(bootstrap_a, bootstrap_b, **close)
    if kind == "mlp":
        torch.testing.assert_close(reference.log_probs, graphed.log_probs, **close)
    # a second rollout reuses the captured graph with new noise
    with torch.inference_mode():
        policy = learner.rollout_policy(graphed, False)
        policy.start(last_b)
        policy.act(0)
    return learner


def checkpoint_round_trip(reference, learner):
    """The cuda-graph learner's optimizer state loads into the torch learner and back, in the same format;
    loading keeps the tensors a captured graph holds."""
    state = learner.state_dict()
    groups = state["optimizer"]["param_groups"]
    assert all(isinstance(group["lr"], float) and group["capturable"] is False for group in groups)
    reference_state = reference.state_dict()
    assert ({key: value for key, value in reference_state["optimizer"]["param_groups"][0].items() if key != "lr"}
            == {key: value for key, value in groups[0].items() if key != "lr"})
    reference.load_state_dict(copy.deepcopy(state))
    flat = learner.parameters[0]
    held = dict(learner.optimizer.state[flat])
    exp_avg = reference.optimizer.state[reference.parameters[0]]["exp_avg"]
    learner.load_state_dict(copy.deepcopy(reference.state_dict()))
    for key, tensor in learner.optimizer.state[flat].items():
        assert tensor is held[key]
    torch.testing.assert_close(learner.optimizer.state[flat]["exp_avg"], exp_avg)
    group = learner.optimizer.param_groups[0]
    assert group["capturable"] and group["lr"] is learner.learning_rates[0]
    assert learner.learning_rate == pytest.approx(reference.learning_rate)


# CPU --------------------------------------------------------------------------------------------------------
def test_registered_and_clear_errors_without_cuda():
    assert LEARNERS["cuda-graph"] is CudaGraphLearner
    cpu = torch.device("cpu")
    agent = make_agent("mlp", cpu)
    with pytest.raises(UsageError, match="--learner cuda-graph needs a CUDA device"):
        choose_learner(PPOConfig(learner="cuda-graph"), agent, cpu)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        CudaGraphLearner(agent, make_config("mlp"), cpu)
    # auto never picks it on the CPU
    assert choose_learner(PPOConfig(), agent, cpu)[0].name != "cuda-graph"


@pytest.mark.skipif(CUDA, reason="needs a machine without CUDA, where capture fails")
def test_a_failed_capture_names_the_torch_learner():
    with pytest.raises(UsageError, match="CUDA graph capture of the rollout policy failed .*--learner torch"):
        cuda_graph.capture(lambda: None, "rollout policy")


def test_auto_picks_cuda_graphs_on_a_cuda_device_unless_compiling():
    cuda = torch.device("cuda")
    agent = make_agent("mlp", torch.device("cpu"))
    learner_class, why = choose_learner(PPOConfig(), agent, cuda)
    assert learner_class is CudaGraphLearner and why == "auto: CUDA graphs on the GPU"
    assert choose_learner(PPOConfig(compile=True), agent, cuda)[0] is TorchLearner
    with pytest.raises(UsageError, match="drop --compile"):
        choose_learner(PPOConfig(learner="cuda-graph", compile=True), agent, cuda)


def test_command_line_without_a_gpu_names_the_way_out(cli, tmp_path):
    if CUDA:
        pytest.skip("this machine has a CUDA device")
    result = cli("main.py", "--learner", "cuda-graph", "--total-timesteps", "256", "--no-progress",
                 "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--learner cuda-graph needs a CUDA device" in result.stderr and "--learner torch" in result.stderr


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_update_bookkeeping_matches_the_torch_learner_on_the_cpu(eager, kind):
    """Graph capture replaced by eager calls: the same minibatches, steps, statistics and weights as the
    torch learner, including warm-up steps that change nothing."""
    overrides = {} if kind == "mlp" else dict(num_envs=2, num_steps_collected=8)
    reference, learner, buffer = compare_updates(kind, eager, torch.device("cpu"), rtol=1e-5, atol=1e-7,
                                                 **overrides)
    checkpoint_round_trip(reference, learner)


def test_non_finite_minibatches_are_skipped_as_the_torch_learner_skips_them(eager):
    cpu = torch.device("cpu")
    reference, learner, config = pair("mlp", eager, cpu)
    buffer = make_buffer("mlp", reference.agent, config, cpu)
    buffer.advantages[3, 1] = float("nan")  # poisons one minibatch per epoch
    expected, got = assert_same_update(reference, learner, buffer, config.clip_coeff, rtol=1e-5, atol=1e-7)
    assert got["skipped_minibatches"] == config.num_epochs
    step = learner.optimizer.state[learner.parameters[0]]["step"]
    assert float(step) == config.num_epochs * (config.num_mini_batches - 1)
    buffer.advantages.fill_(float("nan"))  # every minibatch: no step at all, NaN statistics
    expected, got = assert_same_update(reference, learner, buffer, config.clip_coeff, rtol=1e-5, atol=1e-7)
    assert got["skipped_minibatches"] == config.num_epochs * config.num_mini_batches
    assert np.isnan(got["policy_loss"])


def test_target_kl_stops_after_the_same_epoch(eager):
    cpu = torch.device("cpu")
    reference, learner, config = pair("mlp", eager, cpu, target_kl=1e-6, num_epochs=4)
    buffer = make_buffer("mlp", reference.agent, config, cpu)
    assert_same_update(reference, learner, buffer, config.clip_coeff, rtol=1e-5, atol=1e-7)
    # the same number of shuffles drawn: the generators agree afterwards
    assert torch.equal(reference.minibatch_generator.get_state(), learner.minibatch_generator.get_state())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_rollout_policy_matches_the_torch_rollout_policy_on_the_cpu(eager, kind):
    compare_rollouts(kind, eager, torch.device("cpu"))


# CUDA -------------------------------------------------------------------------------------------------------
@pytest.fixture
def deterministic_cudnn():
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@needs_cuda
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_graphed_update_matches_the_torch_learner(kind, deterministic_cudnn):
    overrides = {} if kind == "mlp" else dict(num_envs=8, num_steps_collected=32)
    reference, learner, _ = compare_updates(kind, CudaGraphLearner, torch.device("cuda"), **overrides)
    checkpoint_round_trip(reference, learner)


@needs_cuda
def test_graphed_update_skips_non_finite_minibatches():
    cuda = torch.device("cuda")
    reference, learner, config = pair("mlp", CudaGraphLearner, cuda)
    buffer = make_buffer("mlp", reference.agent, config, cuda)
    buffer.advantages[3, 1] = float("nan")
    _, got = assert_same_update(reference, learner, buffer, config.clip_coeff)
    assert got["skipped_minibatches"] == config.num_epochs
    assert float(learner.optimizer.state[learner.parameters[0]]["step"]) == config.num_epochs * (
        config.num_mini_batches - 1)


@needs_cuda
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_graphed_rollout_policy_matches_the_torch_rollout_policy(kind, deterministic_cudnn):
    compare_rollouts(kind, CudaGraphLearner, torch.device("cuda"))


@needs_cuda
def test_cartpole_trains_through_the_command_line(cli, tmp_path):
    result = cli("main.py", "--environment-id", "CartPole-v1", "--use-gpu", "--learner", "cuda-graph",
                 "--total-timesteps", "4096", "--eval-episodes", "2", "--no-progress", "--output-dir", str(tmp_path),
                 "--run-name", "run")
    assert result.returncode == 0, result.stderr
    assert "Learner: cuda-graph" in result.stdout
    assert (tmp_path / "run" / "checkpoints" / "final.pt").exists()
    # --learner auto takes it on a GPU
    result = cli("main.py", "--environment-id", "CartPole-v1", "--use-gpu", "--total-timesteps", "1024",
                 "--eval-episodes", "0", "--no-progress", "--output-dir", str(tmp_path), "--run-name", "auto")
    assert result.returncode == 0, result.stderr
    assert "Learner: cuda-graph (auto: CUDA graphs on the GPU)" in result.stdout
