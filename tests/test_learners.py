"""The learners against each other: the numpy learner (rollouts, gradient, clip, Adam in numpy) against the
torch reference, the choice of ``--learner``, and the contract between ``ppo_loss`` and the numpy gradient."""

import inspect
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo.learners.numpy.learner as numpy_learner_module
from common.errors import UsageError
from networks import MLPActorCritic, NatureCNNActorCritic, RolloutPolicy
from ppo.config import PPOConfig
from ppo.learners import choose_learner
from ppo.learners.numpy import NumpyLearner
from ppo.learners.numpy.adam import NumpyAdam, clip_gradient_norm_arrays
from ppo.learners.numpy.gradient import LOSS_OPTIONS
from ppo.learners.numpy.rollout_policy import NumpyRolloutPolicy, numpy_unsupported_reason
from ppo.losses import ppo_loss
from conftest import make_trainer


def test_ppo_loss_has_no_option_the_numpy_gradient_lacks():
    """A new option of ppo_loss (a keyword beyond the per-sample tensors) must be written out in the numpy
    gradient too, and named in LOSS_OPTIONS, or this fails."""
    tensors = {"new_log_probs", "old_log_probs", "advantages", "new_values", "old_values", "returns", "entropy"}
    options = set(inspect.signature(ppo_loss).parameters) - tensors
    assert options == set(LOSS_OPTIONS), f"ppo_loss options {sorted(options)}, numpy gradient {sorted(LOSS_OPTIONS)}"


def test_auto_picks_numpy_for_an_mlp_on_the_cpu_and_says_why_not_otherwise():
    config = PPOConfig()
    cpu = torch.device("cpu")
    mlp = MLPActorCritic((4,), gym.spaces.Discrete(2))
    assert choose_learner(config, mlp, cpu)[0] is NumpyLearner
    gaussian = MLPActorCritic((3,), gym.spaces.Box(-1.0, 1.0, (1,)), state_dependent_std=True)
    learner_class, why = choose_learner(config, gaussian, cpu)
    assert learner_class.name == "torch" and "state-dependent standard deviation" in why
    cnn = NatureCNNActorCritic((4, 84, 84), gym.spaces.Discrete(6))
    assert choose_learner(config, cnn, cpu)[0].name == "torch"
    assert choose_learner(PPOConfig(compile=True), mlp, cpu)[0].name == "torch"
    assert choose_learner(PPOConfig(learner="torch"), mlp, cpu)[0].name == "torch"
    with pytest.raises(UsageError, match="--learner numpy cannot train this run"):
        choose_learner(PPOConfig(learner="numpy"), cnn, cpu)


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,))],
                         ids=["categorical", "gaussian"])
@pytest.mark.parametrize("activation, hidden_layers, normalize", [
    ("tanh", 2, True), ("relu", 2, False), ("elu", 1, True), ("tanh", 0, True)])
def test_numpy_rollout_policy_samples_what_the_torch_one_samples(action_space, activation, hidden_layers,
                                                                 normalize):
    """Drawn from the same torch generator state, the numpy policy gives the torch policy's actions,
    log-probabilities and values (up to float32 rounding), at every step of a rollout (its log-probabilities
    computed once, for the whole rollout)."""
    torch.manual_seed(0)
    agent = MLPActorCritic((5,), action_space, hidden_size=8, num_hidden_layers=hidden_layers,
                           activation=activation, normalize_observations=normalize)
    with torch.no_grad():
        for parameter in agent.parameters():  # logits and means far enough apart to matter
            parameter.add_(0.5 * torch.randn_like(parameter))
    agent.update_normalizer(torch.randn(50, 5) * 3.0 + 1.0)
    observations = 4.0 * torch.randn(3, 64, 5)
    observations[:, :8, 0] = 100.0  # beyond the normalizer's clip
    with torch.inference_mode():
        torch.manual_seed(1)
        expected_policy = RolloutPolicy(agent, num_steps=3, num_envs=64, device=torch.device("cpu"))
        torch.manual_seed(1)
        actual_policy = NumpyRolloutPolicy(agent, num_steps=3, num_envs=64)
        expected = [expected_policy(observations[step], step) for step in range(3)]
        actual_policy.start(observations[0])
        for step in range(3):
            if step:
                actual_policy.observe(step, observations[step].numpy())
            actions = actual_policy.act(step)
            assert np.shares_memory(actions, actual_policy.actions)
        actual = (actual_policy.actions, actual_policy.rollout_log_probs(), actual_policy.values)
        for field, array in zip(("action", "log_prob", "value"), actual):
            wanted = torch.stack([getattr(out, field) for out in expected])
            assert torch.from_numpy(array).dtype == wanted.dtype
            torch.testing.assert_close(torch.from_numpy(array), wanted, msg=field)
        torch.testing.assert_close(actual_policy.value(observations[0, :3]), expected_policy.value(observations[0, :3]))


