"""The wall of an image run with torch at 1 thread against all cores (torch's default, which
train() keeps for images), alternating the order, each run a whole process. train() gives vectors
1 thread (README: Results); this measures what the CNN's convolutions gain from the rest.

    pip install minatar ale-py opencv-python-headless
    python benchmarks/cnn_threads.py --env-id MinAtar/Breakout-v1 --total-timesteps 20480
    python benchmarks/cnn_threads.py --env-id ALE/Breakout-v5 --total-timesteps 4096
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "ppo_discrete.py"
# One run: torch at a fixed thread count (argv[1]), then the script with its flags.
RUN = """import runpy, sys, torch
torch.set_num_threads(int(sys.argv.pop(1)))
runpy.run_path({script!r}, run_name="__main__")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="MinAtar/Breakout-v1")
    parser.add_argument("--total-timesteps", type=int, default=20480)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each thread count")
    cli = parser.parse_args()
    # The PPO paper's Atari sizes: 8 envs x 128 steps, 4 epochs of 4 minibatches, linear heads on
    # the CNN; no evaluation.
    flags = ["--env-id", cli.env_id, "--total-timesteps", str(cli.total_timesteps)]
    flags += ["--num-envs", "8", "--num-steps", "128", "--num-minibatches", "4"]
    flags += ["--update-epochs", "4", "--hidden-sizes", "--eval-episodes", "0"]
    counts = [1, len(os.sched_getaffinity(0))]  # (torch's default: the cores it may use)
    walls = {count: [] for count in counts}
    for repeat in range(cli.repeats):
        for count in counts if repeat % 2 == 0 else counts[::-1]:
            command = [sys.executable, "-c", RUN.format(script=str(SCRIPT)), str(count)]
            with tempfile.TemporaryDirectory() as workdir:
                start = time.perf_counter()
                subprocess.run([*command, *flags], cwd=workdir, check=True, capture_output=True)
                walls[count].append(time.perf_counter() - start)
    print(f"{SCRIPT.name} {' '.join(flags)}")
    for count, times in walls.items():
        print(f"  {count} thread(s): {', '.join(f'{wall:.1f} s' for wall in times)}")
    ratio = statistics.median(walls[1]) / statistics.median(walls[counts[1]])
    print(f"1 thread / {counts[1]} threads (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
