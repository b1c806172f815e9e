"""Parameters and gradients kept in one flat tensor, so that clipping and Adam cost one call, not one per layer."""

from __future__ import annotations

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
