"""One-file checkpoints: written atomically, read without executing code."""

from __future__ import annotations

import io
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import CheckpointError
from common.files import atomic_write

FORMAT = "ppo-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain Python data only) to ``path`` with :func:`atomic_write`.

    The checkpoint is serialized in memory first and then written with plain file writes, so a full disk
    gives an ``OSError`` with its errno (torch's own file writer reports "basic_ios::clear: iostream error").

    Raises:
        OSError: the file cannot be written (ENOSPC, EDQUOT, EROFS, EIO, ...); a previous file at ``path`` is
            left as it was.
    """
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            handle.write(buffer.getbuffer())
    atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU.

    ``torch.load(..., weights_only=True)`` refuses any pickled object other than tensors and plain data,
    so a crafted file cannot run code.

    Raises:
        CheckpointError: the file is missing, truncated, corrupted, unsafe, or not one of ours.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing them
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = [line.strip() for line in str(error).splitlines() if "Unsupported global" in line]
        if unsafe:
            raise CheckpointError(f"checkpoint '{path}' was refused: it would load {unsafe[0][:120]}, and only "
                                  "tensors and plain data are accepted") from error
        raise CheckpointError(f"checkpoint '{path}' is truncated, corrupted or unsafe and cannot be read"
                              ) from error
    except Exception as error:  # noqa: BLE001 - arbitrary bytes fail anywhere in the parser (IndexError, ...)
        raise CheckpointError(f"checkpoint '{path}' is truncated, corrupted or unsafe and cannot be read"
                              ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a checkpoint written by this trainer")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint '{path}' has format version {state.get('version')}, this trainer "
                              f"reads version {VERSION}")
    return state


def seed_rngs(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (call before building the network)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global generators' states (torch, CUDA on a CUDA ``device``, numpy, Python) as plain data."""
    numpy_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "python": [version, list(internal), gauss]}


def load_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_states` captured."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and device.type == "cuda":
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
