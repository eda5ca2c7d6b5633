"""The benchmark behind the README's Results: our scripts against Stable-Baselines3 PPO.

    pip install -r benchmarks/requirements.txt
    python benchmarks/run.py --seeds 5

For Pendulum-v1 (ppo_continuous.py) and CartPole-v1 (ppo_discrete.py), each with the script's
default hyperparameters, which benchmarks/sb3_ppo.py gives SB3 as well:
1. learning curves: every seed trains both, evaluating the deterministic policy every few
   iterations (the same episodes and seeds for both);
2. speed: every seed trains both again without evaluation, one after the other, alternating which
   goes first, as whole processes (interpreter start and imports included);
3. the raw stepping rate of the same vector env with random actions, against which our rollout
   (env plus policy) rate is compared.
It writes benchmarks/results.md, benchmarks/learning_curves.png and benchmarks/curves.json.
Everything runs one process at a time, with one torch thread each.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
sys.path[0] = str(ROOT)  # the scripts (this directory's mujoco.py would shadow the package)
import ppo_continuous
import ppo_discrete

# env -> (script module, env steps per run, return threshold, evaluate every N iterations)
ENVS = {
    "Pendulum-v1": (ppo_continuous, 50_000, -200.0, 2),
    "CartPole-v1": (ppo_discrete, 30_000, 475.0, 16),
}
# The targets, at the budgets above: eval >= -200 (Pendulum) and = 500 (CartPole).
TARGETS = {"Pendulum-v1": -200.0, "CartPole-v1": 500.0}


def run(command: list[str], cwd: str) -> float:
    """Runs a whole process; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def ours(script, env_id: str, seed: int, budget: int, eval_every: int) -> list[str]:
    flags = ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(budget)]
    if eval_every == 0:
        flags += ["--eval-episodes", "0"]
    else:
        flags += ["--eval-every", str(eval_every)]
    return [sys.executable, script.__file__, *flags]


def sb3(script, seed: int, budget: int, eval_every: int, curve: str) -> list[str]:
    flags = ["--script", Path(script.__file__).name, "--seed", str(seed)]
    flags += ["--total-timesteps", str(budget), "--curve", curve]
    if eval_every == 0:
        flags += ["--eval-episodes", "0"]
    else:
        flags += ["--eval-every", str(eval_every)]
    return [sys.executable, str(BENCHMARKS / "sb3_ppo.py"), *flags]


