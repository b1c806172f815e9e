"""One-file checkpoints: written atomically, read without executing code."""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ppo.errors import CheckpointError

FORMAT = "ppo-checkpoint"
VERSION = 1


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(temporary_path)`` fills a temporary file in the same directory
    (same suffix, so writers that pick a format by suffix work), which is flushed to disk and moved over
    ``path`` with ``os.replace``. A crash or ``kill -9`` at any moment leaves the previous file or the new
    one, never a partial file. Parent directories are created. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                             dir=path.parent)
    os.close(descriptor)
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain Python data only) to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda temporary: torch.save({"format": FORMAT, "version": VERSION, **state}, temporary))


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
