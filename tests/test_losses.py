"""The clipped surrogate and value losses against numbers computed by hand."""

import math

import pytest
import torch

from ppo.losses import explained_variance, ppo_loss


def losses(clip_value_loss=True, ent_loss_coeff=0.0):
    # ratios exp(log 1.5) = 1.5 and exp(log 0.5) = 0.5, advantages +1 and -1, clip 0.2
    new_log_probs = torch.tensor([math.log(1.5), math.log(0.5)])
    return ppo_loss(new_log_probs, torch.zeros(2), torch.tensor([1.0, -1.0]), torch.tensor([1.0, 3.0]),
                    torch.tensor([0.0, 3.0]), torch.tensor([2.0, 2.0]), torch.tensor([0.5, 1.5]),
                    clip_coeff=0.2, ent_loss_coeff=ent_loss_coeff, value_loss_coeff=0.5,
                    clip_value_loss=clip_value_loss, normalize_advantages=False)


def test_clipped_surrogate():
    # min(1.5*1, 1.2*1) = 1.2 and min(0.5*-1, 0.8*-1) = -0.8 -> objective mean 0.2, loss -0.2
    out = losses()
    assert out.policy_loss.item() == pytest.approx(-0.2)
    assert out.clipfrac.item() == pytest.approx(1.0)
    # k3: mean((r - 1) - log r) = ((0.5 - log 1.5) + (-0.5 - log 0.5)) / 2
    assert out.approx_kl.item() == pytest.approx(((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2)


def test_value_loss_clipped_and_unclipped():
    # unclipped errors (1-2)^2 = 1, (3-2)^2 = 1 -> 0.5 * 1 = 0.5
    assert losses(clip_value_loss=False).value_loss.item() == pytest.approx(0.5)
    # clipped value of sample 0: 0 + clamp(1, -0.2, 0.2) = 0.2, error (0.2-2)^2 = 3.24 > 1 -> max 3.24
    # -> 0.5 * mean(3.24, 1) = 1.06
    assert losses().value_loss.item() == pytest.approx(1.06)


def test_total_loss_combines_terms_and_entropy_bonus():
    out = losses(ent_loss_coeff=0.1)
    # -0.2 + 0.5 * 1.06 - 0.1 * mean(0.5, 1.5) = 0.23
    assert out.loss.item() == pytest.approx(0.23)
    assert out.entropy.item() == pytest.approx(1.0)


def test_ratio_one_gives_zero_kl_and_gradient_flows_only_through_loss():
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    out = ppo_loss(log_probs, log_probs.detach(), torch.tensor([1.0, 2.0]), torch.zeros(2), torch.zeros(2),
                   torch.zeros(2), torch.zeros(2), 0.2, 0.0, 0.5)
    assert out.approx_kl.item() == 0.0 and out.clipfrac.item() == 0.0
    out.loss.backward()
    assert log_probs.grad is not None and not out.policy_loss.requires_grad


def test_explained_variance():
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(targets, targets) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), targets) == pytest.approx(0.0)
    assert math.isnan(explained_variance(torch.zeros(3), torch.ones(3)))
