"""Every hyperparameter of a run in one frozen dataclass, and the command-line parser generated from it.

Precedence of values, lowest first: the dataclass defaults below, the entry point's family preset, the
environment's own preset (``ppo/presets.toml``), then the flags the user typed. A flag always wins.

Flag names follow the PPO-pytorch-gym command line (``--environment-id``, ``--num-steps-collected``,
``--clip-coeff`` ...); CleanRL's names (``--env-id``, ``--num-steps``, ``--clip-coef`` ...) are accepted
as aliases.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from common.errors import UsageError


ENTRIES = ("main", "atari")
"""The entry points (``EntryPoint.name``) whose command lines show a field, unless its ``entries`` say."""


def _flag(default: Any, help: str, aliases: tuple[str, ...] = (), choices: tuple[str, ...] | None = None,
          group: str = "PPO", entries: tuple[str, ...] = ENTRIES) -> Any:
    return field(default=default, metadata={"help": help, "aliases": aliases, "choices": choices,
                                            "group": group, "entries": entries})


@dataclass(frozen=True)
class PPOConfig:
    """All hyperparameters of one run; ``dataclasses.asdict`` of it is what ``config.json`` holds.

    Values are validated by :func:`validate_config`, which raises :class:`common.errors.UsageError`.
    """

    # Environment
    environment_id: str = _flag("CartPole-v1", "gymnasium environment id", ("--env-id",), group="Environment")
    num_envs: int = _flag(1, "number of parallel environments", group="Environment")
    vectorization_mode: str = _flag("sync", "gymnasium vector env: sync steps envs in this process, async "
                                    "in one subprocess each (faster when the simulator dominates)",
                                    choices=("sync", "async"), group="Environment")
    env_backend: str = _flag("gymnasium", "what steps the envs: gymnasium's vector envs (see "
                             "--vectorization-mode), envpool's C++ thread pool (MuJoCo and Atari ids; pip install -r "
                             "requirements-envpool.txt), or Brax on JAX (brax/<name> ids; pip install -r "
                             "requirements-brax.txt)",
                             choices=("gymnasium", "envpool", "brax"), group="Environment")
    total_timesteps: int = _flag(1_000_000, "environment steps to train for, summed over all envs",
                                 group="Environment")
    sticky_action_probability: float = _flag(0.25, "Atari (main_atari.py): probability that the emulator "
                                             "repeats the previous action instead of the new one, per frame "
                                             "(Machado et al. 2018; 0 for the old deterministic games)",
                                             group="Environment", entries=("atari",))
    # Rollout and update
    num_steps_collected: int = _flag(2048, "steps collected per environment per rollout", ("--num-steps",))
    num_mini_batches: int = _flag(32, "NUMBER of minibatches per epoch (their size is num_envs * "
                                  "num_steps_collected / num_mini_batches)", ("--num-minibatches",))
    num_epochs: int = _flag(10, "passes over each rollout per update", ("--update-epochs",))
    learning_rate: float = _flag(3e-4, "Adam learning rate (of the policy, and of the value function "
                                 "unless --value-learning-rate is given)", ("--lr",))
    value_learning_rate: float | None = _flag(None, "separate Adam learning rate for the value network "
                                              "(default: --learning-rate)")
    anneal_lr: bool = _flag(True, "anneal learning rates linearly to 0 over the run")
    gae_gamma: float = _flag(0.99, "discount factor gamma", ("--gamma",))
    gae_lambda: float = _flag(0.95, "GAE lambda (Schulman et al. 2016)")
    clip_coeff: float = _flag(0.2, "PPO clip coefficient epsilon", ("--clip-coef",))
    anneal_clip: bool = _flag(False, "anneal the clip coefficient linearly to 0 over the run, like the "
                              "learning rate (RL Zoo's lin_0.2 schedules)")
    clip_value_loss: bool = _flag(True, "clip the value update to +-clip coefficient around the old values",
                                  ("--clip-vloss",))
    ent_loss_coeff: float = _flag(0.0, "entropy bonus coefficient", ("--ent-coef",))
    value_loss_coeff: float = _flag(0.5, "value loss coefficient", ("--vf-coef",))
    max_gradient: float = _flag(0.5, "maximum global gradient norm", ("--max-grad-norm",))
    normalize_advantages: bool = _flag(True, "normalize advantages per minibatch", ("--norm-adv",))
    target_kl: float | None = _flag(None, "stop the epochs of an update early once approx KL exceeds this")
    normalize_observations: bool = _flag(True, "normalize observations with running statistics kept "
                                         "inside the agent", entries=("main",))
    observation_clip: float = _flag(10.0, "clip normalized observations to +-this", entries=("main",))
    normalize_rewards: bool = _flag(True, "scale rewards by the std of a running discounted return",
                                    entries=("main",))
    reward_clip: float = _flag(10.0, "clip scaled rewards to +-this", entries=("main",))
    # Network
    hidden_size: int = _flag(64, "units per hidden layer (width)", group="Network", entries=("main",))
    num_hidden_layers: int = _flag(2, "hidden layers in the actor and in the critic (depth)", group="Network",
                                   entries=("main",))
    activation: str = _flag("tanh", "hidden activation", choices=("tanh", "relu", "elu"), group="Network",
                            entries=("main",))
    std_mode: str = _flag("state-independent", "Gaussian policies: a learned log-std vector "
                          "(state-independent) or a softplus std head (state-dependent)",
                          choices=("state-independent", "state-dependent"), group="Network", entries=("main",))
    init_log_std: float = _flag(0.0, "initial log standard deviation of Gaussian policies", group="Network",
                                entries=("main",))
    orthogonal_init: bool = _flag(True, "orthogonal initial weights (gain sqrt(2) hidden, 0.01 policy output, 1 "
                                  "value; Engstrom et al. 2020); --no-orthogonal-init keeps PyTorch's default "
                                  "initialisation, as RL Zoo's ortho_init=False", group="Network")
    # System
    seed: int = _flag(1, "random seed of torch, numpy and the environments", group="System")
    deterministic_torch: bool = _flag(False, "use deterministic torch algorithms", ("--torch-deterministic",),
                                      group="System")
    use_gpu: bool = _flag(False, "run the learner on CUDA (fails if no CUDA device exists)", ("--cuda",),
                          group="System")
    num_threads: int = _flag(0, "CPU threads of torch and of numpy's BLAS (0: automatic, which is 1: fastest for "
                                "small networks)",
                             group="System")
    compile: bool = _flag(False, "compile the minibatch loss and its gradient with torch.compile (the same "
                          "arithmetic in fused kernels; the first update pays tens of seconds of compilation, "
                          "cached on disk for later runs)", group="System")
    learner: str = _flag("auto", "what computes the update: torch (the reference: autograd and torch's Adam, any "
                         "network and device), numpy (MLP on the CPU: the same arithmetic in numpy, several times "
                         "faster for small networks), cuda-graph (CUDA only, one process: the minibatch step and the "
                         "rollout's policy step captured in CUDA graphs), or auto (numpy where it can, cuda-graph on "
                         "a GPU, torch elsewhere; the run header says which and why)",
                         choices=("auto", "torch", "numpy", "cuda-graph"), group="System")
    output_dir: str = _flag("runs", "parent directory of run directories", group="System")
    run_name: str | None = _flag(None, "name of this run's directory under --output-dir; a name whose directory "
                                 "exists is refused (exit 2: only --resume continues a run) (default: "
                                 "ENV__SEED__TIME, with -2, -3, ... added when another run took it)",
                                 group="System")
    checkpoint_interval: int = _flag(25, "write checkpoints/latest.pt every this many iterations "
                                     "(0: only at the end)", group="System")
    eval_episodes: int = _flag(10, "episodes of the evaluation at the end (0: none) and with --evaluate",
                               group="System")
    eval_policy: str = _flag("mode", "actions in evaluations and recordings: the policy's mode (argmax, Gaussian "
                             "mean) or samples from it (the atari preset's choice, as RL Zoo and CleanRL evaluate "
                             "Atari agents: an argmax policy can freeze)", choices=("mode", "sample"),
                             group="System")
    progress: bool = _flag(True, "show a progress bar", group="System")
    capture_video: bool = _flag(False, "record videos/before.gif of the untrained agent and "
                                "videos/after.gif/.mp4 plus before_after.gif at the end", group="System")

    # Derived quantities -------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Transitions per rollout: ``num_envs * num_steps_collected``."""
        return self.num_envs * self.num_steps_collected

    @property
    def minibatch_size(self) -> int:
        """Transitions per minibatch: ``batch_size // num_mini_batches``."""
        return self.batch_size // self.num_mini_batches

    @property
    def num_iterations(self) -> int:
        """Rollout/update iterations: ``total_timesteps // batch_size``."""
        return self.total_timesteps // self.batch_size


