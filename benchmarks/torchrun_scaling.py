"""Does torchrun pay on this machine? The same run (same global batch, same number of gradient
steps) as one process and as `torchrun --standalone --nproc_per_node K`, side by side, alternating
which goes first; then the latency of the collectives the scripts use, with gloo.

    pip install "gymnasium[mujoco]"
    python benchmarks/torchrun_scaling.py [--nproc 2] [--repeats 2]
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
CASES = [  # (script, arguments): the defaults, then CleanRL's MuJoCo settings with 2 envs
    ("ppo_discrete.py", ["--env-id", "CartPole-v1", "--total-timesteps", "30000"]),
    ("ppo_continuous.py", ["--env-id", "Pendulum-v1", "--total-timesteps", "20480"]),
    (
        "ppo_continuous.py",
        ["--env-id", "HalfCheetah-v5", "--num-envs", "2", *MUJOCO] + ["--total-timesteps", "40960"],
    ),
]
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


def run(command: list[str], workdir: Path) -> tuple[float, float]:
    """Runs a training command; returns its wall time in seconds and its final evaluation."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    return wall, float(re.search(r"eval: mean return (\S+)", done.stdout)[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    options = parser.parse_args()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node", str(options.nproc)]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "torchrun_scaling"
    workdir.mkdir(exist_ok=True)

    print(f"| run | python: wall s (eval) | torchrun x{options.nproc}: wall s (eval) | speed-up |")
    print("|---|---|---|---|")
    for script, args in CASES:
        commands = {
            "python": [sys.executable, str(ROOT / script), *args],
            "torchrun": [*torchrun, str(ROOT / script), *args],
        }
        results = {name: [] for name in commands}
        for repeat in range(options.repeats):
            for name in sorted(commands, reverse=repeat % 2 == 1):
                results[name].append(run(commands[name], workdir))
        walls = {name: np.median([wall for wall, _ in runs]) for name, runs in results.items()}
        evals = {name: ", ".join(f"{e:.0f}" for _, e in runs) for name, runs in results.items()}
        print(
            f"| {script} {' '.join(args)} | {walls['python']:.1f} ({evals['python']}) "
            f"| {walls['torchrun']:.1f} ({evals['torchrun']}) "
            f"| {walls['python'] / walls['torchrun']:.2f}x |",
            flush=True,
        )

    print(f"\ngloo collectives between {options.nproc} processes, mean of 1,000:")
    collectives = workdir / "collectives.py"
    collectives.write_text(COLLECTIVES)
    subprocess.run([*torchrun, str(collectives)], check=True, stderr=subprocess.DEVNULL)
