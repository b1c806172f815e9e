"""Train PPO on an Atari game (``ALE/<Game>-v5``) from pixels: DeepMind preprocessing, Nature CNN.

    python main_atari.py                                         # ALE/Assault-v5, the Atari preset
    python main_atari.py --environment-id ALE/Pong-v5 --use-gpu
    python main_atari.py --evaluate runs/<run>/checkpoints/final.pt --eval-episodes 10

Same flags, run directory, checkpoints and evaluation as ``main.py`` (``ppo.cli``); the hyperparameters
come from the ``[family.atari]`` preset of ``ppo/presets.toml`` (CleanRL ``ppo_atari.py``).
"""

from __future__ import annotations

import sys

from ppo.cli import finish, main
from ppo.entry import EntryPoint
from ppo.config import PPOConfig
from common.errors import UsageError


def describe(environment_id: str):
    """The EnvironmentInfo of an ``ALE/<Game>-v5`` game, observations ``Box(0, 255, (4, 84, 84), uint8)``.

    Raises:
        EnvironmentProblem: not an Atari id (pointing to main.py), or an unknown/unbuildable game.
    """
    from wrappers import describe_atari_environment
    return describe_atari_environment(environment_id)


def check_config(config: PPOConfig) -> None:
    """Refuse observation or reward normalization and the Brax backend, before any work.

    Raises:
        UsageError: frames are scaled by 1/255 in the network and rewards clipped to their sign instead;
            Brax has no Atari games.
        EnvironmentProblem: ``--env-backend envpool`` with a game envpool lacks, or without envpool.
    """
    for name in ("normalize_observations", "normalize_rewards"):
        if getattr(config, name):
            raise UsageError(f"main_atari.py scales frames by 1/255 in the network and clips rewards to "
                             f"their sign; drop --{name.replace('_', '-')}")
    if config.env_backend == "brax":
        raise UsageError("Brax has no Atari games: use --env-backend gymnasium (ale-py) or envpool")
    if config.env_backend == "envpool":
        from wrappers.envpool_backend import envpool_task_id
        envpool_task_id(config.environment_id)


def make_envs(config: PPOConfig, num_envs: int, evaluation: bool = False, render_mode: str | None = None):
    """Training envs end learning episodes at life losses and clip rewards to their sign; evaluation envs
    play whole games with raw rewards. Both record full-game raw scores in ``infos["episode"]``."""
    if config.env_backend == "envpool":
        from wrappers.envpool_backend import make_envpool_training_env
        return make_envpool_training_env(config.environment_id, num_envs, seed=config.seed, evaluation=evaluation,
                                         sticky_action_probability=config.sticky_action_probability)
    from wrappers import make_atari_vector_env
    return make_atari_vector_env(config.environment_id, num_envs, config.vectorization_mode,
                                 evaluation=evaluation, sticky_action_probability=config.sticky_action_probability,
                                 render_mode=render_mode)


def make_agent(config: PPOConfig, info):
    """The Nature CNN actor-critic for ``info``'s ``(4, 84, 84)`` frames and Discrete actions."""
    from networks import NatureCNNActorCritic
    agent = NatureCNNActorCritic(info.observation_space.shape, info.action_space)
    if not config.orthogonal_init:
        agent.use_default_initialisation()
    return agent


def make_render_env(config: PPOConfig):
    """One preprocessed game rendering ``rgb_array`` frames, for videos."""
    from wrappers import make_atari_env
    return make_atari_env(config.environment_id, config.sticky_action_probability)


ENTRY = EntryPoint(
    name="atari",
    script="main_atari.py",
    description="PPO on Atari games (ALE/<Game>-v5) with the DeepMind preprocessing (no-op starts, frame skip "
                "4 with max-pooling, 84x84 grayscale, 4 stacked frames, life loss as episode end and reward "
                "clipping for learning) and the Nature CNN actor-critic. The MLP flags (--hidden-size, "
                "--num-hidden-layers, --activation, --std-mode, --init-log-std) and --vectorization-mode do "
                "not apply: ale-py steps the games in C++ threads.",
    default_environment_id="ALE/Assault-v5",
    describe=describe,
    make_envs=make_envs,
    make_agent=make_agent,
    env_state=None,
    make_render_env=make_render_env,
    check_config=check_config,
)

if __name__ == "__main__":
    sys.exit(finish(main(ENTRY)))
