"""Learners: backends of PPO's update behind one interface (:class:`ppo.learners.base.Learner`).

- ``torch`` (:mod:`ppo.learners.torch_learner`): the reference; any network, any device.
- ``numpy`` (:mod:`ppo.learners.numpy`): MLP actor-critics on the CPU, the same arithmetic in numpy.
- ``cuda-graph`` (:mod:`ppo.learners.cuda_graph`): any network on a CUDA device, one process; the minibatch
  step and the rollout's per-step policy captured in CUDA graphs.

``--learner auto`` takes ``numpy`` where it supports the run, ``cuda-graph`` on a CUDA device (one process,
without ``--compile``) and ``torch`` elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from common.errors import UsageError
from ppo.config import PPOConfig
from ppo.distributed import DistributedContext
from ppo.learners.base import Learner, MinibatchResult, RolloutPolicy
from ppo.learners.cuda_graph import CudaGraphLearner
from ppo.learners.numpy import NumpyLearner
from ppo.learners.numpy import unsupported_reason as numpy_unsupported
from ppo.learners.torch_learner import TorchLearner

LEARNERS: dict[str, type[Learner]] = {"torch": TorchLearner, "numpy": NumpyLearner,
                                      "cuda-graph": CudaGraphLearner}


def choose_learner(config: PPOConfig, agent: nn.Module, device: torch.device,
                   distributed: DistributedContext | None = None) -> tuple[type[Learner], str]:
    """The learner class ``config.learner`` asks for, and why, as the run header says it.

    Raises:
        UsageError: ``--learner numpy`` for a run it cannot train; ``--learner cuda-graph`` without a CUDA
            device, with ``--compile`` or in a distributed run.
    """
    reason = numpy_unsupported(agent, config, device)
    if config.learner == "numpy" and reason is not None:
        raise UsageError(f"--learner numpy cannot train this run ({reason}); use --learner torch or auto")
    multiprocess = distributed is not None and distributed.enabled
    if config.learner == "cuda-graph":
        if torch.device(device).type != "cuda":
            raise UsageError("--learner cuda-graph needs a CUDA device: add --use-gpu (on a machine with a CUDA "
                             "GPU), or use --learner torch")
        if config.compile:
            raise UsageError("--learner cuda-graph captures the update in CUDA graphs itself: drop --compile, or "
                             "use --learner torch with --compile")
        if multiprocess:
            raise UsageError("--learner cuda-graph runs in one process: use --learner torch with torchrun")
    if config.learner != "auto":
        return LEARNERS[config.learner], "--learner"
    if reason is None:
        return NumpyLearner, "auto: an MLP on the CPU"
    if torch.device(device).type == "cuda" and not config.compile and not multiprocess:
        return CudaGraphLearner, "auto: CUDA graphs on the GPU"
    return TorchLearner, f"auto: {reason}"


def make_learner(config: PPOConfig, agent: nn.Module, device: torch.device,
                 distributed: DistributedContext | None = None, seed: int | None = None) -> tuple[Learner, str]:
    """``(learner, why it was chosen)`` for ``agent`` on ``device`` (see :func:`choose_learner`)."""
    learner_class, why = choose_learner(config, agent, device, distributed)
    return learner_class(agent, config, device, distributed, seed), why


__all__ = ["LEARNERS", "Learner", "MinibatchResult", "RolloutPolicy", "choose_learner", "make_learner"]
