"""Under `torchrun --nproc_per_node K`: each rank takes its 1/K of one minibatch, computes the loss
of ppo_continuous.py's update on it (advantages normalized by the statistics of gather_ranks) and
averages the gradients with mean_over_ranks; rank 0 saves the result to gradient.pt in the working
directory. tests/test_torchrun.py compares it with one process's gradient of the whole minibatch."""

import sys
from pathlib import Path

import gymnasium as gym
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # to import the scripts
from ppo_continuous import (
    EPSILON,
    Agent,
    clipped_surrogate_loss,
    gather_ranks,
    mean_over_ranks,
    value_loss,
)

MINIBATCH_SIZE, OBS_DIM, ACTION_DIM = 64, 3, 1  # Pendulum-v1's spaces


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
    return Agent(gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")]))


def loss_gradient(agent: Agent, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    """The flattened gradient of the update's loss (default coefficients) on minibatch part mb."""
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb["obs"], mb["actions"])
    ratio = (newlogprob - mb["logprobs"]).exp()
    all_advantages = gather_ranks(mb["advantages"])
    advantages = (mb["advantages"] - all_advantages.mean()) / (all_advantages.std() + EPSILON)
    pg_loss = clipped_surrogate_loss(ratio, advantages, 0.2)
    v_loss = value_loss(newvalue.flatten(), mb["values"], mb["returns"], None)
    loss = pg_loss + 0.5 * v_loss - 0.01 * entropy.mean()
    loss.backward()
    return torch.cat([param.grad.flatten() for param in agent.parameters()])


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    part = {key: tensor.chunk(world_size)[rank] for key, tensor in minibatch().items()}
    gradient = mean_over_ranks(loss_gradient(agent(), part))
    if rank == 0:
        torch.save(gradient, "gradient.pt")
    dist.barrier()  # as in the scripts: no rank leaves before the others are done
    dist.destroy_process_group()
