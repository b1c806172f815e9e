"""Parameters and gradients kept in one flat tensor, so that clipping and Adam cost one call, not one per layer."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def flatten_parameters(parameters: list[nn.Parameter]) -> nn.Parameter:
    """One flat Parameter ``[P]`` holding the values of ``parameters`` (``P`` their total size), with a zeroed
    gradient ``[P]``.

    Each of ``parameters`` becomes a view of it, and its ``.grad`` a view of the flat gradient: an optimizer
    over the flat Parameter updates the network's own weights, and a backward pass accumulates into the
    flat gradient as long as nobody sets a ``.grad`` to None (zero it with ``flat.grad.zero_()``).
    The parameters must already be on their final device. Raises ValueError when ``parameters`` is empty or
    mixes devices or dtypes.
    """
    if not parameters:
        raise ValueError("no parameters to flatten")
    if len({(p.device, p.dtype) for p in parameters}) > 1:
        raise ValueError("parameters to flatten must share one device and dtype")
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in parameters]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        parameter.data = flat.data[offset:offset + size].view_as(parameter)
        parameter.grad = flat.grad[offset:offset + size].view_as(parameter)
        offset += size
    return flat


def clip_gradient_norm(flat_parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``flat_parameters`` in place so that their global L2 norm is at most
    ``max_norm``; returns the norm before clipping (a 0-d tensor).

    The arithmetic of ``torch.nn.utils.clip_grad_norm_`` (scale ``min(1, max_norm / (norm + 1e-6))``), in a
    handful of operations on the flat gradients instead of a few per parameter.
    """
    gradients = [p.grad for p in flat_parameters]
    if len(gradients) == 1:
        norm = torch.linalg.vector_norm(gradients[0])
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients]))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for gradient in gradients:
        gradient.mul_(scale)
    return norm


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


def flat_optimizer_state(state: dict, group_sizes: list[list[int]]) -> dict:
    """An Adam ``state_dict`` saved with one entry per parameter, converted to one entry per flat
    Parameter (checkpoints written before the parameters were flattened).

    ``group_sizes[g]`` lists the sizes of the parameters of group ``g``, in order. A state that already has
    one entry per group is returned unchanged.

    Raises:
        ValueError: the state's groups do not hold as many parameters as ``group_sizes``.
    """
    groups = state["param_groups"]
    if [len(group["params"]) for group in groups] == [1] * len(group_sizes):
        return state
    if [len(group["params"]) for group in groups] != [len(sizes) for sizes in group_sizes]:
        raise ValueError("the optimizer state does not match this network's parameters")
    new_state, new_groups = {}, []
    for index, group in enumerate(groups):
        entries = [state["state"].get(key) for key in group["params"]]
        if all(entry is not None for entry in entries):
            new_state[index] = {
                "step": entries[0]["step"],
                "exp_avg": torch.cat([entry["exp_avg"].reshape(-1) for entry in entries]),
                "exp_avg_sq": torch.cat([entry["exp_avg_sq"].reshape(-1) for entry in entries]),
            }
        new_groups.append({**group, "params": [index]})
    return {"state": new_state, "param_groups": new_groups}
