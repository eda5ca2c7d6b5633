"""MuJoCo, the optional `gymnasium[mujoco]` extra (tests/requirements.txt installs it): a short
HalfCheetah-v5 run with observation normalization trains, saves, and evaluates again from agent.pt."""

import numpy as np
import pytest
import torch
from conftest import run_in, scalars

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
