"""The numpy learner (MLP actor-critics on the CPU): the torch learner's arithmetic without torch's per-operation
overhead. Nothing outside this package needs to read it; ``tests/test_mlp_gradient.py`` and
``tests/test_learners.py`` hold it to the torch learner."""

from ppo.learners.numpy.learner import NumpyLearner, unsupported_reason

__all__ = ["NumpyLearner", "unsupported_reason"]
