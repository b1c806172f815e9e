"""Data-parallel training across processes and nodes with ``torch.distributed`` (launched by ``torchrun``).

Every rank (process) runs its own envs and its own copy of the agent. The ranks stay in lockstep by
exchanging a few small messages per minibatch and per iteration:

- gradients are averaged before the gradient-norm clip (:meth:`DistributedContext.average_gradients`), so
  every rank takes the same optimizer step and the weights never diverge;
- the observation normalizer is updated with every rank's rollout (:meth:`DistributedContext.all_gather`);
- decisions that decide how many collective calls follow (skip an update after a fault, stop early on the
  target KL, stop on a signal) are taken on values reduced across ranks (:meth:`DistributedContext.all_reduce`),
  so no rank waits for a message another rank will never send.

A single process (no ``torchrun``, or ``WORLD_SIZE=1``) gets a context with ``world_size == 1`` whose
``enabled`` is False; the trainer then makes no ``torch.distributed`` call at all, and single-process runs
stay exactly what they were.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.distributed as dist

from common.errors import UsageError

# Each rank seeds its envs and its sampling with ``seed + SEED_STRIDE * rank`` (rank 0: ``seed`` itself).
SEED_STRIDE = 1000


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: this process's index among all processes of the run (0 .. world_size - 1).
        world_size: number of processes of the run (1: a plain single-process run).
        local_rank: index of this process on its node (its GPU with ``--use-gpu``).
        device: where the collective calls' tensors live (``cpu`` with gloo, ``cuda:local_rank`` with nccl).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        """True when there is more than one process (and a process group to talk to)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes the run directory, checkpoints and output."""
        return self.rank == 0

    def rank_seed(self, seed: int) -> int:
        """The seed of this rank's envs and sampling: ``seed + 1000 * rank``."""
        return seed + SEED_STRIDE * self.rank

    # ---------------------------------------------------------------------------------------------
    def average_gradients(self, parameters: Sequence[torch.nn.Parameter],
                          extras: torch.Tensor | None = None) -> torch.Tensor | None:
        """Replace every parameter's gradient by its mean over the ranks (one all-reduce in all).

        The gradients are flattened into one buffer (a parameter whose ``grad`` is None counts as zeros
        and gets the averaged gradient), summed across ranks with one ``all_reduce``, divided by the
        world size and copied back. ``extras`` (a small 1-D tensor) rides in the same buffer and is
        returned SUMMED over the ranks, not averaged.

        Returns:
            the summed ``extras`` (None without extras).
        """
        if not self.enabled:
            return extras
        parameters = list(parameters)
        reference = parameters[0]
        pieces = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype,
                                                                              device=p.device)
                  for p in parameters]
        num_gradients = sum(piece.numel() for piece in pieces)
        if extras is not None:
            pieces.append(extras.detach().to(reference.dtype).reshape(-1))
        buffer = torch.cat(pieces)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        gradients = buffer[:num_gradients] / self.world_size
        offset = 0
        for p in parameters:
            chunk = gradients[offset:offset + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
            offset += p.numel()
        return buffer[num_gradients:] if extras is not None else None

    def all_reduce(self, values: torch.Tensor | Iterable[float], op: str = "sum") -> torch.Tensor:
        """``values`` (a small float tensor or a list of floats) summed (``op="sum"``) or maximised
        (``op="max"``) over the ranks; returned on the CPU as float64. Single process: the values."""
        tensor = torch.as_tensor(values if isinstance(values, torch.Tensor) else list(values),
                                 dtype=torch.float64).reshape(-1)
        if not self.enabled:
            return tensor
        tensor = tensor.to(self.device)
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
        return tensor.cpu()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on at least one rank."""
        return bool(self.all_reduce([1.0 if flag else 0.0], op="max")[0] > 0)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (``[N, ...]``, the same shape and dtype on every rank) concatenated in
        rank order along dim 0 (``[world_size * N, ...]``), identical on every rank."""
        if not self.enabled:
            return tensor
        tensor = tensor.contiguous()
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor)
        return torch.cat(gathered)

    def identical_across_ranks(self, tensors: Iterable[torch.Tensor]) -> bool:
        """True on every rank when every rank holds exactly (bit for bit) rank 0's values of ``tensors``
        (parameters, buffers), compared as one float64 vector."""
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        if not self.enabled:
            return True
        gathered = self.all_gather(flat.to(self.device)).reshape(self.world_size, -1)
        return all(torch.equal(gathered[0], gathered[rank]) for rank in range(1, self.world_size))

    def close(self, wait_for_all: bool = False) -> None:
        """Destroy the process group (no-op for a single process).

        With ``wait_for_all`` (the normal end of a run) every rank first waits at a barrier until all ranks
        got there, so no rank tears its connections down while rank 0 is still evaluating and writing: a
        rank that left early was seen to die with SIGABRT in gloo's teardown. After an error the group is
        destroyed at once (a barrier could wait for a rank that is gone).
        """
        if self.enabled and dist.is_initialized():
            if wait_for_all:
                dist.barrier()
            dist.destroy_process_group()


def init_from_environment(use_gpu: bool) -> DistributedContext:
    """Join the process group described by torchrun's environment variables.

    With ``WORLD_SIZE`` unset or 1 this returns a single-process context and touches nothing. Otherwise it
    reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and ``MASTER_ADDR``/``MASTER_PORT`` through the
    ``env://`` rendezvous) and initialises the default process group: "gloo" on the CPU, "nccl" with
    ``use_gpu``, where this rank drives ``cuda:LOCAL_RANK``.

    Raises:
        UsageError: ``use_gpu`` without a CUDA device for this local rank, or torch.distributed missing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_available():
        raise UsageError("this torch build has no torch.distributed; run a single process (python main.py)")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_gpu:
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise UsageError(f"--use-gpu: local rank {local_rank} needs cuda:{local_rank}, but "
                             f"{torch.cuda.device_count()} CUDA device(s) are available; lower "
                             "--nproc_per_node to the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
