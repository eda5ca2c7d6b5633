"""The design's extensions (§13.2) against PPO's clipped objective, side by side, one run each:

    python benchmarks/objectives.py solve --seeds 301 302 303 304 305
    python benchmarks/objectives.py mujoco --envs Hopper-v5 HalfCheetah-v5 --seeds 201 202 203
    python benchmarks/objectives.py invariance --seeds 301 302 303 --plot batch_size_invariance.png

The variants are flags on the scripts' own: clip (PPO: the defaults), kl_penalty (the PPO paper's
adaptive KL penalty, d_targ 0.01), truly (Truly PPO's TR-PPO-RB, δ 0.03 and α 5, its paper's MuJoCo
values) and clip+ewma (PPO-EWMA with its proximal policy as old on average as PPO's: PPO's is the
behaviour policy, E * M / 2 optimizer steps old on average over an update of E epochs of M
minibatches; an EWMA of decay β is β / (1 - β) steps old, its centre of mass: β = c / (1 + c)).
- solve: every default on Pendulum-v1 and CartPole-v1, each run a whole process as in
  benchmarks/time_to_solve.py, the variants' order turning with each seed: per variant, the seeds
  whose final evaluation reaches the threshold and the median wall time.
- mujoco: benchmarks/mujoco.py's setting (1M steps), its table per variant: the final
  deterministic evaluation, mean ± std over seeds, and the last 10% of training returns.
- invariance: clip and clip+ewma on Pendulum-v1 with minibatches of B (the default, 256) and of
  B / 4 with Hilton et al.'s adjustment: the learning rate / 4 and the EWMA as old in samples (its
  centre of mass, decay / (1 - decay) steps, x 4). Printed: each curve's mean training return
  over the run's last half; --plot overlays the four curves (mean over seeds) in one picture.
"""

import argparse
import importlib
import runpy
import shlex
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import table
import time_to_solve

BENCHMARKS = Path(__file__).resolve().parent
MUJOCO = runpy.run_path(str(BENCHMARKS / "mujoco.py"))  # (by path: `import mujoco` is MuJoCo's)
sys.path.insert(0, str(BENCHMARKS.parent))  # the scripts, for their defaults


def variants(num_minibatches: int, update_epochs: int) -> dict[str, list[str]]:
    """Each variant's flags, for a setting of update_epochs epochs of num_minibatches."""
    age = update_epochs * num_minibatches / 2  # PPO's proximal policy's, on average, in steps
    decay = age / (1 + age)  # (an EWMA's centre of mass: decay / (1 - decay) steps)
    return {
        "clip": [],
        "kl_penalty": ["--policy-loss", "kl_penalty", "--trust-region-kl", "0.01"],
        "truly": ["--policy-loss", "truly", "--trust-region-kl", "0.03", "--rollback-coef", "5"],
        "clip+ewma": ["--ewma-decay", f"{decay:.8g}"],
    }


def default_update(script: str) -> tuple[int, int]:
    """The script's default minibatches an epoch and epochs an update."""
    args = importlib.import_module(script.removesuffix(".py")).Args()
    return args.num_minibatches, args.update_epochs


def solve(seeds: list[int]) -> None:
    print("| env | variant | solved | median wall s | evals | walls s |")
    print("|---|---|---|---|---|---|")
    for env_id, (script, threshold) in time_to_solve.ENVS.items():
        flags = variants(*default_update(script))
        results = {name: [] for name in flags}
        for index, seed in enumerate(seeds):
            order = list(flags)[index % len(flags) :] + list(flags)[: index % len(flags)]
            for name in order:
                command = [sys.executable, str(BENCHMARKS.parent / script), *flags[name]]
                results[name].append(time_to_solve.run([*command, "--seed", str(seed)]))
        for name, runs in results.items():
            walls, evals = [wall for wall, _ in runs], [value for _, value in runs]
            solved = sum(value >= threshold for value in evals)
            print(
                f"| {env_id} | {name} | {solved}/{len(runs)} | {statistics.median(walls):.1f} "
                f"| {', '.join(f'{v:.1f}' for v in evals)} | {', '.join(f'{w:.1f}' for w in walls)} |"
            )


