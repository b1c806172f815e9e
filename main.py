"""Train PPO on a gymnasium environment with vector observations (classic control, Box2D, MuJoCo).

    python main.py                                   # CartPole-v1 with its tuned preset
    python main.py --environment-id Humanoid-v4 --num-envs 16
    python main.py --evaluate runs/<run>/checkpoints/final.pt
"""

from __future__ import annotations

import sys

from ppo.cli import finish, main
from ppo.entry import EntryPoint
from ppo.config import PPOConfig
from common.errors import UsageError


def describe(environment_id: str):
    """Check that ``environment_id`` exists and has flat vector observations; returns its EnvironmentInfo.

    ``brax/<name>`` ids are Brax environments (``--env-backend brax``); any other id is a gymnasium id.
    """
    if environment_id.startswith("brax/"):
        from wrappers.brax_backend import describe_brax_environment
        return describe_brax_environment(environment_id)
    from wrappers import check_vector_observations, describe_environment
    info = describe_environment(environment_id)
    check_vector_observations(info)
    return info


def check_config(config: PPOConfig) -> None:
    """Brax ids and the Brax backend go together; envpool takes the MuJoCo ids it has.

    Raises:
        UsageError: a ``brax/`` id without ``--env-backend brax`` or the other way round.
        EnvironmentProblem: ``--env-backend envpool`` with an id envpool lacks, or without envpool installed.
    """
    brax_id = config.environment_id.startswith("brax/")
    if brax_id != (config.env_backend == "brax"):
        raise UsageError(f"{config.environment_id} needs --env-backend brax" if brax_id else
                         f"--env-backend brax takes brax/<name> ids (e.g. brax/ant), not {config.environment_id}")
    if config.env_backend == "envpool":
        from wrappers.envpool_backend import envpool_task_id
        envpool_task_id(config.environment_id)


def make_envs(config: PPOConfig, num_envs: int, evaluation: bool = False, render_mode: str | None = None):
    """Vector envs of ``config.environment_id`` from the ``--env-backend``; rewards are raw (the trainer
    scales them when asked), so training and evaluation envs are the same."""
    if config.env_backend == "envpool":
        from wrappers.envpool_backend import make_envpool_training_env
        return make_envpool_training_env(config.environment_id, num_envs, seed=config.seed)
    if config.env_backend == "brax":
        from ppo.entry import select_device
        from wrappers.brax_backend import make_brax_vector_env
        return make_brax_vector_env(config.environment_id, num_envs, seed=config.seed,
                                    device=select_device(config.use_gpu))
    from wrappers import make_vector_env
    return make_vector_env(config.environment_id, num_envs, config.vectorization_mode, render_mode=render_mode)


def make_agent(config: PPOConfig, info):
    """The MLP actor-critic for ``info``'s spaces."""
    from networks import MLPActorCritic
    agent = MLPActorCritic(info.observation_space.shape, info.action_space, hidden_size=config.hidden_size,
                           num_hidden_layers=config.num_hidden_layers, activation=config.activation,
                           normalize_observations=config.normalize_observations,
                           observation_clip=config.observation_clip,
                           state_dependent_std=config.std_mode == "state-dependent",
                           init_log_std=config.init_log_std)
    if not config.orthogonal_init:
        agent.use_default_initialisation()
    return agent


def make_render_env(config: PPOConfig):
    """One env of ``config.environment_id`` rendering ``rgb_array`` frames, for videos."""
    from videos import make_render_env as make_env
    return make_env(config.environment_id)


def _env_state():
    from wrappers import load_vector_env_state, vector_env_state
    return vector_env_state, load_vector_env_state


ENTRY = EntryPoint(
    name="main",
    script="main.py",
    description="PPO on gymnasium environments with vector observations (MLP actor-critic).",
    default_environment_id="CartPole-v1",
    describe=describe,
    check_config=check_config,
    make_envs=make_envs,
    make_agent=make_agent,
    env_state=_env_state(),
    make_render_env=make_render_env,
)

if __name__ == "__main__":
    sys.exit(finish(main(ENTRY)))
