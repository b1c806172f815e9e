"""Time ``Trainer.update`` with the numpy Adam step (``ppo.flat_parameters.NumpyAdam``, the default on the
CPU for small networks) against torch's fused ``optimizer.step()``, alternating, on one rollout of each case.

    python benchmarks/adam_step.py                     # hopper cartpole humanoid
    python benchmarks/adam_step.py hopper --repeats 10

Prints the median and the fastest time per minibatch step of each variant. One torch and one BLAS thread,
as the trainer uses for these networks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import threadpoolctl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ppo.trainer as trainer_module  # noqa: E402
from networks import MLPActorCritic  # noqa: E402
from ppo.config import PPOConfig  # noqa: E402
from ppo.flat_parameters import NumpyAdam  # noqa: E402
from wrappers import describe_environment, make_vector_env  # noqa: E402

# name -> (environment id, rollout and update shape): the cases of compare.py speed
CASES = {"hopper": ("Hopper-v4", dict(num_envs=1, num_steps_collected=2048, num_epochs=10, num_mini_batches=32)),
         "cartpole": ("CartPole-v1", dict(num_envs=4, num_steps_collected=128, num_epochs=4, num_mini_batches=4)),
         "humanoid": ("Humanoid-v4", dict(num_envs=16, num_steps_collected=512, num_epochs=10,
                                          num_mini_batches=32))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(CASES), help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=6, help="updates timed per variant")
    args = parser.parse_args()
    unknown = [name for name in args.cases if name not in CASES]
    if unknown or args.repeats < 1:
        parser.error(f"unknown case {unknown[0]!r}" if unknown else "--repeats must be at least 1")
    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1, user_api="blas")
    for name in args.cases:
        environment_id, shape = CASES[name]
        config = PPOConfig(environment_id=environment_id, total_timesteps=10**6, learning_rate=3e-4, **shape)
        info = describe_environment(environment_id)
        envs = make_vector_env(environment_id, config.num_envs)
        torch.manual_seed(0)
        agent = MLPActorCritic(info.observation_space.shape, info.action_space, normalize_observations=True)
        trainer = trainer_module.Trainer(config, envs, agent, torch.device("cpu"))
        trainer.reset_envs(1)
        trainer.collect_rollout()
        times: dict[str, list[float]] = {"numpy Adam": [], "optimizer.step()": []}
        for _ in range(args.repeats):
            for variant in times:
                trainer_module.NumpyAdam = NumpyAdam if variant == "numpy Adam" else (lambda optimizer: None)
                start = time.perf_counter()
                trainer.update()
                times[variant].append(time.perf_counter() - start)
        trainer_module.NumpyAdam = NumpyAdam
        steps = config.num_epochs * config.num_mini_batches
        weights = sum(flat.numel() for flat in trainer.parameters)
        print(f"{environment_id} ({weights:,} weights, {config.minibatch_size} samples per "
              f"minibatch): " + ", ".join(f"{variant} {statistics.median(t) / steps * 1e6:,.0f} us per minibatch "
                                          f"step (fastest {min(t) / steps * 1e6:,.0f})"
                                          for variant, t in times.items()))
        envs.close()


if __name__ == "__main__":
    main()
