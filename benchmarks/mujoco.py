"""ppo_continuous.py's MuJoCo setting on given envs and seeds, each run a whole process (two at a
time by default, for 2 cores), and the speed of the same work against Stable-Baselines3.

    pip install "gymnasium[mujoco]"
    python benchmarks/mujoco.py --envs HalfCheetah-v5 Walker2d-v5 --seeds 201 202 203
    python benchmarks/mujoco.py --print-command --envs HalfCheetah-v5 --seeds 201
    python benchmarks/mujoco.py --cleanrl --envs Hopper-v5 --seeds 101 --flags "--gamma 0.999"
    pip install -r benchmarks/requirements.txt
    python benchmarks/mujoco.py --speed [--repeats 2]

For each env it prints the mean ± std over seeds of two metrics, with each run's own figures:
- eval: the final deterministic evaluation (10 episodes, the run's statistics frozen), what the
  README's table reports;
- train: the mean return of the training episodes that ended in the last 10% of the run's steps
  (CleanRL's metric, of stochastic actions);
and the wall time of each run. --cleanrl starts from CleanRL's MuJoCo settings instead (the base
of benchmarks/mujoco_sweep.md's rows). --speed runs HalfCheetah-v5 for 100k steps, without
evaluation, in ours and in SB3 (benchmarks/sb3_ppo.py) with the setting's hyperparameters, and in
ours with CleanRL's, alternating the order, and prints each wall time and the ratios.
"""

import argparse
import os
import shlex
import sys
from functools import partial
from pathlib import Path

import table

BENCHMARKS = Path(__file__).resolve().parent
SCRIPT = BENCHMARKS.parent / "ppo_continuous.py"
ENVS = ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5"]
# CleanRL's MuJoCo settings: the sweep's base, and the wall --speed holds the setting's against.
CLEANRL = ["--total-timesteps", "1000000", "--num-envs", "1", "--num-steps", "2048"]
CLEANRL += ["--learning-rate", "3e-4", "--gamma", "0.99", "--gae-lambda", "0.95"]
CLEANRL += ["--num-minibatches", "32", "--update-epochs", "10", "--ent-coef", "0", "--norm-obs"]
# The MuJoCo setting (benchmarks/mujoco_sweep.md chose it), the same for every env but for
# ENV_FLAGS' values: 8 envs and minibatches of 256 (fewer forward passes and optimizer steps than
# CleanRL's), networks of 256 ReLU units (rl-baselines3-zoo's), an initial action std of e^-1.
SETTING = ["--total-timesteps", "1000000", "--num-envs", "8", "--num-steps", "256"]
SETTING += ["--learning-rate", "1e-4", "--gamma", "0.99", "--gae-lambda", "0.95"]
SETTING += ["--num-minibatches", "8", "--update-epochs", "10", "--ent-coef", "0", "--norm-obs"]
SETTING += ["--hidden-sizes", "256", "256", "--activation", "relu", "--init-logstd", "-1"]
# An env's own values of some of SETTING's one-value flags, in place of SETTING's in its command
# (the issue allows at most two such values across all envs; the README says why each).
ENV_FLAGS = {"Hopper-v5": {"--learning-rate": "3e-4"}}


def command(
    env_id: str, seed: int, total_timesteps: int | None, extra: str, setting: list[str]
) -> list[str]:
    """The exact command of one run (--save-model: its agent.pt reproduces the evaluation): the
    setting's flags with the env's own values (SETTING's only), then `extra` flags (a sweep's),
    which come last, so they replace the setting's."""
    flags = [*setting, "--save-model", *shlex.split(extra)]
    values = ENV_FLAGS.get(env_id, {}) if setting == SETTING else {}
    if total_timesteps is not None:  # (a shorter run, for a smoke test)
        values = {**values, "--total-timesteps": str(total_timesteps)}
    for flag, value in values.items():
        flags[flags.index(flag) + 1] = value
    script = os.path.relpath(SCRIPT)  # (as typed from where this runs)
    return ["python", script, "--env-id", env_id, "--seed", str(seed), *flags]


def speed(repeats: int) -> None:
    """HalfCheetah-v5, 100k steps: ours against SB3 with the same hyperparameters, and against
    ours with CleanRL's setting."""
    flags = ["--env-id", "HalfCheetah-v5", "--total-timesteps", "100000", "--eval-episodes", "0"]
    sb3 = [sys.executable, str(BENCHMARKS / "sb3_ppo.py"), "--script", SCRIPT.name]
    commands = {  # (SETTING[2:] and CLEANRL[2:]: all but their --total-timesteps)
        "ours": [sys.executable, str(SCRIPT), *flags, *SETTING[2:]],
        "SB3": [*sb3, *flags, *SETTING[2:]],
        "ours, CleanRL's setting": [sys.executable, str(SCRIPT), *flags, *CLEANRL[2:]],
    }
    table.compare_walls(commands, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # (the README's report seeds; Hopper-v5's also 301-303, since its learning rate of its own)
    table.add_arguments(parser, ENVS, [201, 202, 203])
    parser.add_argument(
        "--speed", action="store_true", help="HalfCheetah-v5, 100k steps (only --repeats applies)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="of each command, for --speed")
    parser.add_argument(
        "--cleanrl", action="store_true", help="CleanRL's setting (the sweep's base)"
    )
    cli = parser.parse_args()
    if cli.speed:
        speed(cli.repeats)
        return
    setting = CLEANRL if cli.cleanrl else SETTING
    table.main(cli, partial(command, setting=setting))


if __name__ == "__main__":
    main()
