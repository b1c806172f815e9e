"""Actor-critic modules: the shared interface and the MLP used for vector observations."""

from __future__ import annotations

from typing import Callable, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from networks.heads import CategoricalHead, GaussianHead, layer_init
from networks.normalizer import RunningNormalizer

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
ACTIVATION_FUNCTIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": F.elu}


class ActionAndValue(NamedTuple):
    """What the policy gives for a batch of ``N`` observations."""

    action: torch.Tensor    # [N] int64 (Discrete) or [N, d] float32 (Box), raw sample before clipping
    log_prob: torch.Tensor  # [N]
    entropy: torch.Tensor | None  # [N]; None when not asked for
    value: torch.Tensor     # [N]


def make_action_head(action_space: gym.Space, in_features: int, state_dependent_std: bool = False,
                     init_log_std: float = 0.0) -> nn.Module:
    """A :class:`CategoricalHead` for ``Discrete`` spaces, a :class:`GaussianHead` for 1-D ``Box`` spaces.

    Raises:
        ValueError: any other action space.
    """
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalHead(in_features, int(action_space.n))
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return GaussianHead(in_features, action_space.shape[0], state_dependent_std, init_log_std)
    raise ValueError(f"unsupported action space {action_space}: only Discrete and 1-D Box are supported")