def test_numpy_rollout_policy_refuses_what_it_cannot_run():
    agent = MLPActorCritic((5,), gym.spaces.Box(-1.0, 1.0, (2,)), state_dependent_std=True)
    assert "state-dependent" in numpy_unsupported_reason(agent)
    with pytest.raises(ValueError, match="state-dependent"):
        NumpyRolloutPolicy(agent, num_steps=1, num_envs=1)
    assert "only the MLP" in numpy_unsupported_reason(NatureCNNActorCritic((4, 84, 84), gym.spaces.Discrete(6)))
    assert numpy_unsupported_reason(MLPActorCritic((5,), gym.spaces.Discrete(2), activation="elu")) is None


@pytest.mark.parametrize("max_norm", [0.5, 100.0])  # clipped, and left as it is
def test_gradient_clips_match_torch_clip_grad_norm(max_norm):
    torch.manual_seed(0)
    gradients = [torch.randn(300) * 0.2, torch.randn(50)]
    expected = [g.clone() for g in gradients]
    expected_parameters = [torch.nn.Parameter(torch.zeros(g.shape)) for g in expected]
    for parameter, gradient in zip(expected_parameters, expected):
        parameter.grad = gradient
    expected_norm = torch.nn.utils.clip_grad_norm_(expected_parameters, max_norm)
    assert bool(expected_norm > max_norm) is (max_norm == 0.5)
    arrays = [g.clone().numpy() for g in gradients]
    norm = clip_gradient_norm_arrays(arrays, max_norm)
    assert norm == pytest.approx(float(expected_norm), rel=1e-5)
    for got, want in zip(arrays, expected):
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-7)


def test_numpy_gradient_clip_reports_a_non_finite_norm():
    arrays = [torch.tensor([1.0, float("nan")]).numpy()]
    assert not math.isfinite(clip_gradient_norm_arrays(arrays, 0.5))


def test_numpy_adam_steps_as_torch_fused_adam_and_keeps_the_optimizer_state():
    """Two groups, a learning-rate change half-way, and a state_dict round trip in the middle: NumpyAdam's
    weights and state follow torch's fused Adam to float32 rounding, in the optimizer's own tensors."""
    torch.manual_seed(0)
    optimizers = []
    for _ in range(2):
        flats = [torch.nn.Parameter(torch.linspace(-1.0, 1.0, size)) for size in (300, 40)]
        for flat in flats:
            flat.grad = torch.zeros_like(flat)
        optimizers.append(torch.optim.Adam([{"params": [flats[0]], "lr": 3e-3}, {"params": [flats[1]], "lr": 1e-3}],
                                           eps=1e-5, fused=True))
    reference, ours = optimizers
    for step in range(30):
        if step == 15:
            for optimizer in optimizers:
                optimizer.param_groups[0]["lr"] = 1e-4
            ours.load_state_dict(ours.state_dict())  # load_state_dict replaces the state tensors
        numpy_adam = NumpyAdam(ours) if step in (0, 15) else numpy_adam
        for reference_group, our_group in zip(reference.param_groups, ours.param_groups):
            gradient = torch.randn(reference_group["params"][0].shape) * (1.0 + step)
            reference_group["params"][0].grad.copy_(gradient)
            our_group["params"][0].grad.copy_(gradient)
        reference.step()
        numpy_adam.step()
    for reference_group, our_group in zip(reference.param_groups, ours.param_groups):
        reference_flat, our_flat = reference_group["params"][0], our_group["params"][0]
        assert (reference_flat - torch.linspace(-1.0, 1.0, len(reference_flat))).abs().max() > 1e-2
        torch.testing.assert_close(our_flat, reference_flat, rtol=1e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ours.state[our_flat][key], reference.state[reference_flat][key],
                                       rtol=1e-5, atol=1e-8)
        assert float(ours.state[our_flat]["step"]) == float(reference.state[reference_flat]["step"]) == 30.0


