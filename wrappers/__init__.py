"""Environment construction: gymnasium vector envs and their wrappers."""

from wrappers.atari import describe_atari_environment, make_atari_env, make_atari_vector_env
from wrappers.vector import (EnvironmentInfo, check_vector_observations, describe_environment, is_atari,
                             load_vector_env_state, make_vector_env, vector_env_state)

__all__ = ["EnvironmentInfo", "check_vector_observations", "describe_environment", "is_atari",
           "load_vector_env_state", "make_vector_env", "vector_env_state", "describe_atari_environment",
           "make_atari_env", "make_atari_vector_env"]