class ActorCritic(nn.Module):
    """Interface the trainer uses. Subclasses set ``self.action_head`` and ``self.value_head`` and
    implement :meth:`features`.

    Observations go in as the environment gives them (float or uint8, ``[N, *obs_shape]``);
    :meth:`preprocess` normalizes or scales them inside the module, so a saved ``state_dict`` is all a
    deployed policy needs.
    """

    action_head: nn.Module
    value_head: nn.Module

    def __init__(self) -> None:
        super().__init__()
        # An instance attribute (not a class one): nn.Module registers a RunningNormalizer assigned later
        # as a submodule, and attribute lookup must find that submodule.
        self.normalizer: RunningNormalizer | None = None

    def preprocess(self, observations: torch.Tensor) -> torch.Tensor:
        """Raw observations ``[N, ...]`` -> network input (float32)."""
        if self.normalizer is not None:
            return self.normalizer(observations)
        return observations.float()

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input ``[N, ...]`` -> ``(actor_features [N, F_a], critic_features [N, F_c])``."""
        raise NotImplementedError

    def get_value(self, observations: torch.Tensor) -> torch.Tensor:
        """``V(s)``: ``[N, *obs_shape]`` -> ``[N]``."""
        _, critic_features = self.features(self.preprocess(observations))
        return F.linear(critic_features, self.value_head.weight, self.value_head.bias).squeeze(-1)

    def get_action_and_value(self, observations: torch.Tensor, action: torch.Tensor | None = None,
                             deterministic: bool = False, with_entropy: bool = True) -> ActionAndValue:
        """Sample (or, given ``action``, evaluate) actions and values for ``[N, *obs_shape]``.

        ``with_entropy=False`` (rollouts, which do not use it) leaves ``entropy`` None.
        """
        actor_features, critic_features = self.features(self.preprocess(observations))
        action, log_prob, entropy = self.action_head(actor_features, action, deterministic, with_entropy)
        value = F.linear(critic_features, self.value_head.weight, self.value_head.bias).squeeze(-1)
        return ActionAndValue(action, log_prob, entropy, value)

    def act(self, observations: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions only, for evaluation and videos: the mode of the policy unless ``deterministic=False``."""
        actor_features, _ = self.features(self.preprocess(observations))
        return self.action_head(actor_features, None, deterministic, with_entropy=False)[0]

    def rollout_network(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """A function of the network input ``[N, ...]`` (after :meth:`preprocess`) that returns
        ``(outputs [N, K], values [N])``, where ``outputs`` are the concatenated outputs of the action
        head's :meth:`output_layers`, computed with the weights as they are now.

        For the rollouts (:class:`RolloutPolicy`), during which the weights do not change; subclasses may
        rearrange the weights into fewer operations. Call under ``torch.inference_mode()``.
        """
        head_layers = self.action_head.output_layers()
        head_weight = torch.cat([layer.weight for layer in head_layers])
        head_bias = torch.cat([layer.bias for layer in head_layers])
        value_head = self.value_head

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            actor_features, critic_features = self.features(x)
            values = F.linear(critic_features, value_head.weight, value_head.bias).squeeze(-1)
            return F.linear(actor_features, head_weight, head_bias), values

        return run

    def use_default_initialisation(self) -> None:
        """Re-initialise every linear and convolutional layer with PyTorch's default (Kaiming-uniform)
        initialisation instead of the orthogonal one, as SB3 / RL Zoo do with ``ortho_init=False``. The
        log-std and a state-dependent std layer keep their initial values."""
        std_layer = getattr(self.action_head, "std", None)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and module is not std_layer:
                module.reset_parameters()

    def update_normalizer(self, observations: torch.Tensor) -> None:
        """Merge a batch ``[N, *obs_shape]`` into the observation statistics (no-op without a normalizer)."""
        if self.normalizer is not None:
            self.normalizer.update(observations)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(policy_parameters, value_parameters)``; parameters of a shared trunk count as policy."""
        value_ids = {id(p) for p in self.value_parameters()}
        policy = [p for p in self.parameters() if id(p) not in value_ids]
        return policy, list(self.value_parameters())

    def value_parameters(self) -> list[nn.Parameter]:
        """Parameters used only by the value function."""
        return list(self.value_head.parameters())


def mlp(in_features: int, hidden_size: int, num_layers: int, activation: str) -> nn.Sequential:
    """``num_layers`` Linear+activation blocks of width ``hidden_size``, orthogonally initialised."""
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        layers += [layer_init(nn.Linear(in_features, hidden_size)), ACTIVATIONS[activation]()]
        in_features = hidden_size
    return nn.Sequential(*layers)


class MLPActorCritic(ActorCritic):
    """Separate actor and critic MLPs over flat vector observations (CleanRL ppo.py /
    ppo_continuous_action.py), with an optional :class:`RunningNormalizer` in front.

    Args:
        observation_shape: ``(obs_dim,)``.
        action_space: ``Discrete`` or 1-D ``Box``.
        hidden_size, num_hidden_layers, activation: the width, depth and nonlinearity of each MLP.
        normalize_observations, observation_clip: the normalizer and its clip range.
        state_dependent_std, init_log_std: Gaussian head options.
    """

    def __init__(self, observation_shape: tuple[int, ...], action_space: gym.Space, hidden_size: int = 64,
                 num_hidden_layers: int = 2, activation: str = "tanh", normalize_observations: bool = False,
                 observation_clip: float = 10.0, state_dependent_std: bool = False,
                 init_log_std: float = 0.0) -> None:
        super().__init__()
        in_features = int(np.prod(observation_shape))
        out_features = hidden_size if num_hidden_layers > 0 else in_features
        if normalize_observations:
            self.normalizer = RunningNormalizer(tuple(observation_shape), clip=observation_clip)
        self.actor = mlp(in_features, hidden_size, num_hidden_layers, activation)
        self.critic = mlp(in_features, hidden_size, num_hidden_layers, activation)
        self.activation = ACTIVATION_FUNCTIONS[activation]
        self.action_head = make_action_head(action_space, out_features, state_dependent_std, init_log_std)
        self.value_head = layer_init(nn.Linear(out_features, 1), gain=1.0)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self._run(self.actor, x), self._run(self.critic, x)

    def _run(self, layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        # What ``layers(x)`` computes, with the linear functions called directly: a rollout runs the two
        # MLPs once per env step, and module calls cost more than a small layer's arithmetic.
        for index in range(0, len(layers), 2):
            linear = layers[index]
            x = self.activation(F.linear(x, linear.weight, linear.bias))
        return x

    def value_parameters(self) -> list[nn.Parameter]:
        return [*self.critic.parameters(), *self.value_head.parameters()]

    def rollout_network(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`ActorCritic.rollout_network` with the actor and the critic fused into one MLP of twice
        the width (:meth:`fused_layers`): one matrix product per layer instead of two."""
        layers = self.fused_layers()
        activation = self.activation

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = x.flatten(1)
            for weight, bias in layers[:-1]:
                x = activation(F.linear(x, weight, bias))
            outputs = F.linear(x, *layers[-1])
            return outputs[:, :-1], outputs[:, -1]

        return run

    def fused_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(weight [out, in], bias [out])`` of the actor and the critic fused into one MLP of twice the
        width: the first layer stacks both weight matrices, the later ones (and the output layer, action head
        and value head together) are block-diagonal. The off-diagonal blocks are zero, so it computes the same
        function: the outputs of ``action_head.output_layers()`` in the first columns of the
        output, the value in the last. New tensors, made from the weights as they are now."""
        actor_layers, critic_layers = list(self.actor)[::2], list(self.critic)[::2]
        layers = []
        for index, (actor_layer, critic_layer) in enumerate(zip(actor_layers, critic_layers)):
            weights = (actor_layer.weight, critic_layer.weight)
            # both first layers read the same input: stacked; later ones read their own half: block-diagonal
            weight = torch.cat(weights) if index == 0 else torch.block_diag(*weights)
            layers.append((weight, torch.cat((actor_layer.bias, critic_layer.bias))))
        head_layers = self.action_head.output_layers()
        head_weight = torch.cat([layer.weight for layer in head_layers])
        output_weight = (torch.block_diag(head_weight, self.value_head.weight) if layers
                         else torch.cat((head_weight, self.value_head.weight)))  # no hidden layer: both read x
        output_bias = torch.cat([*(layer.bias for layer in head_layers), self.value_head.bias])
        return [*layers, (output_weight, output_bias)]


class RolloutPolicy:
    """An actor-critic's policy for one rollout of ``num_steps`` steps of ``num_envs`` envs.

    The sampling noise of the whole rollout is drawn up front (one RNG call instead of one per step) and
    the network runs through :meth:`ActorCritic.rollout_network` (for the MLP, actor and critic fused), so
    a step costs fewer tensor operations than :meth:`ActorCritic.get_action_and_value` while sampling from
    the same distribution: ``a = mean + std * z`` with ``z ~ N(0, I)`` (Gaussian), ``argmax(logits + g)``
    with ``g ~ Gumbel(0, 1)`` (Categorical). The weights must not change while it is used; create it and
    call it under ``torch.inference_mode()``.

    Args:
        agent: the :class:`ActorCritic`.
        num_steps, num_envs: the rollout's size; step ``t`` uses noise ``[num_envs, ...]`` of row ``t``.
        device: where the noise is drawn (the agent's device).
    """

    def __init__(self, agent: ActorCritic, num_steps: int, num_envs: int, device: torch.device) -> None:
        self.agent = agent
        self.network = agent.rollout_network()
        self.noise = agent.action_head.draw_noise((num_steps, num_envs), device)
        # A Gaussian with a state-independent std: the log-probabilities of the whole rollout's samples
        # depend on the noise only, so they are computed here at once and a step is one addcmul.
        fixed = (agent.action_head.fixed_std_log_probs(self.noise)
                 if isinstance(agent.action_head, GaussianHead) else None)
        self.std, self.log_probs = fixed if fixed is not None else (None, None)

    def __call__(self, observations: torch.Tensor, step: int) -> ActionAndValue:
        """Sample actions for observations ``[num_envs, *obs_shape]`` at rollout step ``step``; entropy
        is None."""
        outputs, values = self.network(self.agent.preprocess(observations))
        if self.std is not None:
            return ActionAndValue(torch.addcmul(outputs, self.std, self.noise[step]), self.log_probs[step], None,
                                  values)
        action, log_prob, _ = self.agent.action_head.sample(outputs, self.noise[step])
        return ActionAndValue(action, log_prob, None, values)

    def value(self, observations: torch.Tensor) -> torch.Tensor:
        """``V(s)`` of ``[N, *obs_shape]`` -> ``[N]`` (any ``N``)."""
        return self.network(self.agent.preprocess(observations))[1]
