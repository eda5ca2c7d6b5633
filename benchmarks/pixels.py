"""ppo_discrete.py on images: MinAtar and Atari settings on given envs and seeds (benchmarks/table.py
runs them and prints the table), learning curves as a picture, and the speed of the same work
against Stable-Baselines3.

    pip install minatar ale-py opencv-python-headless
    python benchmarks/pixels.py --envs MinAtar/Breakout-v1 MinAtar/Asterix-v1 --seeds 201 202 203
    python benchmarks/pixels.py --print-command --envs ALE/Breakout-v5 --seeds 201  # 10M steps
    python benchmarks/pixels.py --envs ALE/Breakout-v5 --seeds 201 --total-timesteps 1000000 \\
        --plot breakout.png
    pip install -r benchmarks/requirements.txt
    python benchmarks/pixels.py --speed [--repeats 2]

An env's setting comes from its id: MINATAR for MinAtar/ ids with gamma 0.99 and linear heads on
the CNN (gamma 0.999 and 64-64 MLP heads for MinAtar/Breakout-v1), ATARI for ALE/ ids. --plot
draws every run's training returns (charts/episodic_return, a moving mean of 100 episodes)
against steps. --speed runs ALE/Breakout-v5 (16,384 steps) and MinAtar/Breakout-v1 (131,072
steps), with their settings and without evaluation, in ours and in SB3 (benchmarks/sb3_ppo.py:
CnnPolicy with SB3's Atari wrappers; for MinAtar our MinAtar CNN; our heads on either),
alternating the order, and prints each wall time and the ratios (table.py's compare_walls).
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

import table

BENCHMARKS = Path(__file__).resolve().parent
SCRIPT = BENCHMARKS.parent / "ppo_discrete.py"
# Both settings give every flag that differs from PPO's usual values (ppo_discrete.py's defaults
# are CartPole's). MinAtar: purejaxrl's PPO on MinAtar (its ppo_minatar config): 64 envs x 128
# steps, 4 epochs of 8 minibatches, lr 5e-4 annealed, clipped value loss; no reward scaling.
MINATAR = ["--total-timesteps", "10000000", "--num-envs", "64", "--num-steps", "128"]
MINATAR += ["--learning-rate", "5e-4", "--gae-lambda", "0.95", "--num-minibatches", "8"]
MINATAR += ["--update-epochs", "4", "--clip-vloss", "--ent-coef", "0.01"]
# Atari: the PPO paper's (its Table 5) as CleanRL's ppo_atari.py runs it: 8 envs x 128 steps,
# 4 epochs of 4 minibatches, lr 2.5e-4 annealed, epsilon 0.1, clipped value loss.
ATARI = ["--total-timesteps", "10000000", "--num-envs", "8", "--num-steps", "128"]
ATARI += ["--learning-rate", "2.5e-4", "--gamma", "0.99", "--gae-lambda", "0.95"]
ATARI += ["--num-minibatches", "4", "--update-epochs", "4", "--clip-vloss", "--ent-coef", "0.01"]
ATARI += ["--clip-coef", "0.1", "--hidden-sizes"]  # (no hidden sizes: linear heads on the CNN)
ENVS = [f"MinAtar/{game}-v1" for game in ("Asterix", "Breakout", "Freeway", "SpaceInvaders")]


def setting(env_id: str) -> list[str]:
    if env_id == "MinAtar/Breakout-v1":  # gymnax-blines' gamma, and MLP heads (README, Pixels)
        return [*MINATAR, "--gamma", "0.999", "--hidden-sizes", "64", "64"]
    if env_id.startswith("MinAtar/"):
        return [*MINATAR, "--gamma", "0.99", "--hidden-sizes"]  # (linear heads on the CNN)
    if env_id.startswith("ALE/"):
        return ATARI
    sys.exit(f"error: {env_id} is neither a MinAtar/ nor an ALE/ id")


def command(env_id: str, seed: int, total_timesteps: int | None, extra: str) -> list[str]:
    """The exact command of one run (--save-model: its agent.pt reproduces the evaluation); the
    `extra` flags come last, so they replace the setting's."""
    flags = [*setting(env_id), "--save-model", *shlex.split(extra)]
    if total_timesteps is not None:
        flags[flags.index("--total-timesteps") + 1] = str(total_timesteps)
    return ["python", os.path.relpath(SCRIPT), "--env-id", env_id, "--seed", str(seed), *flags]


def plot(cases: list, results: list, path: str) -> None:
    """Each run's training returns, a moving mean of 100 episodes, against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(7, 4))
    for (env_id, seed), result in zip(cases, results):
        steps, returns = np.array(result["curve"]).T  # (episodes,) each
        window = min(100, len(returns))
        mean = np.convolve(returns, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1 :], mean, label=f"{env_id}, seed {seed}")
    axes.set_xlabel("agent steps (whole games, raw scores)")
    axes.set_ylabel("training return, mean of 100 episodes")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"curves saved to {path}")


def speed(repeats: int) -> None:
    """Ours against SB3 with the same hyperparameters, each env's setting, no evaluation."""
    sb3 = [sys.executable, str(BENCHMARKS / "sb3_ppo.py"), "--script", SCRIPT.name]
    for env_id, steps in (("ALE/Breakout-v5", 16_384), ("MinAtar/Breakout-v1", 131_072)):
        flags = ["--env-id", env_id, *setting(env_id)[2:], "--eval-episodes", "0"]
        flags += ["--total-timesteps", str(steps)]
        commands = {"ours": [sys.executable, str(SCRIPT), *flags], "SB3": [*sb3, *flags]}
        table.compare_walls(commands, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    table.add_arguments(parser, ENVS, [201, 202, 203])
    parser.add_argument("--plot", help="a PNG file for the runs' training curves")
    parser.add_argument("--speed", action="store_true", help="ours against SB3 (and --repeats)")
    parser.add_argument("--repeats", type=int, default=2, help="of each command, for --speed")
    cli = parser.parse_args()
    if cli.speed:
        speed(cli.repeats)
        return
    for env_id in cli.envs:
        setting(env_id)  # (an unknown id: an error before any run)
    cases, results = table.main(cli, command, digits=1)
    if cli.plot:
        plot(cases, results, cli.plot)


if __name__ == "__main__":
    main()
