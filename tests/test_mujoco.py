"""MuJoCo, the optional `gymnasium[mujoco]` extra (tests/requirements.txt installs it): a short
HalfCheetah-v5 run with observation normalization trains, saves, and evaluates again from agent.pt;
benchmarks/mujoco.py runs and prints what it says."""

import re
import runpy
import shlex
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_in, scalars, stdout_of

pytest.importorskip("mujoco", reason="gymnasium[mujoco] is not installed")


def test_halfcheetah_trains_saves_and_evaluates_from_the_saved_agent(run_script, tmp_path, capsys):
    flags = ["--env-id", "HalfCheetah-v5", "--total-timesteps", "4096", "--num-envs", "1"]
    flags += ["--num-steps", "2048", "--norm-obs", "--save-model", "--eval-episodes", "1"]
    run_dir = run_script("ppo_continuous.py", *flags)
    logged = scalars(run_dir)
    assert len(logged["losses/policy_loss"]) == 2
    assert np.isfinite(logged["eval/episodic_return"][0])
    checkpoint = torch.load(run_dir / "agent.pt", weights_only=True)
    assert checkpoint["obs_rms"]["mean"].shape == (17,)  # HalfCheetah's observation

    # The statistics travel with the model: evaluating the file gives the same return.
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_in(
            tmp_path / "eval",
            "ppo_continuous.py",
            "--eval-only",
            str(run_dir),
            "--eval-episodes",
            "1",
        )
    printed = capsys.readouterr().out
    assert f"eval: mean return {logged['eval/episodic_return'][0]:.1f} ±" in printed


def test_the_mujoco_benchmark_prints_a_runs_command_and_its_evaluation(tmp_path):
    """benchmarks/mujoco.py: --print-command prints one run's command alone; a short run prints
    the env's row with the seed's evaluation, which the printed command reproduces."""
    module = runpy.run_path(str(ROOT / "benchmarks" / "mujoco.py"))  # (not run as __main__)
    env_id = "Walker2d-v5"  # (the setting's flags alone: no values of its own)
    assert env_id not in module["ENV_FLAGS"]
    benchmark = [sys.executable, str(ROOT / "benchmarks" / "mujoco.py"), "--envs", env_id]
    short = ["--seeds", "3", "--total-timesteps", "2048"]
    printed = stdout_of([*benchmark, "--print-command", *short], cwd=ROOT)
    command = shlex.split(printed)
    assert printed.count("\n") == 1
    assert command[:6] == ["python", "ppo_continuous.py", "--env-id", env_id, "--seed", "3"]
    assert command[6:] == ["--total-timesteps", "2048", *module["SETTING"][2:], "--save-model"]
    cleanrl = [*benchmark, "--print-command", "--cleanrl", *short, "--flags", "--num-envs 2"]
    cleanrl = shlex.split(stdout_of(cleanrl, ROOT))  # CleanRL's setting, a sweep's flags last
    assert cleanrl[6:8] == ["--total-timesteps", "2048"]
    assert cleanrl[8:] == [*module["CLEANRL"][2:], "--save-model", "--num-envs", "2"]
    assert sum(map(len, module["ENV_FLAGS"].values())) <= 2  # (the limit on env-specific flags)
    setting = [*module["SETTING"], "--save-model"]
    for own_env, values in module["ENV_FLAGS"].items():  # its values in place of the setting's
        own = [*benchmark[:2], "--envs", own_env, "--seeds", "3", "--print-command"]
        flags = shlex.split(stdout_of(own, ROOT))[6:]
        assert len(flags) == len(setting)
        changed = {setting[i - 1]: flags[i] for i in range(len(flags)) if flags[i] != setting[i]}
        assert changed == values
        flags = shlex.split(stdout_of([*own, "--cleanrl"], ROOT))[6:]  # (CleanRL's: not the env's)
        assert flags == [*module["CLEANRL"], "--save-model"]
    workdir = ["--workdir", str(tmp_path / "bench")]
    table = stdout_of([*benchmark, *short, "--jobs", "1", *workdir], cwd=tmp_path)
    (row,) = [line for line in table.splitlines() if line.startswith(f"| {env_id} |")]
    evaluation = row.split("|")[3].split("(")[1].rstrip(") ")  # the seed's own evaluation
    rerun = stdout_of([sys.executable, str(ROOT / command[1]), *command[2:]], cwd=tmp_path)
    rerun_evaluation = float(re.search(r"eval: mean return (\S+) ±", rerun)[1])
    assert f"{rerun_evaluation:.0f}" == evaluation
