"""Learners: backends of PPO's update behind one interface (:class:`ppo.learners.base.Learner`).

- ``torch`` (:mod:`ppo.learners.torch_learner`): the reference; any network, any device.
- ``numpy`` (:mod:`ppo.learners.numpy`): MLP actor-critics on the CPU, the same arithmetic in numpy.

``--learner auto`` takes ``numpy`` where it supports the run and ``torch`` elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from common.errors import UsageError
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.learners.base import Learner, MinibatchResult, RolloutPolicy
from ppo.learners.numpy import NumpyLearner
from ppo.learners.numpy import unsupported_reason as numpy_unsupported
from ppo.learners.torch_learner import TorchLearner

LEARNERS: dict[str, type[Learner]] = {"torch": TorchLearner, "numpy": NumpyLearner}


def choose_learner(config: PPOConfig, agent: nn.Module, device: torch.device) -> tuple[type[Learner], str]:
    """The learner class ``config.learner`` asks for, and why, as the run header says it.

    Raises:
        UsageError: ``--learner numpy`` for a run it cannot train.
    """
    reason = numpy_unsupported(agent, config, device)
    if config.learner == "numpy" and reason is not None:
        raise UsageError(f"--learner numpy cannot train this run ({reason}); use --learner torch or auto")
    if config.learner != "auto":
        return LEARNERS[config.learner], "--learner"
    if reason is None:
        return NumpyLearner, "auto: an MLP on the CPU"
    return TorchLearner, f"auto: {reason}"


def make_learner(config: PPOConfig, agent: nn.Module, device: torch.device,
                 distributed: DistributedContext | None = None, seed: int | None = None) -> tuple[Learner, str]:
    """``(learner, why it was chosen)`` for ``agent`` on ``device`` (see :func:`choose_learner`)."""
    learner_class, why = choose_learner(config, agent, device)
    return learner_class(agent, config, device, distributed, seed), why


__all__ = ["LEARNERS", "Learner", "MinibatchResult", "RolloutPolicy", "choose_learner", "make_learner"]
