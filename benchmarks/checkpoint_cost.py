"""What a checkpoint costs: the time to write checkpoint.pt (torch.save to a temp file, fsync,
rename: Part 2's write_atomically) for HalfCheetah-v5's networks with --norm-obs, and what the
writes of a 1M-step run cost at the default of one a minute, and at one every iteration.

    pip install "gymnasium[mujoco]"
    python benchmarks/checkpoint_cost.py [--run-seconds 306] [--iterations 488]
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from gymnasium.wrappers.utils import RunningMeanStd

# the scripts' directory instead of this one, whose mujoco.py would shadow the mujoco package
sys.path[0] = str(Path(__file__).resolve().parent.parent)
from ppo_continuous import (
    CHECKPOINT_SECONDS,
    Agent,
    RunArgs,
    make_envs,
    statistics_state,
    write_atomically,
)

WRITES = 200

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-seconds", type=float, default=306.0, help="a 1M-step run's wall")
    parser.add_argument("--iterations", type=int, default=488, help="1M steps / 2048 a batch")
    run_seconds, iterations = parser.parse_args().run_seconds, parser.parse_args().iterations
    args = RunArgs(env_id="HalfCheetah-v5", norm_obs=True)
    envs = make_envs(args.env_id, 1)
    agent = Agent(envs, args)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5, fused=True)
    agent.get_value(torch.zeros(1, *envs.single_observation_space.shape)).sum().backward()
    optimizer.step()  # (Adam's moments exist from the first step on)
    obs_rms = RunningMeanStd(shape=envs.single_observation_space.shape)
    state = {
        "args": asdict(args),
        "model": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "obs_rms": statistics_state(obs_rms),
        "return_rms": statistics_state(RunningMeanStd()),
        "rng": torch.get_rng_state(),
    }
    with tempfile.TemporaryDirectory(dir=".") as directory:
        seconds = []
        for _ in range(WRITES):
            start = time.perf_counter()
            write_atomically(f"{directory}/checkpoint.pt", lambda f: torch.save(state, f))
            seconds.append(time.perf_counter() - start)
        size = Path(f"{directory}/checkpoint.pt").stat().st_size
    writes = int(run_seconds // CHECKPOINT_SECONDS) + 1  # (one a minute, and the last)
    median = statistics.median(seconds)
    print(f"checkpoint.pt of {args.env_id}: {size / 1024:.0f} KiB")
    print(f"write: median {median * 1e3:.1f} ms, max {max(seconds) * 1e3:.1f} ms of {WRITES}")
    print(f"a {run_seconds:.0f} s run: {writes} writes a minute apart, {writes * median:.3f} s")
    print(f"one every iteration: {iterations} writes, {iterations * median:.2f} s")