FIELDS = {f.name: f for f in dataclasses.fields(PPOConfig)}
_TYPES = typing.get_type_hints(PPOConfig)


def flag_name(name: str) -> str:
    """``num_envs`` -> ``--num-envs``."""
    return "--" + name.replace("_", "-")


def _parse_optional_float(text: str) -> float | None:
    if text.lower() in ("none", "off", ""):
        return None
    return float(text)


def _parse_optional_str(text: str) -> str | None:
    return None if text.lower() == "none" else text


def add_config_arguments(parser: argparse.ArgumentParser, entry: str | None = None) -> None:
    """Add one flag per :class:`PPOConfig` field shown to ``entry`` (an ``EntryPoint.name``; None: all), with
    ``default=argparse.SUPPRESS``.

    Suppressed defaults let :func:`resolve_config` tell the flags a user typed from the ones left out. Each help
    text ends with the field's default once (presets, ``--list-presets``, may replace it for an environment).
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    metavars = {int: "N", float: "X", str: "TEXT"}
    for name, f in FIELDS.items():
        if entry is not None and entry not in f.metadata["entries"]:
            continue
        group = groups.setdefault(f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        names = [flag_name(name), *f.metadata["aliases"]]
        kind = _TYPES[name]
        default = "" if "default:" in f.metadata["help"] else f" (default: {f.default})"
        help_text = f"{f.metadata['help']}{default}".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if kind is bool:
            group.add_argument(*names, action=argparse.BooleanOptionalAction,
                               help=help_text, **kwargs)
            continue
        if kind in (float | None,):
            kwargs["type"] = _parse_optional_float
            kwargs["metavar"] = "X|none"
        elif kind in (str | None,):
            kwargs["type"] = _parse_optional_str
            kwargs["metavar"] = "NAME"
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = {"environment_id": "ID", "output_dir": "DIR"}.get(name, metavars.get(kind))
        if f.metadata["choices"]:
            kwargs.pop("metavar", None)
            kwargs["choices"] = f.metadata["choices"]
        group.add_argument(*names, help=help_text, **kwargs)


def resolve_config(explicit: dict[str, Any], *presets: dict[str, Any]) -> PPOConfig:
    """Build a :class:`PPOConfig` from presets (applied in order) and then the explicit flags.

    Args:
        explicit: values the user typed, by field name.
        presets: dictionaries of field name -> value; later ones override earlier ones.

    Raises:
        UsageError: a preset names a field that does not exist, or a value is invalid.
    """
    values: dict[str, Any] = {}
    for preset in presets:
        for key, value in preset.items():
            if key not in FIELDS:
                raise UsageError(f"preset names unknown hyperparameter '{key}'")
            values[key] = value
    values.update(explicit)
    config = PPOConfig(**values)
    validate_config(config)
    return config


def config_from_dict(data: dict[str, Any]) -> PPOConfig:
    """Rebuild a config saved with ``dataclasses.asdict`` (unknown keys, from newer versions, are ignored)."""
    return PPOConfig(**{k: v for k, v in data.items() if k in FIELDS})


def validate_config(config: PPOConfig) -> None:
    """Check every value for range and consistency.

    Raises:
        UsageError: with a one-line message naming the flag and what to change.
    """
    def fail(name: str, message: str) -> None:
        raise UsageError(f"{flag_name(name)} {message}")

    for name in ("num_envs", "total_timesteps", "num_steps_collected", "num_mini_batches", "num_epochs",
                 "hidden_size"):
        if getattr(config, name) <= 0:
            fail(name, f"must be a positive integer, got {getattr(config, name)}")
    for name in ("num_hidden_layers", "num_threads", "checkpoint_interval", "eval_episodes"):
        if getattr(config, name) < 0:
            fail(name, f"must be zero or positive, got {getattr(config, name)}")
    for name in ("learning_rate", "value_learning_rate", "clip_coeff", "max_gradient", "observation_clip",
                 "reward_clip", "target_kl"):
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            fail(name, f"must be a positive number, got {value}")
    for name in ("gae_gamma", "gae_lambda", "sticky_action_probability"):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            fail(name, f"must lie in [0, 1], got {value}")
    for name in ("ent_loss_coeff", "value_loss_coeff"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            fail(name, f"must be zero or positive, got {value}")
    if not math.isfinite(config.init_log_std) or not -5.0 <= config.init_log_std <= 2.0:
        fail("init_log_std", f"must lie in [-5, 2], got {config.init_log_std}")
    if config.batch_size % config.num_mini_batches != 0:
        fail("num_mini_batches", f"({config.num_mini_batches}) must divide the batch of num_envs x "
             f"num_steps_collected = {config.batch_size} transitions")
    if config.minibatch_size < 2:
        fail("num_mini_batches", f"({config.num_mini_batches}) leaves minibatches of "
             f"{config.minibatch_size} transition; use at most {config.batch_size // 2}")
    if config.total_timesteps < config.batch_size:
        fail("total_timesteps", f"({config.total_timesteps}) is smaller than one rollout of "
             f"{config.batch_size} steps; raise it or lower --num-envs/--num-steps-collected")
    if config.run_name is not None and (config.run_name in ("", ".", "..") or "/" in config.run_name):
        fail("run_name", f"must be a plain directory name, got '{config.run_name}'")
