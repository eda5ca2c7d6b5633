"""The math of ppo_continuous.py's torchrun helpers, run under `torchrun --nproc_per_node K`; rank 0
saves the results in the working directory, and tests/test_torchrun.py compares them with one
process's brute-force figures:
- gradient.pt: each rank takes its 1/K of one minibatch and computes the update's loss on it (its
  advantages normalized by its part's statistics); the hooks the scripts register
  (average_gradients_over_ranks) average the gradients over the ranks in backward(): the mean of
  the K parts' gradients;
- statistics.pt: each rank updates a RunningMeanStd with its own data (rank_data) and the ranks
  call sync_statistics_over_ranks after each round: the mean and variance of all ranks' data;
- unused_parameter.txt: the error of an optimizer step after a backward() that left a parameter
  without a gradient (the hooks never averaged the others)."""

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
from gymnasium.wrappers.utils import RunningMeanStd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # to import the scripts
from ppo_continuous import (
    EPSILON,
    Agent,
    Args,
    average_gradients_over_ranks,
    clipped_surrogate_loss,
    statistics_state,
    sync_statistics_over_ranks,
    value_loss,
)

MINIBATCH_SIZE, OBS_DIM, ACTION_DIM = 64, 3, 1  # Pendulum-v1's spaces
ROUNDS, BATCHES_PER_ROUND = 3, 2  # of the statistics


def minibatch() -> dict[str, torch.Tensor]:
    """One fixed minibatch of (MINIBATCH_SIZE, ...) tensors, the same in every process."""
    generator = torch.Generator().manual_seed(0)
    return {
        "obs": torch.randn(MINIBATCH_SIZE, OBS_DIM, generator=generator),
        "actions": torch.randn(MINIBATCH_SIZE, ACTION_DIM, generator=generator),
        "logprobs": torch.randn(MINIBATCH_SIZE, generator=generator) - 2.0,
        "advantages": 3.0 * torch.randn(MINIBATCH_SIZE, generator=generator) + 1.0,
        "returns": torch.randn(MINIBATCH_SIZE, generator=generator),
        "values": torch.randn(MINIBATCH_SIZE, generator=generator),
    }


def agent() -> Agent:
    """An Agent for Pendulum-v1, initialized the same in every process."""
    torch.manual_seed(0)
    return Agent(gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")]), Args())


def loss_gradient(agent: Agent, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    """The update's loss (default coefficients) on minibatch part mb, as the training loop computes
    it (§8.6: the advantages normalized by mb's statistics); returns its gradient after backward()
    (and the hooks registered on the agent), flattened: (num_params,)."""
    args = Args()
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb["obs"], mb["actions"])
    ratio = (newlogprob - mb["logprobs"]).exp()
    advantages = (mb["advantages"] - mb["advantages"].mean()) / (mb["advantages"].std() + EPSILON)
    pg_loss = clipped_surrogate_loss(ratio, advantages, args.clip_coef)
    v_loss = value_loss(newvalue, mb["values"], mb["returns"], None)
    loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * entropy.mean()
    loss.backward()
    return torch.cat(
        [param.grad.flatten() for param in agent.parameters() if param.grad is not None]
    )


def rank_data(rank: int, round_: int) -> list[np.ndarray]:
    """The batches rank adds to the statistics in a round, (7, OBS_DIM) each; each rank's are
    centered elsewhere, so statistics of one rank's data alone would be far off."""
    rng = np.random.default_rng([rank, round_])
    return [rng.normal(10.0 * rank, 1.0 + rank, (7, OBS_DIM)) for _ in range(BATCHES_PER_ROUND)]


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    part = {key: tensor.chunk(world_size)[rank] for key, tensor in minibatch().items()}
    ranks_agent = agent()
    average_gradients_over_ranks(ranks_agent, torch.optim.Adam(ranks_agent.parameters()))
    gradient = loss_gradient(ranks_agent, part)
    unused = agent()
    unused.extra = torch.nn.Parameter(torch.zeros(3))  # (in no loss)
    optimizer = torch.optim.Adam(unused.parameters())
    average_gradients_over_ranks(unused, optimizer)
    loss_gradient(unused, part)
    try:
        optimizer.step()
        error = "none"
    except RuntimeError as e:
        error = str(e)
    statistics = RunningMeanStd(shape=(OBS_DIM,))
    for round_ in range(ROUNDS):
        boundary = {"obs_rms": statistics_state(statistics), "return_rms": None}  # agreed on
        for batch in rank_data(rank, round_):
            statistics.update(batch)
        sync_statistics_over_ranks(boundary, {"obs_rms": statistics, "return_rms": None})
    if rank == 0:
        torch.save(gradient, "gradient.pt")
        torch.save(statistics_state(statistics), "statistics.pt")
        Path("unused_parameter.txt").write_text(error)
    dist.barrier()  # as in the scripts: no rank leaves before the others are done
    dist.destroy_process_group()