def test_update_with_numpy_adam_takes_the_fused_optimizer_step(monkeypatch):
    """The trainer's CPU update (NumpyAdam on the optimizer's state) against the same update with
    ``optimizer.step()``: the same weights to float32 rounding, and the same optimizer step count."""
    weights, steps = [], []
    for use_numpy_adam in (True, False):
        if not use_numpy_adam:
            monkeypatch.setattr(numpy_learner_module, "NumpyAdam", lambda optimizer: None)
        trainer, agent = make_trainer(num_epochs=2)
        initial = torch.cat([p.detach().flatten() for p in agent.parameters()])
        assert trainer.learner.name == "numpy"
        trainer.seed_everything()
        trainer.collect_rollout()
        trainer.learner.update(trainer.buffer, trainer.config.clip_coeff)
        trainer.envs.close()
        weights.append(torch.cat([p.detach().flatten() for p in agent.parameters()]))
        assert (weights[-1] - initial).abs().max() > 1e-4
        learner = trainer.learner
        steps.append(float(learner.optimizer.state[learner.parameters[0]]["step"]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
    assert steps[0] == steps[1] == 4.0  # 2 epochs x 2 minibatches


def test_numpy_adam_refuses_what_it_does_not_compute():
    flat = torch.nn.Parameter(torch.zeros(4))
    flat.grad = torch.zeros(4)
    with pytest.raises(ValueError, match="weight decay"):
        NumpyAdam(torch.optim.Adam([flat], weight_decay=0.1))
    with pytest.raises(ValueError, match="float32"):
        NumpyAdam(torch.optim.Adam([torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))]))


@pytest.mark.parametrize("environment_id", ["CartPole-v1", "Pendulum-v1"])
def test_numpy_path_trains_what_torch_and_autograd_train(environment_id):
    """The numpy learner (the default for MLPs on the CPU) against the torch learner: the same episodes and,
    up to float32 rounding, the same weights after two iterations."""
    results = []
    for learner in ("numpy", "torch"):
        trainer, agent = make_trainer(environment_id, learner=learner, total_timesteps=128,
                                      normalize_observations=True, normalize_rewards=True)
        assert trainer.learner.name == learner
        initial = torch.cat([p.detach().flatten() for p in agent.parameters()])
        trainer.train()
        assert (initial - torch.cat([p.detach().flatten() for p in agent.parameters()])).abs().max() > 1e-3
        trainer.envs.close()
        results.append((torch.cat([p.detach().flatten() for p in agent.parameters()]),
                        trainer.buffer.observations.clone(), trainer.buffer.actions.clone()))
    (numpy_weights, numpy_observations, numpy_actions), (torch_weights, torch_observations, torch_actions) = results
    torch.testing.assert_close(numpy_observations, torch_observations, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(numpy_actions, torch_actions, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(numpy_weights, torch_weights, rtol=1e-4, atol=1e-5)
