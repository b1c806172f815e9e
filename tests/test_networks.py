"""Networks: action heads against torch.distributions, the normalizer against numpy."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from networks import MLPActorCritic, NatureCNNActorCritic, RolloutPolicy, RunningNormalizer
from networks.heads import LOG_STD_MAX, LOG_STD_MIN, CategoricalHead, GaussianHead


def test_normalizer_matches_numpy_moments_over_several_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (5, 17, 1, 40)]
    normalizer = RunningNormalizer((4,), clip=100.0)
    for batch in batches:
        normalizer.update(torch.as_tensor(batch))
    data = np.concatenate(batches)
    assert normalizer.count.item() == len(data)
    np.testing.assert_allclose(normalizer.mean.numpy(), data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(normalizer.var.numpy(), data.var(0), rtol=1e-10)
    expected = (data - data.mean(0)) / np.sqrt(data.var(0) + 1e-8)
    np.testing.assert_allclose(normalizer(torch.as_tensor(data)).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_normalizer_ignores_non_finite_rows_and_clips():
    normalizer = RunningNormalizer((2,), clip=1.0)
    normalizer.update(torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3.0, 4.0]]))
    assert normalizer.count.item() == 2
    assert normalizer(torch.tensor([[1000.0, -1000.0]])).tolist() == [[1.0, -1.0]]


def test_agent_applies_its_normalizer_and_saves_its_statistics():
    agent = MLPActorCritic((3,), gym.spaces.Discrete(2), normalize_observations=True)
    observations = torch.randn(64, 3) * 50 + 100
    before = agent.get_value(observations)
    agent.update_normalizer(observations)
    after = agent.get_value(observations)
    assert not torch.allclose(before, after)
    assert agent.state_dict()["normalizer.count"].item() == 64


def test_gaussian_head_log_prob_and_entropy_match_torch_normal():
    head = GaussianHead(5, 3, init_log_std=-0.5)
    features = torch.randn(8, 5)
    action, log_prob, entropy = head(features)
    reference = torch.distributions.Normal(head.mean(features), torch.exp(torch.tensor(-0.5)))
    torch.testing.assert_close(log_prob, reference.log_prob(action).sum(-1))
    torch.testing.assert_close(entropy, reference.entropy().sum(-1))
    deterministic, _, _ = head(features, deterministic=True)
    torch.testing.assert_close(deterministic, head.mean(features))


@pytest.mark.parametrize("state_dependent", [False, True])
def test_gaussian_log_std_is_bounded(state_dependent):
    head = GaussianHead(2, 1, state_dependent=state_dependent)
    with torch.no_grad():
        if state_dependent:
            head.std.bias.fill_(-1e4)
        else:
            head.log_std.fill_(50.0)
    _, _, entropy = head(torch.zeros(1, 2))
    log_std = entropy - 0.5 - 0.5 * np.log(2 * np.pi)
    assert LOG_STD_MIN - 1e-5 <= log_std.item() <= LOG_STD_MAX + 1e-5


def test_categorical_head_matches_torch_categorical():
    head = CategoricalHead(4, 3)
    features = torch.randn(6, 4)
    action, log_prob, entropy = head(features)
    reference = torch.distributions.Categorical(logits=head.logits(features))
    torch.testing.assert_close(log_prob, reference.log_prob(action))
    torch.testing.assert_close(entropy, reference.entropy())
    assert torch.equal(head(features, deterministic=True)[0], reference.probs.argmax(-1))


def test_categorical_sampling_follows_the_softmax():
    head = CategoricalHead(2, 3)
    with torch.no_grad():
        head.logits.weight.zero_()
        head.logits.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    torch.manual_seed(0)
    actions, _, _ = head(torch.zeros(200_000, 2))
    frequencies = torch.bincount(actions, minlength=3) / 200_000
    torch.testing.assert_close(frequencies, torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0), atol=5e-3, rtol=0)


@pytest.mark.parametrize("action_space, hidden_layers, state_dependent", [
    (gym.spaces.Discrete(3), 2, False),
    (gym.spaces.Box(-1.0, 1.0, (2,)), 2, False),
    (gym.spaces.Box(-1.0, 1.0, (2,)), 3, True),
    (gym.spaces.Box(-1.0, 1.0, (2,)), 0, False),
])
def test_rollout_policy_samples_what_the_agent_evaluates(action_space, hidden_layers, state_dependent):
    """The fused rollout network gives the agent's own log-probabilities and values, and its samples
    follow the agent's distribution."""
    torch.manual_seed(0)
    agent = MLPActorCritic((5,), action_space, hidden_size=8, num_hidden_layers=hidden_layers,
                           normalize_observations=True, state_dependent_std=state_dependent)
    agent.update_normalizer(torch.randn(50, 5) * 3.0 + 1.0)
    observations = torch.randn(1, 5).expand(20_000, 5)
    with torch.inference_mode():
        policy = RolloutPolicy(agent, num_steps=2, num_envs=20_000, device=torch.device("cpu"))
        sampled = policy(observations, step=1)
        evaluated = agent.get_action_and_value(observations, sampled.action)
        torch.testing.assert_close(sampled.log_prob, evaluated.log_prob)
        torch.testing.assert_close(sampled.value, evaluated.value)
        torch.testing.assert_close(policy.value(observations[:3]), agent.get_value(observations[:3]))
        if isinstance(action_space, gym.spaces.Discrete):
            frequencies = torch.bincount(sampled.action, minlength=3) / 20_000
            probabilities = agent.get_action_and_value(observations[:3], torch.arange(3)).log_prob.exp()
            torch.testing.assert_close(frequencies, probabilities, atol=0.015, rtol=0)
        else:
            # -2 (log p(a) - log p(mean)) = |(a - mean) / std|^2 is chi-square with d = 2 degrees of freedom
            # (mean 2, standard error 0.014 over 20,000 samples) exactly when mean and std are the agent's.
            mean = agent.act(observations[:1])
            at_mean = agent.get_action_and_value(observations[:1], mean).log_prob
            torch.testing.assert_close(sampled.action.mean(0), mean[0], atol=0.05, rtol=0)
            assert abs(float((-2.0 * (sampled.log_prob - at_mean)).mean()) - 2.0) < 0.1


