"""Trainer set-up: optimizer groups and learning-rate annealing."""

import math

import pytest
import torch

from networks import MLPActorCritic
from ppo.config import PPOConfig
from ppo.flat_parameters import NumpyAdam, clip_gradient_norm, clip_gradient_norm_arrays, flat_optimizer_state
import ppo.trainer as trainer_module
from ppo.trainer import Trainer
from wrappers import describe_environment, make_vector_env


def make_trainer(environment_id="CartPole-v1", **overrides):
    config = PPOConfig(**{"environment_id": environment_id, "num_envs": 2, "num_steps_collected": 16,
                          "num_mini_batches": 2, "num_epochs": 1, "total_timesteps": 64, "learning_rate": 1e-3,
                          **overrides})
    info = describe_environment(config.environment_id)
    envs = make_vector_env(config.environment_id, config.num_envs)
    torch.manual_seed(0)
    agent = MLPActorCritic(info.observation_space.shape, info.action_space,
                           normalize_observations=config.normalize_observations)
    return Trainer(config, envs, agent, torch.device("cpu")), agent


def _holds(flat, parameters):
    """The flat parameter's storage is what ``parameters`` (and their gradients) are views of."""
    storage, grad_storage = flat.untyped_storage().data_ptr(), flat.grad.untyped_storage().data_ptr()
    return (sum(p.numel() for p in parameters) == flat.numel()
            and all(p.untyped_storage().data_ptr() == storage for p in parameters)
            and all(p.grad.untyped_storage().data_ptr() == grad_storage for p in parameters))


def test_one_learning_rate_is_one_optimizer_group_over_every_parameter():
    trainer, agent = make_trainer()
    (group,) = trainer.optimizer.param_groups
    assert group["lr"] == 1e-3
    (flat,) = group["params"]
    assert _holds(flat, list(agent.parameters()))
    before = [p.detach().clone() for p in agent.parameters()]
    trainer.train()  # the optimizer steps the flat tensor: the agent's own weights must move
    assert all(not torch.equal(b, p) for b, p in zip(before, agent.parameters()))
    trainer.envs.close()


def test_value_learning_rate_gets_its_own_group_and_both_anneal():
    trainer, agent = make_trainer(value_learning_rate=5e-4)
    policy, value = trainer.optimizer.param_groups
    assert (policy["lr"], value["lr"]) == (1e-3, 5e-4)
    assert _holds(value["params"][0], agent.value_parameters())
    policy_parameters, _ = agent.parameter_groups()
    assert _holds(policy["params"][0], policy_parameters)
    trainer.train()  # 2 iterations: the second starts at half of each base rate
    assert (policy["lr"], value["lr"]) == pytest.approx((0.5e-3, 2.5e-4))
    trainer.envs.close()


def test_optimizer_state_saved_per_parameter_loads_into_the_flat_one():
    """Checkpoints written before the parameters were flattened hold Adam's state per parameter."""
    trainer, agent = make_trainer()
    old_optimizer = torch.optim.Adam(list(agent.parameters()), lr=1e-3, eps=1e-5)
    for p in agent.parameters():
        p.grad.normal_()
    old_optimizer.step()
    old_state = old_optimizer.state_dict()
    trainer.optimizer.load_state_dict(flat_optimizer_state(old_state, trainer.parameter_sizes))
    flat_state = trainer.optimizer.state[trainer.parameters[0]]
    expected = torch.cat([old_optimizer.state[p]["exp_avg_sq"].flatten() for p in agent.parameters()])
    assert torch.equal(flat_state["exp_avg_sq"], expected) and float(flat_state["step"]) == 1.0
    trainer.envs.close()


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
    flat = [torch.nn.Parameter(torch.zeros(g.shape)) for g in gradients]
    for parameter, gradient in zip(flat, gradients):
        parameter.grad = gradient.clone()
    norm = clip_gradient_norm(flat, max_norm)
    arrays = [g.clone().numpy() for g in gradients]
    norm_arrays = clip_gradient_norm_arrays(arrays, max_norm)
    for clipped_norm, clipped in ((float(norm), [p.grad for p in flat]),
                                  (norm_arrays, [torch.from_numpy(a) for a in arrays])):
        assert clipped_norm == pytest.approx(float(expected_norm), rel=1e-5)
        for got, want in zip(clipped, expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


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
            monkeypatch.setattr(trainer_module, "NumpyAdam", lambda optimizer: None)
        trainer, agent = make_trainer(num_epochs=2)
        initial = torch.cat([p.detach().flatten() for p in agent.parameters()])
        trainer.seed_everything()
        trainer.collect_rollout()
        trainer.update()
        trainer.envs.close()
        weights.append(torch.cat([p.detach().flatten() for p in agent.parameters()]))
        assert (weights[-1] - initial).abs().max() > 1e-4
        steps.append(float(trainer.optimizer.state[trainer.parameters[0]]["step"]))
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
    """The MLP's numpy rollouts and hand-written gradient (the default on the CPU) against torch rollouts
    and autograd (--no-manual-gradient): the same episodes and, up to float32 rounding, the same weights."""
    results = []
    for manual_gradient in (True, False):
        trainer, agent = make_trainer(environment_id, manual_gradient=manual_gradient, total_timesteps=128,
                                      normalize_observations=True, normalize_rewards=True)
        assert trainer.numpy_rollouts is manual_gradient and (trainer.manual_gradient is not None) is manual_gradient
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