def mujoco_table(cli: argparse.Namespace) -> None:
    """mujoco.py's setting with each variant, all runs in one pool; a row per env and variant.
    --print-command: each variant's command for the first env and seed, one a line."""
    setting = MUJOCO["SETTING"]
    update = [
        int(setting[setting.index(flag) + 1]) for flag in ("--num-minibatches", "--update-epochs")
    ]
    command = partial(MUJOCO["command"], setting=MUJOCO["SETTING"])
    flags = {name: f"{cli.flags} {shlex.join(more)}" for name, more in variants(*update).items()}
    if cli.print_command:
        for extra in flags.values():
            print(shlex.join(command(cli.envs[0], cli.seeds[0], cli.total_timesteps, extra)))
        return
    cases = [(name, env, seed) for name in flags for env in cli.envs for seed in cli.seeds]
    workdir = Path(cli.workdir) / time.strftime("%Y%m%d-%H%M%S")
    results = table.run_all(
        [command(env, seed, cli.total_timesteps, flags[name]) for name, env, seed in cases],
        [workdir / f"{name}__{env}__{seed}" for name, env, seed in cases],
        cli.jobs,
    )
    print(f"runs in {workdir}")
    print("| env | variant | eval (mean ± std over seeds) | train, last 10% | wall per run |")
    print("|---|---|---|---|---|")
    for env_id in cli.envs:
        for name in flags:
            rows = [r for (n, e, _), r in zip(cases, results) if (n, e) == (name, env_id)]
            evals = ", ".join(f"{row['eval']:.0f}" for row in rows)
            walls = ", ".join(f"{row['wall']:.0f} s" for row in rows)
            evaluation = table.mean_std([row["eval"] for row in rows])
            train = table.mean_std([row["train"] for row in rows])
            print(f"| {env_id} | {name} | {evaluation} ({evals}) | {train} | {walls} |")


def smaller_minibatches(args: object, c: int) -> list[str]:
    """Hilton et al.'s adjustment of the default `args` for minibatches c times smaller: the
    learning rate / c, and the EWMA's centre of mass (decay / (1 - decay) steps) c times as many."""
    num_minibatches, learning_rate = args.num_minibatches, args.learning_rate
    decay = float(variants(num_minibatches, args.update_epochs)["clip+ewma"][1])
    centre = c * decay / (1 - decay)
    flags = [
        "--num-minibatches",
        str(c * num_minibatches),
        "--learning-rate",
        f"{learning_rate / c:g}",
    ]
    return [*flags, "--ewma-decay", f"{centre / (1 + centre):.8g}"]


def invariance(cli: argparse.Namespace) -> None:
    script = "ppo_continuous.py"
    defaults = importlib.import_module("ppo_continuous").Args()
    small = smaller_minibatches(defaults, 4)
    runs = {
        "clip, B": [],
        "clip, B/4": small[:4],
        "clip+ewma, B": variants(defaults.num_minibatches, defaults.update_epochs)["clip+ewma"],
        "clip+ewma, B/4": small,
    }
    workdir = Path(cli.workdir) / time.strftime("%Y%m%d-%H%M%S")
    curves = {}
    for name, flags in runs.items():
        command = ["python", str(BENCHMARKS.parent / script), *flags, "--eval-episodes", "1"]
        curves[name] = [
            table.run(
                [*command, "--seed", str(seed)], workdir / f"{name}__{seed}".replace("/", "_")
            )
            for seed in cli.seeds
        ]
    print(f"runs in {workdir}")
    print("| variant | flags | mean training return, last half (per seed) |")
    print("|---|---|---|")
    for name, results in curves.items():
        halves = [last_half(run["curve"]) for run in results]
        each = ", ".join(f"{half:.0f}" for half in halves)
        print(f"| {name} | {' '.join(runs[name])} | {table.mean_std(halves)} ({each}) |")
    if cli.plot:
        plot(curves, cli.plot)


def last_half(curve: list[tuple[int, float]]) -> float:
    """The mean training return of the episodes that ended in the run's second half."""
    return statistics.mean(value for step, value in curve if step > curve[-1][0] / 2)


def plot(curves: dict[str, list[dict]], path: str) -> None:
    """The mean over seeds of each variant's training returns, in bins of 2,048 env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, results in curves.items():
        bins = {}
        for run in results:
            for step, value in run["curve"]:
                bins.setdefault(step // 2048, []).append(value)
        steps = sorted(bins)
        axes.plot(
            [2048 * (s + 0.5) for s in steps],
            [statistics.mean(bins[s]) for s in steps],
            label=name,
            linestyle="--" if "B/4" in name else "-",
        )
    axes.set(xlabel="env steps", ylabel="training episode return", title="Pendulum-v1")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"curves in {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=["solve", "mujoco", "invariance"])
    table.add_arguments(parser, ["Hopper-v5", "HalfCheetah-v5"], [201, 202, 203])
    parser.add_argument("--plot", help="invariance: the picture's path (PNG)")
    cli = parser.parse_args()
    if cli.suite == "solve":
        solve(cli.seeds)
    elif cli.suite == "mujoco":
        mujoco_table(cli)
    else:
        invariance(cli)


if __name__ == "__main__":
    main()
