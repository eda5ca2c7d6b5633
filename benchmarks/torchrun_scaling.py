"""Does torchrun pay on this machine? Two ways of scaling, each side by side with one process,
alternating which goes first (whole processes, wall time and the last progress line's SPS):
- the same run: the same --num-envs (the global batch and the gradient steps are those of one
  process) as `python` and as `torchrun --standalone --nproc_per_node K`: does it finish sooner?
- the same envs per process: `python` with --num-envs N and torchrun with K * N (the same
  total_timesteps, in fewer, K-times larger batches): do K processes collect K times the steps?
Then the latency of the collectives the scripts use, with gloo.

    pip install "gymnasium[mujoco]"
    python benchmarks/torchrun_scaling.py [--nproc 2] [--repeats 2] [--cases cartpole pendulum]
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MUJOCO = ["--num-steps", "2048", "--num-minibatches", "32", "--update-epochs", "10", "--norm-obs"]
CHEETAH_SHORT = [
    "--num-steps",
    "64",
    "--num-minibatches",
    "8",
    "--update-epochs",
    "4",
    "--norm-obs",
]
CASES = {  # name: (script, --num-envs, the other arguments)
    "cartpole": ("ppo_discrete.py", 8, ["--env-id", "CartPole-v1", "--total-timesteps", "30000"]),
    "pendulum": ("ppo_continuous.py", 4, ["--env-id", "Pendulum-v1", "--total-timesteps", "20480"]),
    # CleanRL's MuJoCo settings with 2 envs
    "halfcheetah": (
        "ppo_continuous.py",
        2,
        ["--env-id", "HalfCheetah-v5", *MUJOCO, "--total-timesteps", "40960"],
    ),
    # short rollouts and updates: the 16-core measurement of the README (--nproc 8)
    "halfcheetah-short": (
        "ppo_continuous.py",
        8,
        ["--env-id", "HalfCheetah-v5", *CHEETAH_SHORT, "--total-timesteps", "131072"],
    ),
}
# Times the collectives of a torchrun run: per env step (with --norm-obs / --norm-reward) an
# all_gather of a few floats; per minibatch an all_gather of its advantages and one all_reduce of
# every gradient (about 9,000 floats for Pendulum's networks).
COLLECTIVES = """
import time, torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo")
k = dist.get_world_size()
grads, advantages = torch.zeros(9000), torch.zeros(32)
parts = [torch.empty(32) for _ in range(k)]
for name, op in [("all_gather of 32 floats", lambda: dist.all_gather(parts, advantages)),
                 ("all_reduce of 9,000 floats", lambda: dist.all_reduce(grads)),
                 ("all_reduce of 1 int (the stop flag)", lambda: dist.all_reduce(torch.tensor(0)))]:
    for _ in range(100):
        op()
    start = time.perf_counter()
    for _ in range(1000):
        op()
    if dist.get_rank() == 0:
        print(f"{name}: {(time.perf_counter() - start) * 1e3:.0f} us")
dist.destroy_process_group()
"""


def run(command: list[str], workdir: Path) -> tuple[float, int, float]:
    """Runs a training command; returns its wall time in seconds, its last SPS and its final
    evaluation."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    sps = int(re.findall(r"SPS (\d+)", done.stdout)[-1])
    return wall, sps, float(re.search(r"eval: mean return (\S+)", done.stdout)[1])


def side_by_side(commands: dict[str, list[str]], repeats: int, workdir: Path) -> dict:
    """Each command `repeats` times, alternating which goes first: name -> medians and evals."""
    results = {name: [] for name in commands}
    for repeat in range(repeats):
        for name in sorted(commands, reverse=repeat % 2 == 1):
            results[name].append(run(commands[name], workdir))
    return {
        name: {
            "wall": np.median([wall for wall, _, _ in runs]),
            "sps": np.median([sps for _, sps, _ in runs]),
            "evals": ", ".join(f"{e:.0f}" for _, _, e in runs),
        }
        for name, runs in results.items()
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=["cartpole", "pendulum"])
    options = parser.parse_args()
    k = options.nproc
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node", str(k)]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "torchrun_scaling"
    workdir.mkdir(exist_ok=True)

    print(f"| run | scaling | python: wall s, SPS (evals) | torchrun x{k}: wall s, SPS (evals) |")
    print("|---|---|---|---|")
    for name in options.cases:
        script, num_envs, args = CASES[name]
        python = [sys.executable, str(ROOT / script), *args, "--num-envs", str(num_envs)]
        for scaling, torchrun_envs in (
            ("same run", num_envs),
            ("same envs per process", k * num_envs),
        ):
            commands = {
                "python": python,
                "torchrun": [
                    *torchrun,
                    str(ROOT / script),
                    *args,
                    "--num-envs",
                    str(torchrun_envs),
                ],
            }
            r = side_by_side(commands, options.repeats, workdir)
            one, many = r["python"], r["torchrun"]
            print(
                f"| {script} {' '.join(args)} | {scaling}: --num-envs {num_envs} vs "
                f"{torchrun_envs} | {one['wall']:.1f}, {one['sps']:.0f} ({one['evals']}) "
                f"| {many['wall']:.1f}, {many['sps']:.0f} ({many['evals']}): "
                f"{one['wall'] / many['wall']:.2f}x faster, {many['sps'] / one['sps']:.2f}x the SPS |",
                flush=True,
            )

    print(f"\ngloo collectives between {k} processes, mean of 1,000:")
    collectives = workdir / "collectives.py"
    collectives.write_text(COLLECTIVES)
    subprocess.run([*torchrun, str(collectives)], check=True, stderr=subprocess.DEVNULL)
