"""Multi-process data-parallel training (ppo/distributed.py): two CPU ranks under torchrun, gloo backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ppo.distributed import DistributedContext, init_from_environment

ROOT = Path(__file__).resolve().parent.parent

# 2 envs x 32 steps = 64 transitions per rank and rollout; 512 steps per rank = 8 iterations.
SMALL_RUN = ("--environment-id", "CartPole-v1", "--num-envs", "2", "--num-steps-collected", "32",
             "--num-mini-batches", "2", "--total-timesteps", "512", "--no-progress", "--eval-episodes", "1",
             "--normalize-observations")


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node nproc main.py args``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), str(ROOT / "main.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env=env)


def test_two_ranks_train_identically_and_only_rank_0_writes(tmp_path):
    result = torchrun(*SMALL_RUN, "--num-epochs", "2", "--output-dir", str(tmp_path), "--run-name", "ddp")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Parameters identical across 2 ranks" in result.stdout
    assert result.stdout.count("Run directory:") == 1  # rank 1 prints nothing
    assert [path.name for path in tmp_path.iterdir()] == ["ddp"]
    run_dir = tmp_path / "ddp"
    for name in ("config.json", "metrics.csv", "episodes.csv", "evaluation.json", "learning_curve.png",
                 "checkpoints/latest.pt", "checkpoints/final.pt", "tensorboard"):
        assert (run_dir / name).exists(), name
    state = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert state["world_size"] == 2 and state["iteration"] == 8
    assert state["global_step"] == 512  # per rank
    # One normalizer update per rollout with both ranks' observations: 8 rollouts x 2 ranks x 64.
    assert state["model"]["normalizer.count"].item() == 8 * 2 * 64
    # Logged steps count both ranks.
    last_row = (run_dir / "metrics.csv").read_text().strip().splitlines()[-1]
    assert last_row.split(",")[:2] == ["8", "1024"]


def test_target_kl_early_stop_is_agreed_without_deadlock(tmp_path):
    result = torchrun(*SMALL_RUN, "--num-epochs", "4", "--target-kl", "1e-9", "--output-dir", str(tmp_path),
                      "--run-name", "kl")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Parameters identical across 2 ranks" in result.stdout
    state = torch.load(tmp_path / "kl" / "checkpoints" / "final.pt", weights_only=True)
    # Every update stopped after its first epoch: 8 iterations x 1 epoch x 2 minibatches (not x 4 epochs).
    steps = {float(value["step"]) for value in state["optimizer"]["state"].values()}
    assert steps == {8 * 1 * 2}


def test_single_process_context_makes_no_distributed_calls(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_from_environment(use_gpu=False)
    assert (context.rank, context.world_size, context.enabled, context.is_main) == (0, 1, False, True)
    assert not dist.is_initialized()
    assert context.rank_seed(7) == 7
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(context.all_gather(values), values)
    assert context.identical_across_ranks([values]) and not context.any(False)


def _average_gradients_worker(rank: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        context = DistributedContext(rank=rank, world_size=2)
        a = torch.nn.Parameter(torch.zeros(2))
        b = torch.nn.Parameter(torch.zeros(1))
        a.grad = torch.full((2,), float(rank + 1))   # rank 0: [1, 1], rank 1: [2, 2]
        b.grad = None if rank == 0 else torch.tensor([4.0])  # None counts as zeros
        extras = context.average_gradients([a, b], torch.tensor([float(rank), 10.0]))
        maximum = context.all_reduce([float(rank)], op="max")
        torch.save({"a": a.grad, "b": b.grad, "extras": extras, "max": maximum,
                    "same": context.identical_across_ranks([torch.ones(3)]),
                    "differ": context.identical_across_ranks([torch.ones(3) * rank])}, f"{results}{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_average_gradients_one_buffer_with_missing_gradients_as_zeros(tmp_path):
    results = str(tmp_path / "rank")
    init_file = str(tmp_path / "rendezvous")  # gloo's file store: a path that does not exist yet
    mp.spawn(_average_gradients_worker, args=(init_file, results), nprocs=2, join=True)
    for rank in range(2):
        out = torch.load(f"{results}{rank}.pt", weights_only=True)
        assert torch.equal(out["a"], torch.tensor([1.5, 1.5]))  # (1 + 2) / 2
        assert torch.equal(out["b"], torch.tensor([2.0]))       # (0 + 4) / 2
        assert torch.equal(out["extras"], torch.tensor([1.0, 20.0]))  # extras are summed, not averaged
        assert out["max"].item() == 1.0
        assert out["same"] is True and out["differ"] is False
