"""Train PPO on a gymnasium environment with vector observations (classic control, Box2D, MuJoCo).

    python main.py                                   # CartPole-v1 with its tuned preset
    python main.py --environment-id Humanoid-v4 --num-envs 16
    python main.py --evaluate runs/<run>/checkpoints/final.pt
"""

from __future__ import annotations

import sys

from ppo.cli import EntryPoint, main
from ppo.config import PPOConfig


def describe(environment_id: str):
    """Check that ``environment_id`` exists and has flat vector observations; returns its EnvironmentInfo."""
    from wrappers import check_vector_observations, describe_environment
    info = describe_environment(environment_id)
    check_vector_observations(info)
    return info


def make_envs(config: PPOConfig, num_envs: int, evaluation: bool = False, render_mode: str | None = None):
    """Vector envs of ``config.environment_id``; rewards are raw (the trainer scales them when asked), so
    training and evaluation envs are the same."""
    from wrappers import make_vector_env
    return make_vector_env(config.environment_id, num_envs, config.vectorization_mode, render_mode=render_mode)


def make_agent(config: PPOConfig, info):
    """The MLP actor-critic for ``info``'s spaces."""
    from networks import MLPActorCritic
    return MLPActorCritic(info.observation_space.shape, info.action_space, hidden_size=config.hidden_size,
                          num_hidden_layers=config.num_hidden_layers, activation=config.activation,
                          normalize_observations=config.normalize_observations,
                          observation_clip=config.observation_clip,
                          state_dependent_std=config.std_mode == "state-dependent",
                          init_log_std=config.init_log_std)


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
    make_envs=make_envs,
    make_agent=make_agent,
    env_state=_env_state(),
    make_render_env=make_render_env,
)

if __name__ == "__main__":
    sys.exit(main(ENTRY))
