"""Bad input: a one-line error and a non-zero exit before any run directory is made."""

import re
import signal
import subprocess
import sys
from dataclasses import dataclass, fields

import pytest
import torch
from conftest import ACTION_KIND, ROOT, SCRIPTS, import_script

OTHER_SCRIPT = {"ppo_continuous.py": "ppo_discrete.py", "ppo_discrete.py": "ppo_continuous.py"}
BAD_ARGS = [  # (arguments, a fragment of the error)
    (["--env-id", "NoSuchEnv-v0"], "cannot make env 'NoSuchEnv-v0'"),
    (["--env-id", "no_such_module:Foo-v0"], "No module named 'no_such_module'"),
    (["--env-id", "toy_envs:ImageObservation{kind}-v0"], "the networks take a 1-D Box"),
    (["--env-id", "toy_envs:MatrixObservation{kind}-v0"], "or a uint8/bool image"),
    (["--env-id", "toy_envs:TinyImage{kind}-v0"], "images of 3x3 or more"),
    (["--env-id", "toy_envs:UintImage{kind}-v0", "--norm-obs"], "without --norm-obs"),
    (["--num-envs", "0"], "--num-envs must be in (0, inf), got 0"),
    (["--num-steps", "-1"], "--num-steps must be in (0, inf), got -1"),
    (["--total-timesteps", "0"], "--total-timesteps must be in (0, inf)"),
    (["--update-epochs", "0"], "--update-epochs must be in (0, inf)"),
    (["--num-minibatches", "0"], "--num-minibatches must be in (0, inf)"),
    (["--learning-rate", "0"], "--learning-rate must be in (0, inf), got 0.0"),
    (["--clip-coef", "-0.2"], "--clip-coef must be in (0, inf)"),
    (["--gamma", "1.5"], "--gamma must be in [0, 1], got 1.5"),
    (["--gae-lambda", "-0.1"], "--gae-lambda must be in [0, 1]"),
    (["--target-kl", "0"], "--target-kl must be in (0, inf)"),
    (["--hidden-sizes", "64", "0"], "--hidden-sizes must be in (0, inf), got (64, 0)"),
    (["--eval-episodes", "-1"], "--eval-episodes must be in [0, inf)"),
    (["--eval-episodes", "0", "--capture-gif"], "need --eval-episodes >= 1"),
    (["--eval-episodes", "0", "--eval-every", "1"], "need --eval-episodes >= 1"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be in [0, inf)"),
    (["--eval-every", "-2"], "--eval-every must be in [0, inf)"),
    (["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"], "is not divisible by"),
    (["--num-envs", "1", "--num-steps", "4", "--num-minibatches", "4"], "at least 2 samples"),
    (["--num-envs", "2", "--num-steps", "64", "--total-timesteps", "100"], "below one batch"),
    # values that would train wrong without a word
    (["--max-grad-norm", "-1"], "--max-grad-norm must be in (0, inf)"),  # gradient ascent
    (["--max-grad-norm", "0"], "--max-grad-norm must be in (0, inf)"),
    (["--vf-coef", "-1"], "--vf-coef must be in [0, inf)"),
    (["--ent-coef", "-0.01"], "--ent-coef must be in [0, inf)"),
    (["--target-kl", "nan"], "--target-kl must be in (0, inf), got nan"),  # never stops
    (["--learning-rate", "inf"], "--learning-rate must be in (0, inf), got inf"),
    (["--gamma", "nan"], "--gamma must be in [0, 1], got nan"),
    (["--clip-coef=-inf"], "--clip-coef must be in (0, inf), got -inf"),
    (["--seed", "-1"], f"--seed must be in [0, {2**31}), got -1"),
    # §13.2's flags
    (["--ewma-decay", "1.5"], "--ewma-decay must be in [0, 1), got 1.5"),
    (["--ewma-decay", "-0.1"], "--ewma-decay must be in [0, 1)"),
    (["--ewma-decay", "1"], "--ewma-decay must be in [0, 1), got 1.0"),  # (a frozen EWMA)
    (["--ewma-decay", "nan"], "--ewma-decay must be in [0, 1), got nan"),
    (["--trust-region-kl", "0"], "--trust-region-kl must be in (0, inf)"),
    (["--rollback-coef", "-1"], "--rollback-coef must be in [0, inf)"),
    (["--seed", str(2**32)], f"--seed must be in [0, {2**31})"),
    # envs that cannot be made, or not as asked
    (["--env-id", ":Foo-v0"], "cannot make env ':Foo-v0': ValueError: Empty module name"),
    (["--env-id", "toy_envs:FailingInConstructor{kind}-v0"], "RuntimeError: broken on purpose"),
    (["--env-id", "toy_envs:ConstantReward{kind}-v0", "--capture-gif"], "cannot render frames"),
]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(("args", "fragment"), BAD_ARGS)
def test_bad_arguments_exit_with_one_line_before_any_run(
    run_script, tmp_path, script, args, fragment
):
    """...and a caller in the same process keeps its signal mask (here, SIGINT blocked, SIGTERM
    not: the script blocks both while it makes the envs)."""
    args = [arg.format(kind=ACTION_KIND[script]) for arg in args]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # (returns the mask before)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_script(script, *args)
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask | {signal.SIGINT}
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    message = exit_info.value.code  # sys.exit(str) prints it to stderr and exits 1
    assert isinstance(message, str) and message.startswith("error: ")
    assert fragment in message and "\n" not in message
    assert not list(tmp_path.glob("*/runs"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_wrong_action_space_points_to_the_other_script(run_script, script):
    wrong_env = "CartPole-v1" if script == "ppo_continuous.py" else "Pendulum-v1"
    with pytest.raises(SystemExit) as exit_info:
        run_script(script, "--env-id", wrong_env)
    assert f"use {OTHER_SCRIPT[script]}" in exit_info.value.code


@pytest.mark.parametrize(
    "env", ["MatrixActionsBox-v0", "IntegerActionsBox-v0", "HalfActionsBox-v0"]
)
def test_box_actions_the_normal_policy_cannot_take_are_refused(run_script, env):
    with pytest.raises(SystemExit) as exit_info:
        run_script("ppo_continuous.py", "--env-id", f"toy_envs:{env}")
    assert "ppo_continuous.py takes a 1-D float32 or float64 Box" in exit_info.value.code


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_env_module_that_fails_to_import_is_one_line(run_script, tmp_path, monkeypatch, script):
    """The whole first line of the error's message: not cut at its first full stop."""
    (tmp_path / "broken_module.py").write_text("raise RuntimeError('no import. Try later.')\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_script(script, "--env-id", "broken_module:Foo-v0")
    assert exit_info.value.code == (
        "error: cannot make env 'broken_module:Foo-v0': RuntimeError: no import. Try later"
    )


def run_cli(cwd, script: str, *args: str) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS...` in a real process, as a user would type it."""
    command = [sys.executable, str(ROOT / script), *args]
    return subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args", [["--env-id", "NoSuchEnv-v0"], ["--num-envs", "0"]])
def test_error_as_a_user_sees_it(tmp_path, script, args):
    """In a real process: exit status 1, one line on stderr, no traceback, no runs/."""
    result = run_cli(tmp_path, script, *args)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_the_documented_flags(tmp_path, script):
    result = run_cli(tmp_path, script, "--help")
    assert result.returncode == 0
    assert "--target-kl" in result.stdout and "approximate KL" in result.stdout
    assert "--norm-obs" in result.stdout and "--norm-reward" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--num-envs", "3"], "--num-envs 3 is not divisible by the 2 torchrun processes"),
        (
            ["--num-envs", "4", "--num-steps", "5", "--num-minibatches", "4"],
            "num_envs / 2 processes * num_steps = 10 is not divisible by --num-minibatches 4",
        ),
        # (each rank would stop its update at its own minibatch, and wait for the others forever)
        (["--target-kl", "0.01"], "--eval-only, --target-kl and kl_penalty run in one process"),
        # (each rank would adapt its own §13.2 β to its own KL)
        (["--policy-loss", "kl_penalty"], "--target-kl and kl_penalty run in one process"),
    ],
)
def test_sizes_that_do_not_split_across_torchrun_processes_are_refused(
    run_script, tmp_path, monkeypatch, script, args, fragment
):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun --nproc_per_node 2 tells rank 0
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit) as exit_info:
        run_script(script, *args)
    assert exit_info.value.code.startswith("error: ") and fragment in exit_info.value.code
    assert not list(tmp_path.glob("*/runs"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_cuda_under_torchrun_needs_a_gpu_per_process(run_script, tmp_path, monkeypatch, script):
    """torchrun --nproc_per_node 2 ... --cuda on a machine with one GPU: rank 1 would ask for
    cuda:1. Every rank stops with one line first (here with a GPU count of 1 pretended)."""
    for rank in ("0", "1"):
        for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": rank}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("LOCAL_RANK", rank)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        with pytest.raises(SystemExit) as exit_info:
            run_script(script, "--cuda")
        assert (
            exit_info.value.code
            == "error: --cuda gives each process a GPU: start at most 1 here, not 2"
        )
    assert not list(tmp_path.glob("*/runs"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_number_flag_has_an_interval_and_a_new_one_is_refused_until_it_has(
    script, monkeypatch
):
    """Validation is one table, INTERVALS: each number flag (and each number of a tuple flag)
    has an interval there, so a flag a researcher adds is refused until it has one."""
    module = import_script(script)
    flags = {f.name: str(f.type) for f in fields(module.RunArgs)}  # ("<class 'int'>", ...)
    numbers = {name for name, kind in flags.items() if re.search(r"\b(int|float)\b", kind)}
    assert numbers <= set(module.INTERVALS)
    assert set(module.INTERVALS) - set(flags) <= {"init_logstd"}  # (ppo_continuous.py's)

    @dataclass
    class Extended(module.RunArgs):
        rollout_temperature: float = 1.0

    error = module.args_error(Extended())
    assert error == "--rollout-temperature has no interval: give it one in INTERVALS (Part 2)"
    monkeypatch.setitem(module.INTERVALS, "rollout_temperature", "(0, inf)")
    assert module.args_error(Extended()) is None
    assert "must be in (0, inf), got 0.0" in module.args_error(Extended(rollout_temperature=0.0))


@pytest.mark.parametrize(
    ("x", "interval", "inside"),
    [
        (0, "[0, 1)", True),
        (1, "[0, 1)", False),
        (1, "[0, 1]", True),
        (0, "(0, inf)", False),
        (1e-300, "(0, inf)", True),
        (float("inf"), "(0, inf)", False),
        (float("nan"), "(-inf, inf)", False),
        (-5.0, "(-inf, inf)", True),
        (2**31 - 1, f"[0, {2**31})", True),
        (2**31, f"[0, {2**31})", False),
    ],
)
def test_an_interval_is_read_as_in_math(x, interval, inside):
    assert import_script("ppo_discrete.py").in_interval(x, interval) is inside