def tensorboard_scalars(workdir: str, tag: str) -> list[tuple[int, float]]:
    (run_dir,) = Path(workdir, "runs").iterdir()
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def raw_steps_per_second(env_id: str, num_envs: int, steps: int = 20_000) -> float:
    """Random actions through the scripts' vector env (SAME_STEP autoreset, episode stats)."""
    envs = ppo_continuous.make_envs(env_id, num_envs, "sync")
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(steps // num_envs)]
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    return len(actions) * num_envs / (time.perf_counter() - start)


def steps_to(curve: list[tuple[int, float]], threshold: float) -> float:
    """The first evaluated step from which every evaluation is at or above the threshold (inf if
    none): a lucky early evaluation that is lost again does not count."""
    for i, (step, _) in enumerate(curve):
        if all(value >= threshold for _, value in curve[i:]):
            return step
    return float("inf")


def median_band(curves: list[list[tuple[int, float]]]) -> tuple[np.ndarray, ...]:
    steps = np.array([step for step, _ in curves[0]])
    values = np.array([[value for _, value in curve] for curve in curves])  # (seeds, points)
    return steps, *np.percentile(values, [25, 50, 75], axis=0)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line
        ]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--out", default=str(BENCHMARKS))
    cli = parser.parse_args()
    seeds = range(cli.first_seed, cli.first_seed + cli.seeds)

    rows, all_curves, figure = [], {}, plt.figure(figsize=(11, 4))
    for panel, (env_id, (script, budget, threshold, eval_every)) in enumerate(ENVS.items(), 1):
        defaults = script.Args()
        batch = defaults.num_envs * defaults.num_steps
        curves = {"ours": [], "SB3": []}
        walls = {"ours": [], "SB3": []}
        rollout_sps = []
        for seed in seeds:
            print(f"{env_id} seed {seed}: learning curves", flush=True)
            with tempfile.TemporaryDirectory() as workdir:
                run(ours(script, env_id, seed, budget, eval_every), workdir)
                curves["ours"].append(tensorboard_scalars(workdir, "eval/episodic_return"))
                rollout_sps.append(
                    np.median([v for _, v in tensorboard_scalars(workdir, "charts/rollout_SPS")])
                )
                curve_file = f"{workdir}/sb3.jsonl"
                run(sb3(script, seed, budget, eval_every, curve_file), workdir)
                points = [json.loads(line) for line in Path(curve_file).read_text().splitlines()]
                curves["SB3"].append([(p["step"], p["return"]) for p in points])

            print(f"{env_id} seed {seed}: speed", flush=True)
            order = ["ours", "SB3"] if seed % 2 else ["SB3", "ours"]
            for name in order:
                with tempfile.TemporaryDirectory() as workdir:
                    if name == "ours":
                        command = ours(script, env_id, seed, budget, 0)
                    else:
                        command = sb3(script, seed, budget, 0, f"{workdir}/sb3.jsonl")
                    walls[name].append(run(command, workdir))
            print(f"  ours {walls['ours'][-1]:.1f} s, SB3 {walls['SB3'][-1]:.1f} s", flush=True)

        all_curves[env_id] = curves
        raw_sps = raw_steps_per_second(env_id, defaults.num_envs)
        steps_done = budget // batch * batch
        finals = {name: [curve[-1][1] for curve in runs] for name, runs in curves.items()}
        median_wall = {name: float(np.median(w)) for name, w in walls.items()}
        rows.append(
            {
                "env": env_id,
                "seeds": len(seeds),
                "steps": steps_done,
                "threshold": threshold,
                "to_threshold": {
                    name: float(np.median([steps_to(c, threshold) for c in runs]))
                    for name, runs in curves.items()
                },
                "final": {name: float(np.median(f)) for name, f in finals.items()},
                "finals": finals,
                "at_target": sum(value >= TARGETS[env_id] for value in finals["ours"]),
                "wall": median_wall,
                "sps": {name: steps_done / wall for name, wall in median_wall.items()},
                "rollout_fraction": float(np.median(rollout_sps)) / raw_sps,
                "raw_sps": raw_sps,
            }
        )

        axes = figure.add_subplot(1, len(ENVS), panel)
        for name, color in (("ours", "tab:blue"), ("SB3", "tab:orange")):
            steps, q25, q50, q75 = median_band(curves[name])
            axes.plot(steps, q50, color=color, label=f"{name} (median)")
            axes.fill_between(steps, q25, q75, color=color, alpha=0.25, label=f"{name} (25-75%)")
        axes.axhline(threshold, color="gray", linestyle=":", linewidth=1)
        axes.set(title=f"{env_id}, {len(seeds)} seeds", xlabel="env steps", ylabel="eval return")
        axes.legend(loc="lower right", fontsize=8)

    print("Pendulum-v1, the default run: timing", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        default_wall = run([sys.executable, ppo_continuous.__file__], workdir)

    figure.tight_layout()
    figure.savefig(Path(cli.out, "learning_curves.png"), dpi=110)
    Path(cli.out, "results.md").write_text(report(rows, default_wall, cli))
    Path(cli.out, "curves.json").write_text(json.dumps(all_curves))  # env -> name -> seeds' points
    print(Path(cli.out, "results.md").read_text())


def fmt_steps(steps: float) -> str:
    return "not reached" if steps == float("inf") else f"{steps / 1000:.1f}k"


def report(rows: list[dict], default_wall: float, cli) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`python benchmarks/run.py --seeds {cli.seeds} --first-seed {cli.first_seed}` on {machine()}.",
        "Each script with its default hyperparameters; Stable-Baselines3 2.x with the same ones",
        (
            "(benchmarks/sb3_ppo.py reads them from the script). Medians over seeds "
            f"{cli.first_seed}-{cli.first_seed + cli.seeds - 1}; eval = mean return of 10 deterministic episodes."
        ),
        "",
        "| env | env steps | median steps until eval stays ≥ threshold (ours / SB3) | median eval at the end (ours / SB3) | ours: seeds at target | median wall s (ours / SB3) | SPS, whole process (ours / SB3) | speed ratio | rollout SPS / raw env SPS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["wall"]["SB3"] / row["wall"]["ours"]
        lines.append(
            f"| {row['env']} | {row['steps']} "
            f"| {fmt_steps(row['to_threshold']['ours'])} / {fmt_steps(row['to_threshold']['SB3'])} (≥ {row['threshold']:g}) "
            f"| {row['final']['ours']:.1f} / {row['final']['SB3']:.1f} "
            f"| {row['at_target']} of {row['seeds']} (≥ {TARGETS[row['env']]:g}) "
            f"| {row['wall']['ours']:.1f} / {row['wall']['SB3']:.1f} "
            f"| {row['sps']['ours']:.0f} / {row['sps']['SB3']:.0f} | {ratio:.2f}× "
            f"| {row['rollout_fraction']:.0%} of {row['raw_sps']:.0f} |"
        )
    lines += ["", "Final evals per seed:", ""]
    for row in rows:
        for name, finals in row["finals"].items():
            lines.append(f"- {row['env']}, {name}: {', '.join(f'{v:.1f}' for v in finals)}")
    lines += [
        "",
        (
            f"The default Pendulum-v1 run (`python ppo_continuous.py`, "
            f"{ppo_continuous.Args().total_timesteps} steps, with its final evaluation) took "
            f"{default_wall:.1f} s, whole process."
        ),
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
