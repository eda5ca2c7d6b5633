"""What mujoco.py and pixels.py share: the runs of a setting on envs and seeds, each a whole
process in a directory of its own (`--jobs` at a time, each pinned to a core of its own where the
system allows, so torch's default threads do not fight), and the table of their results:
- eval: the final deterministic evaluation (its episodes, the run's statistics frozen);
- train: the mean return of the training episodes that ended in the last 10% of the run's steps
  (CleanRL's metric, of stochastic actions);
- the wall time of each run.
"""

import argparse
import os
import queue
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# A run's command: (env_id, seed, total_timesteps or None for the setting's, extra flags).
Command = Callable[[str, int, int | None, str], list[str]]


def add_arguments(parser: argparse.ArgumentParser, envs: list[str], seeds: list[int]) -> None:
    parser.add_argument("--envs", nargs="+", default=envs)
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--workdir", default="benchmark_runs", help="where each run writes")
    parser.add_argument("--print-command", action="store_true", help="print one run's command")
    parser.add_argument("--total-timesteps", type=int, help="instead of the setting's")
    parser.add_argument("--flags", default="", help="e.g. '--gamma 0.98' (or --flags=--norm-obs)")


def run(one_command: list[str], workdir: Path, cores: queue.Queue | None = None) -> dict:
    """One run, in workdir (made here): its final evaluation, last-10% training return, wall, and
    its training returns (step, return) for curves. On a core of its own if `cores` has one."""
    workdir.mkdir(parents=True)
    core = cores.get() if cores else None
    pin = [] if core is None else ["taskset", "-c", str(core)]  # (Linux's util-linux)
    script = os.path.abspath(one_command[1])  # (the command is relative to where this runs)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [*pin, sys.executable, script, *one_command[2:]],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if cores:
            cores.put(core)
    wall = time.perf_counter() - start
    (workdir / "stdout.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(one_command)} failed: {done.stderr.strip()[-500:]}")
    evaluation = float(re.search(r"eval: mean return (\S+) ±", done.stdout)[1])
    (run_dir,) = (workdir / "runs").iterdir()
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    episodes = [(e.step, e.value) for e in events.Scalars("charts/episodic_return")]
    last_tenth = [value for step, value in episodes if step > 0.9 * episodes[-1][0]]
    train = statistics.mean(last_tenth)
    return {"eval": evaluation, "train": train, "wall": wall, "curve": episodes}


def run_all(commands: list[list[str]], workdirs: list[Path], jobs: int) -> list[dict]:
    """Each command's run (see run), `jobs` at a time, each job on a core of its own if the
    system has enough (for the jobs to take turns on)."""
    cores = None
    if shutil.which("taskset") and 1 < jobs <= len(os.sched_getaffinity(0)):
        cores = queue.Queue()
        for core in sorted(os.sched_getaffinity(0))[:jobs]:
            cores.put(core)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run, commands, workdirs, [cores] * len(commands)))


def mean_std(values: list[float], digits: int = 0) -> str:
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def main(cli: argparse.Namespace, command: Command, digits: int = 0) -> tuple[list, list]:
    """--print-command: prints the one run's command and nothing else. Otherwise runs every env
    and seed, prints the table, and returns the (env, seed) cases and their results."""
    if cli.print_command:
        if len(cli.envs) != 1 or len(cli.seeds) != 1:
            sys.exit("error: --print-command takes one env and one seed")
        print(shlex.join(command(cli.envs[0], cli.seeds[0], cli.total_timesteps, cli.flags)))
        sys.exit(0)
    workdir = Path(cli.workdir) / time.strftime("%Y%m%d-%H%M%S")
    cases = [(env_id, seed) for env_id in cli.envs for seed in cli.seeds]
    commands = [command(*case, cli.total_timesteps, cli.flags) for case in cases]
    workdirs = [workdir / f"{env_id.replace('/', '_')}__{seed}" for env_id, seed in cases]
    results = run_all(commands, workdirs, cli.jobs)
    print(f"runs in {workdir}; one: {shlex.join(commands[0])}")
    print("| env | seeds | eval (mean ± std over seeds) | train, last 10% | wall per run |")
    print("|---|---|---|---|---|")
    for env_id in cli.envs:
        rows = [result for (env, _), result in zip(cases, results) if env == env_id]
        walls = ", ".join(f"{row['wall']:.0f} s" for row in rows)
        evals = ", ".join(f"{row['eval']:.{digits}f}" for row in rows)
        trains = mean_std([row["train"] for row in rows], digits)
        print(
            f"| {env_id} | {' '.join(map(str, cli.seeds))} "
            f"| {mean_std([row['eval'] for row in rows], digits)} ({evals}) | {trains} | {walls} |"
        )
    return cases, results


def compare_walls(commands: dict[str, list[str]], repeats: int) -> None:
    """Runs each command `repeats` times as a whole process in a fresh directory, alternating the
    order (a machine's drift favours neither), and prints each wall time and each command's median
    against the first's."""
    walls = {name: [] for name in commands}
    for repeat in range(repeats):
        for name in list(commands) if repeat % 2 == 0 else list(commands)[::-1]:
            with tempfile.TemporaryDirectory() as workdir:
                start = time.perf_counter()
                subprocess.run(commands[name], cwd=workdir, check=True, capture_output=True)
                walls[name].append(time.perf_counter() - start)
    first, *others = commands
    for name, command_line in commands.items():
        print(f"{name}: {shlex.join(command_line[1:])}")
        print(f"  wall: {', '.join(f'{wall:.1f} s' for wall in walls[name])}")
    for name in others:
        ratio = statistics.median(walls[name]) / statistics.median(walls[first])
        print(f"{name} / {first} (medians): {ratio:.2f}x")
