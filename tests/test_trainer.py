"""The run loop's set-up: optimizer groups over flat parameters and learning-rate annealing."""

import pytest
import torch

from ppo.learners.parameters import flat_optimizer_state
from conftest import make_trainer


def _holds(flat, parameters):
    """The flat parameter's storage is what ``parameters`` (and their gradients) are views of."""
    storage, grad_storage = flat.untyped_storage().data_ptr(), flat.grad.untyped_storage().data_ptr()
    return (sum(p.numel() for p in parameters) == flat.numel()
            and all(p.untyped_storage().data_ptr() == storage for p in parameters)
            and all(p.grad.untyped_storage().data_ptr() == grad_storage for p in parameters))


def test_one_learning_rate_is_one_optimizer_group_over_every_parameter():
    trainer, agent = make_trainer()
    (group,) = trainer.learner.optimizer.param_groups
    assert group["lr"] == 1e-3
    (flat,) = group["params"]
    assert _holds(flat, list(agent.parameters()))
    before = [p.detach().clone() for p in agent.parameters()]
    trainer.train()  # the optimizer steps the flat tensor: the agent's own weights must move
    assert all(not torch.equal(b, p) for b, p in zip(before, agent.parameters()))
    trainer.envs.close()


def test_value_learning_rate_gets_its_own_group_and_both_anneal():
    trainer, agent = make_trainer(value_learning_rate=5e-4)
    policy, value = trainer.learner.optimizer.param_groups
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
    trainer.learner.optimizer.load_state_dict(flat_optimizer_state(old_state, trainer.learner.parameter_sizes))
    flat_state = trainer.learner.optimizer.state[trainer.learner.parameters[0]]
    expected = torch.cat([old_optimizer.state[p]["exp_avg_sq"].flatten() for p in agent.parameters()])
    assert torch.equal(flat_state["exp_avg_sq"], expected) and float(flat_state["step"]) == 1.0
    trainer.envs.close()
