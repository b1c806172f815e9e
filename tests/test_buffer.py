"""Minibatches cover every transition exactly once per epoch."""

import numpy as np
import torch

from ppo.buffer import RolloutBuffer


def test_minibatches_cover_every_transition_once():
    buffer = RolloutBuffer(num_steps=6, num_envs=4, observation_shape=(3,), observation_dtype=torch.float32,
                           action_shape=(), action_dtype=torch.int64, device=torch.device("cpu"))
    # tag each transition with its index so we can see where it went
    buffer.values.copy_(torch.arange(24, dtype=torch.float32).reshape(6, 4))
    buffer.observations.copy_(buffer.values.unsqueeze(-1).expand(6, 4, 3))
    buffer.actions.copy_(torch.arange(24).reshape(6, 4))
    generator = torch.Generator().manual_seed(0)
    batches = list(buffer.minibatches(3, generator))
    assert [len(batch.values) for batch in batches] == [8, 8, 8]
    seen = torch.cat([batch.values for batch in batches])
    assert sorted(seen.tolist()) == list(range(24))
    for batch in batches:  # fields stay aligned within a transition
        assert torch.equal(batch.observations[:, 0], batch.values)
        assert torch.equal(batch.actions.float(), batch.values)
    # a second epoch uses a different order
    again = torch.cat([batch.values for batch in buffer.minibatches(3, generator)])
    assert not torch.equal(seen, again)
    # numpy minibatches (the numpy gradient's) hold what the tensors of the same permutation hold
    generator.manual_seed(1)
    tensors = list(buffer.minibatches(3, generator))
    generator.manual_seed(1)
    arrays = list(buffer.minibatches(3, generator, as_numpy=True))
    for tensor_batch, array_batch in zip(tensors, arrays):
        for tensor, array in zip(tensor_batch, array_batch):
            assert isinstance(array, np.ndarray) and torch.equal(torch.from_numpy(array), tensor)


def test_dones_combine_terminations_and_truncations():
    buffer = RolloutBuffer(2, 2, (1,), torch.float32, (), torch.int64, torch.device("cpu"))
    buffer.terminations[0, 0] = 1
    buffer.truncations[1, 1] = 1
    assert buffer.dones.tolist() == [[1.0, 0.0], [0.0, 1.0]]
