"""Issue 31's two speed ratios that are not seconds to a solved agent (time_to_solve.py's):

1. the same work: each script at its defaults and SB3 with the very same hyperparameters
   (benchmarks/sb3_ppo.py), --total-timesteps 32768 and no evaluation, whole processes,
   alternated, each seed once each way round;
2. the launch: from the command to the first iteration (the moment the run prints its budget,
   `run runs/...: N iterations x ...`, just before the loop) against the floor, the wall of
   `python -c "import torch, gymnasium"`, alternated.

    pip install -r benchmarks/requirements.txt
    python benchmarks/speed.py --seeds 301 302 303
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import table

BENCHMARKS = Path(__file__).resolve().parent
ENVS = {"Pendulum-v1": "ppo_continuous.py", "CartPole-v1": "ppo_discrete.py"}


def launch(command: list[str]) -> float:
    """Seconds from the start of `command` to its first line that begins with "run " (the
    script's budget line) or to its end; the process is then killed."""
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        with subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, text=True) as process:
            for line in process.stdout:
                if line.startswith("run "):
                    break
            seconds = time.perf_counter() - start
            process.kill()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[301, 302, 303])
    parser.add_argument("--launches", type=int, default=6, help="of each, for the launch ratio")
    cli = parser.parse_args()
    for env_id, script in ENVS.items():
        for seed in cli.seeds:
            same = ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", "32768"]
            same += ["--eval-episodes", "0"]
            ours = [sys.executable, str(BENCHMARKS.parent / script), *same]
            sb3 = [sys.executable, str(BENCHMARKS / "sb3_ppo.py"), "--script", script, *same]
            print(f"{env_id}, seed {seed}, the same hyperparameters:")
            table.compare_walls({"ours": ours, "SB3": sb3}, repeats=2)
    floor_command = [sys.executable, "-c", "import torch, gymnasium"]
    for script in ENVS.values():
        walls = {"floor": [], script: []}
        for repeat in range(cli.launches):
            order = [floor_command, [sys.executable, str(BENCHMARKS.parent / script)]]
            for command in order if repeat % 2 == 0 else order[::-1]:
                walls["floor" if command is floor_command else script].append(launch(command))
        floor, ours = statistics.median(walls["floor"]), statistics.median(walls[script])
        print(f"launch of {script}: {', '.join(f'{wall:.2f} s' for wall in walls[script])}")
        print(f"  import torch, gymnasium: {', '.join(f'{wall:.2f} s' for wall in walls['floor'])}")
        print(f"  launch / floor (medians): {ours / floor:.2f}x ({ours:.2f} s / {floor:.2f} s)")


if __name__ == "__main__":
    main()