def test_rollout_policy_of_a_shared_trunk_matches_the_agent():
    torch.manual_seed(0)
    agent = NatureCNNActorCritic((4, 84, 84), gym.spaces.Discrete(6))
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    with torch.inference_mode():
        policy = RolloutPolicy(agent, num_steps=1, num_envs=3, device=torch.device("cpu"))
        sampled = policy(frames, step=0)
        evaluated = agent.get_action_and_value(frames, sampled.action)
    torch.testing.assert_close(sampled.log_prob, evaluated.log_prob)
    torch.testing.assert_close(sampled.value, evaluated.value)


def test_default_initialisation_replaces_the_orthogonal_one():
    """``--no-orthogonal-init``: PyTorch's uniform(+-1/sqrt(fan_in)) weights instead of the orthogonal
    ones, whose policy output layer (gain 0.01) is two orders of magnitude smaller; the log-std is kept."""
    torch.manual_seed(0)
    agent = MLPActorCritic((5,), gym.spaces.Box(-1.0, 1.0, (2,)), hidden_size=64, init_log_std=-2.0)
    assert agent.action_head.mean.weight.abs().max() < 0.02
    agent.use_default_initialisation()
    bound = 1.0 / 64 ** 0.5
    for layer in (agent.action_head.mean, agent.value_head, agent.actor[2]):
        assert 0.5 * bound < layer.weight.abs().max() <= bound
        assert layer.bias.abs().max() > 0  # the orthogonal initialisation's biases are zero
    assert torch.equal(agent.action_head.log_std, torch.full((2,), -2.0))
