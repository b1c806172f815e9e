"""``--export CHECKPOINT --output FILE.onnx``: a checkpoint's deterministic policy as an ONNX model.

The model takes raw observations, as the environment gives them, and returns the actions the trainer's
evaluation would take (``agent.act(observations, deterministic=True)``):

* input ``observations``: ``[N, *observation_shape]``, float32 for vector observations (cast float64 ones;
  DM Control's Dict observations flattened as ``gymnasium.wrappers.FlattenObservation`` does), uint8 frames
  ``[N, 4, 84, 84]`` for Atari (the preprocessed, stacked frames of ``wrappers.make_atari_env``). ``N`` is
  dynamic. The observation normalization (``main.py``
  with ``--normalize-observations``: the checkpoint's running mean and variance, frozen, and the clip) or
  the 1/255 scaling of frames is inside the model.
* output ``actions``: Discrete spaces: the most likely action, int64 ``[N]``. Box spaces: the mean of the
  Gaussian, float32 ``[N, d]``, **clipped to the action space's bounds** (where they are finite), which is
  what the environment receives during training and evaluation (the trainer clips on the way into
  ``env.step``), so the actions can be passed to ``env.step`` as they are.

The graph comes from ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` and onnxscript; the older
TorchScript exporter is deprecated in torch 2.9+). The model's metadata (``metadata_props``) names the
environment, the spaces and the checkpoint. Run it with onnxruntime::

    import onnxruntime
    session = onnxruntime.InferenceSession("policy.onnx")
    actions = session.run(["actions"], {"observations": observations.astype("float32")})[0]
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from common.errors import UsageError
from ppo.checkpoint import load_checkpoint
from ppo.entry import EntryPoint, load_policy


class DeterministicPolicy(nn.Module):
    """The exported function: raw observations ``[N, *obs_shape]`` -> the policy's mode, ``[N]`` int64
    (Discrete) or ``[N, d]`` float32 clipped to ``[low, high]`` (Box; ``low``/``high`` None: no clipping).

    Args:
        agent: an ``networks.ActorCritic``; its ``act(observations, deterministic=True)`` is called.
        low, high: the Box action space's bounds ``[d]``, or None.
    """

    def __init__(self, agent: nn.Module, low: np.ndarray | None = None, high: np.ndarray | None = None) -> None:
        super().__init__()
        self.agent = agent
        self.clip = low is not None and high is not None
        if self.clip:
            self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        actions = self.agent.act(observations, deterministic=True)
        if self.clip:
            actions = torch.clamp(actions, self.low, self.high)
        return actions


def action_bounds(action_space: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(low, high)`` of a Box action space with at least one finite bound, else ``(None, None)``."""
    low, high = getattr(action_space, "low", None), getattr(action_space, "high", None)
    if low is None or high is None or not (np.isfinite(low).any() or np.isfinite(high).any()):
        return None, None
    return np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)


def is_discrete(action_space: Any) -> bool:
    """Whether the policy's actions are indices (a ``Discrete`` space) rather than vectors."""
    return not hasattr(action_space, "low")


def observation_dtype(observation_space: Any) -> torch.dtype:
    """The model's input dtype: uint8 for uint8 observations (Atari frames), else float32 (as in
    evaluation)."""
    return torch.uint8 if np.dtype(observation_space.dtype) == np.uint8 else torch.float32


def export_policy(agent: nn.Module, info: Any, output: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``agent``'s deterministic policy (see the module docstring) for ``info``'s spaces to the ONNX
    file ``output`` (atomically; parent directories are created).

    Args:
        agent: an ``networks.ActorCritic`` on the CPU.
        info: the ``wrappers.EnvironmentInfo`` of its environment (``observation_space``, ``action_space``).
        output: the ``.onnx`` file.
        metadata: extra ``metadata_props`` of the model (string values).

    Returns:
        ``output`` as a Path.

    Raises:
        UsageError: the ONNX exporter's packages (onnx, onnxscript) are missing.
        OSError: ``output`` cannot be written.
    """
    try:
        import onnxscript  # noqa: F401 - torch's dynamo exporter needs it; say so before torch does
    except ImportError as error:
        raise UsageError("--export needs the onnx and onnxscript packages: pip install -r requirements.txt"
                         ) from error
    from common.files import atomic_write
    low, high = action_bounds(info.action_space)
    policy = DeterministicPolicy(agent, low, high).eval()
    example = torch.zeros((2, *info.observation_space.shape), dtype=observation_dtype(info.observation_space))
    with warnings.catch_warnings(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")  # deprecation notes from torch.export's internals, not the user's concern
        program = torch.onnx.export(policy, (example,), None, input_names=["observations"],
                                    output_names=["actions"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    dynamo=True, verbose=False, optimize=True)
    program.model.metadata_props.update({
        "observation_shape": json.dumps(list(info.observation_space.shape)),
        "observation_dtype": str(example.dtype).removeprefix("torch."),
        "action_space": str(info.action_space),
        "actions": ("argmax action index (int64)" if is_discrete(info.action_space) else
                    "Gaussian mean (float32), clipped to the action space's bounds" if low is not None else
                    "Gaussian mean (float32)"),
        **(metadata or {})})
    return atomic_write(output, lambda temporary: program.save(temporary))


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Silence the exporter's INFO/WARNING log lines (e.g. "torchvision is not installed") while exporting."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript",
                                                    "torch.fx.experimental.symbolic_shapes")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_checkpoint(entry: EntryPoint, path: str, output: str | None) -> dict[str, Any]:
    """``--export CHECKPOINT --output FILE.onnx``: write the checkpoint's deterministic policy as ONNX
    (:func:`export_policy`).

    Returns:
        ``{"path", "environment_id", "observation_shape", "observation_dtype", "actions"}``; ``actions`` is
        "discrete" (int64 ``[N]``) or "continuous" (float32 ``[N, d]``).

    Raises:
        UsageError: ``output`` missing, not ``.onnx`` or not writable; the ONNX packages are missing.
        CheckpointError: the checkpoint is missing, unreadable or does not fit its environment.
        EnvironmentProblem: the environment cannot be built.
    """
    if output is None or Path(output).suffix.lower() != ".onnx":
        raise UsageError(f"--export needs --output FILE.onnx, got {output!r}")
    config, info, agent = load_policy(entry, load_checkpoint(path), path)
    try:
        written = export_policy(agent, info, output, {"environment_id": config.environment_id,
                                                      "checkpoint": str(path), "entry": entry.script})
    except OSError as error:
        raise UsageError(f"cannot write '{output}' ({error.strerror or error}); choose another --output") from error
    return {"path": str(written), "environment_id": config.environment_id,
            "observation_shape": list(info.observation_space.shape),
            "observation_dtype": str(observation_dtype(info.observation_space)).removeprefix("torch."),
            "actions": "discrete" if is_discrete(info.action_space) else "continuous"}
