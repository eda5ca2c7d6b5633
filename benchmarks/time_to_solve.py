"""Seconds to a solved agent: each script with every default against Stable-Baselines3 with
rl-baselines3-zoo's tuned settings and budget (benchmarks/sb3_zoo.py), the way a user runs them.

    pip install -r benchmarks/requirements.txt
    python benchmarks/time_to_solve.py --seeds 101 102 103 104 105

For each env and seed, `python ppo_continuous.py --seed S` (or ppo_discrete.py) and
`python benchmarks/sb3_zoo.py --env-id ENV --seed S` run one after the other, alternating which
goes first, as whole processes in a fresh directory (interpreter start, imports, training and the
final evaluation of 10 deterministic episodes: the wall time a user waits). A seed is solved if
that evaluation reaches the env's threshold. Printed per tool: seeds solved, median wall time over
all seeds, every seed's evaluation and wall time, and the ratio of the median walls.
--flags adds flags to our scripts' command (the tuning sweeps); --tools ours skips SB3.
"""

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
# env -> (our script, the return that counts as solved)
ENVS = {"Pendulum-v1": ("ppo_continuous.py", -200.0), "CartPole-v1": ("ppo_discrete.py", 475.0)}


def run(command: list[str]) -> tuple[float, float]:
    """Runs a whole process in a fresh directory; returns its wall time and final evaluation."""
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
    return wall, float(re.findall(r"eval: mean return (\S+)", done.stdout)[-1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    parser.add_argument("--envs", nargs="+", choices=ENVS, default=list(ENVS))
    parser.add_argument("--tools", nargs="+", choices=["ours", "sb3"], default=["ours", "sb3"])
    parser.add_argument("--flags", default="", help="one string (or --flags=--norm-obs)")
    options = parser.parse_args()

    print("| env | tool | solved | median wall s | evals | walls s |")
    print("|---|---|---|---|---|---|")
    for env_id in options.envs:
        script, threshold = ENVS[env_id]
        commands = {
            "ours": [sys.executable, str(ROOT / script), *shlex.split(options.flags)],
            "sb3": [sys.executable, str(BENCHMARKS / "sb3_zoo.py"), "--env-id", env_id],
        }
        results = {tool: [] for tool in options.tools}
        for index, seed in enumerate(options.seeds):
            for tool in sorted(options.tools, reverse=index % 2 == 1):
                results[tool].append(run([*commands[tool], "--seed", str(seed)]))
        medians = {}
        for tool, runs in results.items():
            walls, evals = [wall for wall, _ in runs], [e for _, e in runs]
            medians[tool] = np.median(walls)
            solved = sum(e >= threshold for e in evals)
            name = f"ours ({script}{' ' + options.flags if options.flags else ''})"
            print(
                f"| {env_id} | {name if tool == 'ours' else 'SB3 + rl-zoo'} "
                f"| {solved} of {len(runs)} | {medians[tool]:.1f} "
                f"| {', '.join(f'{e:.0f}' for e in evals)} "
                f"| {', '.join(f'{w:.1f}' for w in walls)} |",
                flush=True,
            )
        if len(medians) == 2:
            print(
                f"| {env_id} | ratio | | SB3 / ours = {medians['sb3'] / medians['ours']:.2f}x | | |"
            )
