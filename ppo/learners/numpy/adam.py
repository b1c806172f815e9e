"""The numpy learner's gradient clip and Adam step, on numpy views of the flat CPU tensors."""

from __future__ import annotations

import math

import numpy as np
import torch


def clip_gradient_norm_arrays(gradients: list[np.ndarray], max_norm: float) -> float:
    """:func:`clip_gradient_norm` on numpy views of CPU gradients (each ``[P]`` float32, scaled in place);
    returns the norm before clipping as a float (not finite when a gradient is not).

    The same arithmetic (scale ``min(1, max_norm / (norm + 1e-6))``; each gradient's squares summed in
    float32 by BLAS): a few microseconds, where the torch version costs about ten times as much in
    per-operation overhead.
    """
    norm = math.sqrt(sum(float(np.dot(gradient, gradient)) for gradient in gradients))
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        for gradient in gradients:
            np.multiply(gradient, np.float32(scale), out=gradient)
    return norm


# NumpyAdam's ten numpy passes over the weights outgrow the fused torch kernel's per-call overhead above about
# this many weights per flat Parameter: inside Trainer.update (benchmarks/adam_step.py, idle machine) a
# minibatch step took 307 against 410 us on Hopper (10k weights), 406 against 529 on CartPole (9k), 1,392
# against 1,456 on Humanoid (58k); alone, a step of 300k weights took 427 us in numpy against 165 in torch.
NUMPY_ADAM_MAX_SIZE = 100_000


class NumpyAdam:
    """The step of ``torch.optim.Adam`` over flat CPU float32 Parameters, in numpy on views of the optimizer's
    own tensors (parameters, gradients, ``exp_avg``, ``exp_avg_sq``, ``step``), so its state, ``state_dict``
    and checkpoints are the optimizer's.

    Adam (Kingma & Ba 2015, Algorithm 1) as PyTorch writes it (``torch/optim/adam.py``, no weight decay,
    amsgrad or maximize): ``m = m + (1 - b1) (g - m)``, ``v = b2 v + (1 - b2) g^2``, ``p -= lr / (1 - b1^t)
    * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``, with the bias corrections in float64 and the rest in float32;
    results match the fused torch step to float32 rounding. A step is about ten numpy calls, where
    ``optimizer.step()`` pays torch's per-call overhead: for small networks it is faster (see
    ``NUMPY_ADAM_MAX_SIZE``); above that size torch's fused kernel is.

    Build one per update (the views follow the optimizer's current tensors, which ``load_state_dict``
    replaces); empty state is created as torch creates it.

    Raises:
        ValueError: a group holds more than one Parameter, or uses weight decay, amsgrad or maximize, or a
            Parameter is not a CPU float32 tensor with a gradient.
    """

    def __init__(self, optimizer: torch.optim.Adam) -> None:
        self.groups = []
        for group in optimizer.param_groups:
            if len(group["params"]) != 1 or group["weight_decay"] or group["amsgrad"] or group["maximize"]:
                raise ValueError("NumpyAdam takes one flat Parameter per group, without weight decay, amsgrad "
                                 "or maximize")
            (flat,) = group["params"]
            if flat.device.type != "cpu" or flat.dtype != torch.float32 or flat.grad is None:
                raise ValueError("NumpyAdam needs CPU float32 Parameters with gradients")
            state = optimizer.state[flat]
            if not state:  # torch.optim.Adam._init_group, fused: a float32 step on the parameter's device
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
            arrays = [tensor.detach().numpy() for tensor in (flat, flat.grad, state["exp_avg"], state["exp_avg_sq"],
                                                             state["step"])]
            self.groups.append((group, *arrays, np.empty_like(arrays[0]), np.empty_like(arrays[0])))

    def step(self) -> None:
        """One Adam step of every group with its current ``lr``, ``betas`` and ``eps``."""
        for group, parameter, gradient, exp_avg, exp_avg_sq, step, scratch, denominator in self.groups:
            beta1, beta2 = group["betas"]
            np.add(step, 1.0, out=step)
            count = float(step)
            step_size = group["lr"] / (1.0 - beta1 ** count)
            bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** count)
            np.subtract(gradient, exp_avg, out=scratch)  # exp_avg.lerp_(gradient, 1 - beta1)
            scratch *= np.float32(1.0 - beta1)
            exp_avg += scratch
            exp_avg_sq *= np.float32(beta2)  # exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, 1 - beta2)
            np.multiply(gradient, gradient, out=scratch)
            scratch *= np.float32(1.0 - beta2)
            exp_avg_sq += scratch
            np.sqrt(exp_avg_sq, out=denominator)
            denominator /= np.float32(bias_correction2_sqrt)
            denominator += np.float32(group["eps"])
            np.divide(exp_avg, denominator, out=scratch)
            scratch *= np.float32(step_size)
            parameter -= scratch
