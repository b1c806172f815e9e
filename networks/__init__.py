"""Actor-critic networks: the MLP for vector observations and the Nature CNN for Atari frames."""

from networks.actor_critic import ActionAndValue, ActorCritic, MLPActorCritic, RolloutPolicy, make_action_head
from networks.cnn import NatureCNNActorCritic
from networks.heads import CategoricalHead, GaussianHead, layer_init
from networks.normalizer import RunningNormalizer

__all__ = ["ActionAndValue", "ActorCritic", "MLPActorCritic", "RolloutPolicy", "make_action_head", "CategoricalHead",
           "GaussianHead", "layer_init", "RunningNormalizer", "NatureCNNActorCritic"]
