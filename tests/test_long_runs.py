"""Long runs: checkpoints, resuming after a signal, non-finite guards, untrusted files, eval-only."""

import contextlib
import errno
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ACTION_KIND, ROOT, SCRIPTS, import_script, run_in, scalar_events, scalars
from gymnasium.wrappers.utils import RunningMeanStd
from PIL import Image
from test_scripts import TINY
from toy_envs import TIME_LIMIT, NaNObservationEnv

# Episodes of TIME_LIMIT steps end exactly at iteration boundaries, so a resumed run's fresh
# episodes are the ones the uninterrupted run would have started there.
ALIGNED = ["--num-envs", "2", "--num-steps", str(TIME_LIMIT), "--num-minibatches", "2"]
ALIGNED += ["--update-epochs", "2", "--eval-episodes", "0"]
BATCH = 2 * TIME_LIMIT


def toy_env(name: str, script: str) -> list[str]:
    return ["--env-id", f"toy_envs:{name}{ACTION_KIND[script]}-v0"]


def resume_toy_run(run_dir, script: str) -> list[str]:
    """--resume of a run of ConstantReward, its module env id confirmed (as saved_run_args asks)."""
    return ["--resume", str(run_dir), *toy_env("ConstantReward", script)]


def python(cwd, *args: str, **popen_args) -> subprocess.Popen:
    """`python ARGS...` in a real process, its stdout readable line by line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}  # for `toy_envs:...` env ids
    env.pop("PYTHONUNBUFFERED", None)  # (the scripts flush each line themselves)
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen_args,
    )


def run_to_success(cwd, *args: str, timeout: float = 120) -> str:
    """`python ARGS...` in cwd, to its end; asserts that it succeeded and returns its stdout."""
    process = python(cwd, *args)
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return stdout


def wait_for_progress_lines(process: subprocess.Popen, count: int) -> None:
    """Reads stdout until `count` iterations have printed their progress line."""
    seen = 0
    while seen < count:
        line = process.stdout.readline()
        assert line, f"the run ended early: {process.stderr.read()}"
        seen += line.startswith("step ")


def ended_by(process: subprocess.Popen, signum: int, timeout: float = 60) -> str:
    """Waits for the process; asserts that it exited 128 + signum with nothing on stderr (no
    traceback, no warning), and returns its stdout."""
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 128 + signum and stderr == ""
    return stdout


def load(path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    ("script", "signum"),
    [("ppo_continuous.py", signal.SIGINT), ("ppo_discrete.py", signal.SIGTERM)],
)
def test_a_stopped_and_resumed_run_is_the_uninterrupted_run(run_script, tmp_path, script, signum):
    """Stopped by a signal mid-run, the run saves its last iteration boundary, prints the command
    that resumes it and exits 128 + signal. Resumed, it reaches total_timesteps with the same
    TensorBoard steps and the same final parameters as a run that was never stopped."""
    num_iterations = 80
    flags = [*toy_env("ConstantReward", script), *ALIGNED, "--save-model"]
    flags += ["--total-timesteps", str(num_iterations * BATCH)]
    uninterrupted = run_script(script, *flags)

    workdir = tmp_path / "stopped"
    workdir.mkdir()
    process = python(workdir, str(ROOT / script), *flags)
    wait_for_progress_lines(process, 1)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    last_line = stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        rf"stopped by {signum.name} after iteration (\d+); resume with: (.+)", last_line
    )
    assert match and 1 <= int(match[1]) < num_iterations
    (run_dir,) = (workdir / "runs").iterdir()
    checkpoint = load(run_dir / "checkpoint.pt")
    assert checkpoint["iteration"] == int(match[1])
    stopped_agent = load(run_dir / "agent.pt")["model"]  # --save-model: the last boundary's
    assert all(torch.equal(stopped_agent[key], checkpoint["model"][key]) for key in stopped_agent)

    command = match[2].split()
    resume = resume_toy_run(f"runs/{run_dir.name}", script)
    assert command == ["python", str(ROOT / script), *resume]  # (the env id confirmed: toy_envs)
    run_to_success(workdir, *command[1:])
    assert load(run_dir / "checkpoint.pt")["global_step"] == num_iterations * BATCH

    expected, logged = scalar_events(uninterrupted), scalar_events(run_dir)
    assert [e.step for e in logged["charts/SPS"]] == [BATCH * i for i in range(1, 81)]
    for tag in ("charts/episodic_return", "losses/policy_loss", "losses/value_loss"):
        assert [e.step for e in logged[tag]] == [e.step for e in expected[tag]]
    assert [e.value for e in logged["losses/value_loss"]] == pytest.approx(
        [e.value for e in expected["losses/value_loss"]]
    )
    expected_model = load(uninterrupted / "agent.pt")["model"]
    resumed_model = load(run_dir / "agent.pt")["model"]
    assert all(torch.equal(expected_model[key], resumed_model[key]) for key in expected_model)


def test_a_second_signal_exits_at_once_and_leaves_the_last_boundary(tmp_path):
    """With no periodic checkpoints (--checkpoint-every 0, the default), the second Ctrl-C too
    leaves the last iteration boundary on disk, and the command that resumes from it."""
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED]
    process = python(
        tmp_path, str(ROOT / "ppo_discrete.py"), *flags, "--total-timesteps", str(500 * BATCH)
    )
    wait_for_progress_lines(process, 3)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    stdout = ended_by(process, signal.SIGINT)
    (run_dir,) = (tmp_path / "runs").iterdir()
    # (an iteration prints its progress line just before its boundary is kept)
    iteration = load(run_dir / "checkpoint.pt")["iteration"]
    assert iteration >= 2
    assert stdout.splitlines()[-1].startswith(f"stopped by SIGINT after iteration {iteration}; ")


def test_a_ctrl_c_to_the_whole_job_stops_async_envs_in_order(tmp_path):
    """A terminal's Ctrl-C reaches every process of the job: --vector-mode async's env workers too,
    which ignore it, so the run stops at its boundary as in one process."""
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED, "--vector-mode", "async"]
    flags += ["--total-timesteps", str(500 * BATCH)]
    process = python(tmp_path, str(ROOT / "ppo_discrete.py"), *flags, start_new_session=True)
    wait_for_progress_lines(process, 2)
    os.killpg(process.pid, signal.SIGINT)  # the terminal's way: the whole process group
    stdout = ended_by(process, signal.SIGINT)
    assert stdout.splitlines()[-1].startswith("stopped by SIGINT after iteration ")


def test_a_signal_in_the_last_iteration_leaves_a_complete_run_and_its_agent(tmp_path):
    """Stopped in its last iteration, the run is complete: agent.pt is written (as for any stop,
    from the last boundary), and the printed command evaluates it instead of resuming."""
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED, "--save-model"]
    flags += ["--num-steps", "20000", "--num-minibatches", "1", "--total-timesteps", "80000"]
    process = python(tmp_path, str(ROOT / "ppo_discrete.py"), *flags)  # iterations of 2 s or so
    wait_for_progress_lines(process, 1)
    time.sleep(0.5)  # (past iteration 1's boundary, which follows its progress line)
    process.send_signal(signal.SIGTERM)
    stdout = ended_by(process, signal.SIGTERM)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert stdout.splitlines()[-1] == (
        f"stopped by SIGTERM after iteration 2; training is complete; evaluate with: python "
        f"{ROOT / 'ppo_discrete.py'} --eval-only runs/{run_dir.name} "
        f"--env-id toy_envs:ConstantRewardDiscrete-v0"
    )
    assert (
        load(run_dir / "agent.pt")["model"].keys()
        == load(run_dir / "checkpoint.pt")["model"].keys()
    )


def test_async_envs_end_with_the_run_however_it_ends(saved_runs, tmp_path):
    """A non-finite observation ends an async run with its one line, and an --eval-only of an
    async run exits cleanly: no traceback of a worker process left behind."""
    flags = [*toy_env("NaNObservation", "ppo_discrete.py"), *ALIGNED, "--vector-mode", "async"]
    process = python(
        tmp_path, str(ROOT / "ppo_discrete.py"), *flags, "--total-timesteps", str(4 * BATCH)
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and stderr.count("\n") == 1
    assert stderr.startswith(
        "error: training failed: FloatingPointError: env 1 returned a NaN or infinite value"
    )
    run_dir = saved_runs["ppo_discrete.py"]
    flags = ["--eval-only", str(run_dir), "--eval-episodes", "1"]
    checkpoint = load(run_dir / "checkpoint.pt")
    checkpoint["args"]["vector_mode"] = "async"
    torch.save(checkpoint, tmp_path / "async.pt")
    process = python(tmp_path, str(ROOT / "ppo_discrete.py"), "--eval-only", "async.pt")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and stderr == ""


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--num-envs", "256"], "cannot make env 'CartPole-v1'"),
        (["--env-id", "Pendulum-v1"], "use ppo_continuous.py"),
    ],
)
def test_async_envs_that_cannot_start_a_run_end_with_the_line_and_print_nothing_after(
    tmp_path, flags, error
):
    """Under a 100-file limit, 256 async workers (a pipe each) cannot all start, and 8 start but
    take actions the script cannot: the run exits with its one line, and the workers already
    started end with it instead of printing tracebacks after it."""
    resource = pytest.importorskip("resource")  # (POSIX)
    few_files = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
    flags = [*flags, "--vector-mode", "async", "--num-steps", "4"]
    process = python(tmp_path, str(ROOT / "ppo_discrete.py"), *flags, preexec_fn=few_files)
    _, stderr = process.communicate(timeout=60)  # (until every holder of the pipe has ended)
    assert process.returncode == 1
    assert re.fullmatch(r"error: [^\n]+\n", stderr) and error in stderr, stderr


def test_links_planted_in_a_run_directory_are_replaced_not_written_through(saved_runs, tmp_path):
    """Someone who can write the run directory plants links at the names the run writes: the
    checkpoint's temp file and the GIF. The files they point to stay untouched."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint = load(saved_runs["ppo_discrete.py"] / "checkpoint.pt")
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    victims = {name: tmp_path / f"victim_{name}" for name in ("checkpoint.pt.tmp", "episode.gif")}
    for name, victim in victims.items():
        victim.write_text("precious")
        (run_dir / name).symlink_to(victim)
    script = str(ROOT / "ppo_discrete.py")
    run_to_success(tmp_path, script, "--resume", str(run_dir), "--total-timesteps", "768")
    run_to_success(tmp_path, script, "--eval-only", str(run_dir), "--capture-gif")
    assert all(victim.read_text() == "precious" for victim in victims.values())
    assert (
        not (run_dir / "episode.gif").is_symlink() and not (run_dir / "checkpoint.pt.tmp").exists()
    )


def test_resume_of_an_empty_path_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, "ppo_discrete.py", "--resume", "")
    assert exit_info.value.code == "error: cannot read : No such file or directory"


def test_a_signal_during_the_final_evaluation_stops_it(tmp_path):
    """Training is over (its checkpoint written); SIGTERM ends the long evaluation at once."""
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED, "--total-timesteps", "200"]
    process = python(tmp_path, str(ROOT / "ppo_discrete.py"), *flags, "--eval-episodes", "1000000")
    wait_for_progress_lines(process, 2)  # the last iteration's: evaluation starts
    process.send_signal(signal.SIGTERM)
    ended_by(process, signal.SIGTERM, timeout=30)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert load(run_dir / "checkpoint.pt")["iteration"] == 2


def test_ctrl_c_in_eval_only_exits_130_without_a_traceback(saved_runs, tmp_path):
    run_dir = saved_runs["ppo_discrete.py"]
    flags = ["--eval-only", str(run_dir), "--eval-episodes", "1000000"]
    process = python(tmp_path, str(ROOT / "ppo_discrete.py"), *flags)
    assert process.stdout.readline().startswith(f"evaluating {run_dir}/checkpoint.pt: 1000000 ")
    process.send_signal(signal.SIGINT)
    ended_by(process, signal.SIGINT, timeout=30)


def test_a_killed_run_resumes_from_its_last_checkpoint_and_logs_each_step_once(tmp_path):
    """SIGKILL (or a power cut) gives no chance to save: the run resumes from the last periodic
    checkpoint, and TensorBoard hides what the killed process logged after it."""
    num_iterations = 40
    flags = [*toy_env("ConstantReward", "ppo_continuous.py"), *ALIGNED, "--checkpoint-every", "3"]
    flags += ["--total-timesteps", str(num_iterations * BATCH)]
    process = python(tmp_path, str(ROOT / "ppo_continuous.py"), *flags)
    wait_for_progress_lines(process, 5)
    process.kill()
    process.wait()
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved_iteration = load(run_dir / "checkpoint.pt")["iteration"]
    assert saved_iteration >= 3 and saved_iteration % 3 == 0
    assert len(scalars(run_dir)["charts/SPS"]) >= saved_iteration  # the log reaches that far

    resume = resume_toy_run(run_dir, "ppo_continuous.py")
    run_to_success(tmp_path, str(ROOT / "ppo_continuous.py"), *resume)
    steps = [e.step for e in scalar_events(run_dir)["charts/SPS"]]
    assert steps == [BATCH * i for i in range(1, num_iterations + 1)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_non_finite_observation_stops_the_run_before_an_update_uses_it(tmp_path, script):
    """Env 1 (seeded 2) returns NaN at its 70th step: in iteration 2, after 1 update."""
    assert TIME_LIMIT < NaNObservationEnv.NAN_STEP < 2 * TIME_LIMIT  # (iterations of TIME_LIMIT)
    flags = [*toy_env("NaNObservation", script), *ALIGNED, "--total-timesteps", str(4 * BATCH)]
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, script, *flags, "--seed", "1")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert exit_info.value.code == (
        "error: training failed: FloatingPointError: env 1 returned a NaN or infinite value "
        f"(traceback in runs/{run_dir.name}/traceback.txt); resume with: python "
        f"{ROOT / script} --resume runs/{run_dir.name} --env-id {flags[1]}"
    )
    checkpoint = load(run_dir / "checkpoint.pt")
    assert checkpoint["iteration"] == 1
    assert all(tensor.isfinite().all() for tensor in checkpoint["model"].values())
    assert len(scalars(run_dir)["losses/policy_loss"]) == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_non_finite_loss_stops_the_run_before_the_optimizer_step(tmp_path, script):
    """Rewards of 1e38 are finite, but their discounted sums overflow float32."""
    flags = [*toy_env("HugeReward", script), *ALIGNED, "--total-timesteps", str(4 * BATCH)]
    if script == "ppo_continuous.py":
        flags.append("--no-norm-reward")
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, script, *flags)
    assert exit_info.value.code.startswith(  # (torch's whole first line, its hint too)
        "error: training failed: RuntimeError: The total norm of order 2.0 for gradients from "
        "`parameters` is non-finite, so it cannot be clipped. To disable this error"
    )
    (run_dir,) = (tmp_path / "runs").iterdir()
    checkpoint = load(run_dir / "checkpoint.pt")
    assert checkpoint["iteration"] == 0
    assert all(tensor.isfinite().all() for tensor in checkpoint["model"].values())


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_non_finite_final_observation_is_the_envs_not_the_losss(tmp_path, script):
    """A truncated episode's last observation (infos["final_obs"]) is checked like the others:
    NaN at step TIME_LIMIT of both envs, the last step of iteration 1."""
    flags = [*toy_env("NaNFinalObservation", script), *ALIGNED, "--norm-obs"]
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, script, *flags, "--total-timesteps", str(4 * BATCH))
    assert exit_info.value.code.startswith(
        "error: training failed: FloatingPointError: env 0 returned a NaN or infinite value"
    )
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert load(run_dir / "checkpoint.pt")["iteration"] == 0  # (NaN in iteration 1's last step)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("fails_in", ["reset", "step"])
def test_an_env_that_raises_in_training_ends_it_with_one_line(tmp_path, script, fails_in):
    """The env's error in one line; its traceback in the run directory; the checkpoint kept."""
    flags = [*toy_env(f"FailingIn{fails_in.title()}", script), *ALIGNED]
    process = python(tmp_path, str(ROOT / script), *flags, "--total-timesteps", str(8 * BATCH))
    _, stderr = process.communicate(timeout=60)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert process.returncode == 1 and stderr.count("\n") == 1
    assert stderr.startswith(
        "error: training failed: RuntimeError: broken on purpose "
        f"(traceback in runs/{run_dir.name}/traceback.txt)"
    )
    assert "broken on purpose" in (run_dir / "traceback.txt").read_text()
    if fails_in == "step":  # at its 120th step: in iteration 3 (2 envs, 50 steps each)
        resume = f"; resume with: python {ROOT / script} --resume runs/{run_dir.name}"
        assert stderr.endswith(f"{resume} --env-id {flags[1]}\n")
        assert load(run_dir / "checkpoint.pt")["iteration"] == 2


def test_discrete_actions_that_start_at_1_are_the_envs_actions(run_script):
    """Discrete(3, start=1): the env gets 1, 2, 3 (it raises on anything else), in training and
    evaluation; it rewards 3, which the policy learns to take."""
    flags = ["--env-id", "toy_envs:ShiftedActionsDiscrete-v0", "--num-envs", "2"]
    flags += ["--num-steps", "50", "--total-timesteps", "3000", "--eval-episodes", "1"]
    run_dir = run_script("ppo_discrete.py", *flags)
    assert scalars(run_dir)["eval/episodic_return"][0] >= 45  # of 50 steps


def test_runs_started_in_the_same_second_get_directories_of_their_own(tmp_path):
    """Two real processes with the same env, exp-name and seed, their names for the next minute
    already taken: each run gets a new directory, and writes only there."""
    now = int(time.time())
    taken = {f"CartPole-v1__same__1__{second}" for second in range(now, now + 60)}
    for name in taken:
        (tmp_path / "runs" / name).mkdir(parents=True)
    flags = [str(ROOT / "ppo_discrete.py"), "--exp-name", "same", "--total-timesteps", "512"]
    processes = [python(tmp_path, *flags, "--save-model", "--eval-episodes", "1") for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    new = {path.name for path in (tmp_path / "runs").iterdir()} - taken
    assert len(new) == 2
    for name in new:
        assert {"agent.pt", "checkpoint.pt"} <= {
            path.name for path in (tmp_path / "runs" / name).iterdir()
        }
    assert not any(any((tmp_path / "runs" / name).iterdir()) for name in taken)


@pytest.mark.parametrize(
    ("exp_name", "expected"),
    [
        ("../../outside", "CartPole-v1__.._.._outside__1__"),
        ("x" * 300, "CartPole-v1__" + "x" * 187),
    ],
)
def test_user_text_in_the_run_name_stays_inside_runs(tmp_path, exp_name, expected):
    flags = [*TINY, "--exp-name", exp_name, "--eval-episodes", "0"]
    run_dir = run_in(tmp_path / "work", "ppo_discrete.py", *flags)
    assert run_dir.name.startswith(expected) and len(run_dir.name) <= 200
    assert sorted(path.name for path in tmp_path.iterdir()) == ["work"]


class CodeOnLoad:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> dict:
    """A tiny run of each script with agent.pt and checkpoint.pt: script -> run directory."""
    workdir = tmp_path_factory.mktemp("saved")
    return {script: run_in(workdir / script, script, *TINY, "--save-model") for script in SCRIPTS}


# What --eval-only does not read: it takes an agent.pt, which has no step and no optimizer.
EVAL_ONLY_IGNORES = ("an agent.pt", "a step that is no count", "moments of another shape")


def with_moments_of_shape(optimizer: dict, shape: tuple[int, ...]) -> dict:
    """An optimizer state_dict whose Adam moments all have the given shape."""
    moments = {"exp_avg": torch.zeros(shape), "exp_avg_sq": torch.zeros(shape)}
    state = {i: {**param_state, **moments} for i, param_state in optimizer["state"].items()}
    return {**optimizer, "state": state}


def write_bad_files(directory, script: str, run_dir) -> dict:
    """Damaged, foreign and malicious stand-ins for checkpoint.pt: name -> (path, error fragment)."""
    good = (run_dir / "checkpoint.pt").read_bytes()
    checkpoint = {**load(run_dir / "checkpoint.pt"), "iteration": 1}  # unfinished: it resumes
    other_script = next(other for other in SCRIPTS if other != script)
    first_weight = next(iter(checkpoint["model"]))
    not_ours = f"is not a checkpoint written by {script}"
    files = {
        "missing": (b"", "cannot read"),
        "empty": (b"", not_ours),
        "truncated": (good[: len(good) // 2], "truncated or corrupted"),
        "random bytes": (np.random.default_rng(0).bytes(4096), not_ours),
        "a TensorBoard log": (next(run_dir.glob("events.*")).read_bytes(), not_ours),
        "code in a pickle": (pickle.dumps(CodeOnLoad(directory / "pwned")), not_ours),
        "code in a torch file": ({"model": CodeOnLoad(directory / "pwned")}, "refused"),
        "foreign dict": ({"model": {}}, not_ours),
        "a step that is no count": ({**checkpoint, "global_step": -5}, "has global_step -5"),
        # (fused Adam read and wrote past the end of such moments: memory corruption)
        "moments of another shape": (
            {**checkpoint, "optimizer": with_moments_of_shape(checkpoint["optimizer"], (1,))},
            "the saved optimizer does not fit this script's network: moments of shape (1,)",
        ),
        "mistyped arguments": (
            {**checkpoint, "args": {**checkpoint["args"], "num_envs": "2"}},
            "its saved num_envs '2' is not a <class 'int'>",
        ),
        "a NaN argument": (  # (not "cannot be set": NaN is not NaN)
            {**checkpoint, "args": {**checkpoint["args"], "learning_rate": float("nan")}},
            "--learning-rate must be in (0, inf), got nan",
        ),
        "the other script's": ({**checkpoint, "script": other_script}, not_ours),
        "an agent.pt": ((run_dir / "agent.pt").read_bytes(), "optimizer, iteration, global_step"),
        "other spaces": ({**checkpoint, "spaces": ["Box(3,)", "Box(9,)"]}, "is for spaces"),
        "other network": (  # the message names the parameter and both shapes
            {**checkpoint, "model": {**checkpoint["model"], first_weight: torch.zeros(3, 3)}},
            (
                f"does not fit this script's network: size mismatch for {first_weight}: copying "
                "a param with shape torch.Size([3, 3]) from checkpoint"
            ),
        ),
    }
    paths = {}
    for name, (content, fragment) in files.items():
        path = directory / name.replace(" ", "_") / "checkpoint.pt"  # (what --resume takes)
        path.parent.mkdir()
        if isinstance(content, bytes) and name != "missing":
            path.write_bytes(content)
        elif isinstance(content, dict):
            torch.save(content, path)
        paths[name] = (path, fragment)
    return paths


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("mode", ["--resume", "--eval-only"])
def test_bad_checkpoints_are_refused_with_one_line_and_never_run(
    saved_runs, tmp_path, script, mode
):
    for name, (path, fragment) in write_bad_files(tmp_path, script, saved_runs[script]).items():
        if mode == "--eval-only" and name in EVAL_ONLY_IGNORES:
            continue
        with pytest.raises(SystemExit) as exit_info:
            run_in(tmp_path / "work", script, mode, str(path))
        message = exit_info.value.code
        assert isinstance(message, str) and message.startswith("error: "), name
        assert fragment in message and "\n" not in message, (name, message)
        assert not (tmp_path / "pwned").exists()
        assert not (tmp_path / "work" / "runs").exists()


def test_bad_checkpoint_as_a_user_sees_it(tmp_path):
    """In a real process: one line on stderr, exit 1, and the code in the file never ran."""
    torch.save({"model": CodeOnLoad(tmp_path / "pwned")}, tmp_path / "checkpoint.pt")
    process = python(tmp_path, str(ROOT / "ppo_continuous.py"), "--resume", str(tmp_path))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr.startswith("error: refused") and stderr.count("\n") == 1
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_resume_and_eval_only_refuse_flags_that_would_change_the_saved_run(
    saved_runs, tmp_path, script
):
    run_dir = saved_runs[script]
    for args, fragment in [
        (["--resume", str(run_dir), "--seed", "7"], "--seed cannot be set with --resume"),
        (["--eval-only", str(run_dir), "--num-envs", "3"], "--num-envs cannot be set with"),
        (["--resume", str(run_dir), "--eval-only", str(run_dir)], "--eval-only cannot be set"),
        (["--resume", str(run_dir), "--seed", "2"], "--seed cannot be set with --resume"),
        (["--resume", str(run_dir), "--no-anneal_lr"], "--anneal-lr cannot be set with --resume"),
        (["--eval-only", str(run_dir), "--env-id", "Acrobot-v1"], "is not the saved run's env"),
        (["--eval-only", str(run_dir), "--norm-obs"], "--norm-obs cannot be set"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            run_in(tmp_path, script, *args)
        assert fragment in exit_info.value.code
    # A flag typed at the saved run's value changes nothing: the run (complete) says so.
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, script, "--resume", str(run_dir), "--seed", "1", "--anneal-lr")
    assert exit_info.value.code == 0


@pytest.mark.parametrize("script", SCRIPTS)
def test_eval_only_repeats_the_evaluation_at_the_end_of_training(
    run_script, tmp_path, capsys, script
):
    run_dir = run_script(script, *TINY, "--norm-obs", "--save-model")
    logged_eval = scalars(run_dir)["eval/episodic_return"][0]
    eval_flags = ["--capture-gif"]  # and the saved run's --eval-episodes 2
    for saved in (run_dir / "agent.pt", run_dir / "checkpoint.pt", run_dir):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_in(tmp_path / "eval", script, "--eval-only", str(saved), *eval_flags)
        assert exit_info.value.code == 0
        mean = float(re.search(r"eval: mean return (\S+) ±", capsys.readouterr().out)[1])
        assert mean == pytest.approx(logged_eval, abs=0.051)  # printed with one decimal
    assert (run_dir / "episode.gif").exists()  # beside the agent
    assert not (tmp_path / "eval" / "runs").exists() and not (tmp_path / "eval" / "gifs").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_complete_run_resumes_to_nothing_and_a_larger_budget_extends_it(tmp_path, capsys, script):
    """--resume of a finished run says so and leaves every file as it was; with a larger
    --total-timesteps it trains on, the learning rate following the longer run's line."""
    flags = [*toy_env("ConstantReward", script), *ALIGNED, "--learning-rate", "0.01"]
    run_dir = run_in(tmp_path, script, *flags, "--total-timesteps", str(2 * BATCH))
    files = {path.name: path.read_bytes() for path in run_dir.iterdir()}
    capsys.readouterr()
    resume = resume_toy_run(run_dir, script)
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, script, *resume)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(
        f"{run_dir} has trained {2 * BATCH} steps, --total-timesteps {2 * BATCH}: training is "
        f"complete; evaluate with: python {ROOT / script} --eval-only {run_dir} --env-id "
        f"{resume[-1]}, "
        f"or resume with --total-timesteps {3 * BATCH} or more"
    )
    assert {path.name: path.read_bytes() for path in run_dir.iterdir()} == files

    with pytest.raises(SystemExit) as exit_info:  # (a smaller budget: complete too)
        run_in(tmp_path, script, *resume, "--total-timesteps", str(BATCH))
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(
        f"{run_dir} has trained {2 * BATCH} steps, --total-timesteps {BATCH}: training is complete"
    )

    run_in(tmp_path, script, *resume, "--total-timesteps", str(4 * BATCH))
    checkpoint = load(run_dir / "checkpoint.pt")
    assert checkpoint["iteration"] == 4 and checkpoint["args"]["total_timesteps"] == 4 * BATCH
    # §8.4 lr(i) = 0.01 (1 - (i - 1) / iterations): 2 iterations, then 4
    expected_lr = [0.01, 0.005, 0.005, 0.0025]
    assert scalars(run_dir)["charts/learning_rate"] == pytest.approx(expected_lr)


@pytest.mark.parametrize("mode", ["--resume", "--eval-only"])
def test_a_saved_env_id_never_imports_a_module_the_command_line_does_not_name(
    saved_runs, tmp_path, monkeypatch, mode
):
    """gym.make("module:EnvId") imports module: a tampered file must not pick code to run, although
    it loads with weights_only=True. Named on the command line, the module is imported."""
    module = f"planted_{mode.removeprefix('--').replace('-', '_')}"  # (imported once per process)
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(tmp_path)
    checkpoint = load(saved_runs["ppo_discrete.py"] / "checkpoint.pt")
    checkpoint["args"]["env_id"] = f"{module}:CartPole-v1"
    checkpoint["iteration"] = 1  # unfinished, so --resume would go on
    run_dir = tmp_path / "work" / "runs" / "planted"
    run_dir.mkdir(parents=True)
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path / "work", "ppo_discrete.py", mode, str(run_dir))
    assert exit_info.value.code == (
        f"error: the saved env {module}:CartPole-v1 imports a module: trust it with --env-id "
        f"{module}:CartPole-v1"
    )
    assert not marker.exists()
    confirmed = [mode, str(run_dir), "--env-id", f"{module}:CartPole-v1"]
    with contextlib.suppress(SystemExit):  # (--eval-only exits 0)
        run_in(tmp_path / "work", "ppo_discrete.py", *confirmed)
    assert marker.exists()


def test_resume_never_replaces_a_checkpoint_with_a_copy(saved_runs, tmp_path):
    """--resume of an older copy beside the run's checkpoint.pt would overwrite that with a run
    from the copy's step: --resume takes only a run's checkpoint.pt."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint = load(saved_runs["ppo_discrete.py"] / "checkpoint.pt")  # 2 iterations, 512 steps
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    older = {**checkpoint, "iteration": 1, "global_step": 256}
    torch.save(older, run_dir / "backup.pt")
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, "ppo_discrete.py", "--resume", str(run_dir / "backup.pt"))
    assert exit_info.value.code == (
        f"error: --resume takes a run directory or its checkpoint.pt, not {run_dir}/backup.pt"
    )
    assert load(run_dir / "checkpoint.pt")["global_step"] == 512


def test_resume_of_a_bare_file_name_writes_in_the_working_directory(saved_runs, tmp_path):
    """`--resume checkpoint.pt` in the run's directory continues the run there."""
    checkpoint = load(saved_runs["ppo_discrete.py"] / "checkpoint.pt")
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    script = str(ROOT / "ppo_discrete.py")
    run_to_success(tmp_path, script, "--resume", "checkpoint.pt", "--total-timesteps", "768")
    assert load(tmp_path / "checkpoint.pt")["global_step"] == 768
    assert list(tmp_path.glob("events.out.tfevents.*")) and not (tmp_path / "runs").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (Linux's full disk)")
@pytest.mark.parametrize("iteration", [2, 4])
def test_a_full_disk_ends_the_run_with_its_cause_and_the_last_good_checkpoint(
    tmp_path, monkeypatch, iteration
):
    """From the checkpoint of `iteration` on, the disk is full (each temp file's writes go to
    /dev/full, which the kernel answers with ENOSPC): the run ends at once with the cause and
    file, the checkpoint before it stays whole, no temp file is left, and the line resumes from
    what is on disk, after training (4 of 4 iterations) as during it."""
    real_open, writes = open, []

    def open_full(path, mode="r", *args, **kwargs):
        if str(path).endswith("checkpoint.pt.tmp"):
            writes.append(path)
            if len(writes) >= iteration:
                real_open(path, mode).close()  # (the temp file exists, as a real one would)
                return real_open("/dev/full", "wb")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_full)
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED, "--checkpoint-every", "1"]
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, "ppo_discrete.py", *flags, "--total-timesteps", str(4 * BATCH))
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "runs").iterdir()
    when = "failed after training" if iteration == 4 else "training failed"
    assert exit_info.value.code == (
        f"error: {when}: no space left on device: runs/{run_dir.name}/checkpoint.pt "
        f"(traceback in runs/{run_dir.name}/traceback.txt); resume with: python {ROOT}/ppo_discrete.py "
        f"--resume runs/{run_dir.name} --env-id {flags[1]}"
    )
    assert load(run_dir / "checkpoint.pt")["iteration"] == iteration - 1
    assert not (run_dir / "checkpoint.pt.tmp").exists()


def test_a_working_directory_that_takes_no_run_directory_is_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, "ppo_discrete.py", *TINY)
    assert exit_info.value.code == (
        f"error: cannot make the run directory in {tmp_path}: Read-only file system"
    )


def test_a_gif_rendered_without_a_display_prints_its_path_and_no_error(saved_runs, monkeypatch):
    """On a headless machine SDL would print "error: XDG_RUNTIME_DIR is invalid ..." while
    rendering; the GIF of a saved agent goes beside it."""
    run_dir = saved_runs["ppo_continuous.py"]
    for variable in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(variable, raising=False)
    flags = ["--eval-only", run_dir.name, "--capture-gif", "--eval-episodes", "1"]
    process = python(run_dir.parent, str(ROOT / "ppo_continuous.py"), *flags)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and stderr == ""
    assert f"gif saved to {run_dir.name}/episode.gif" in stdout
    assert Image.open(run_dir / "episode.gif").n_frames > 100  # (PIL merges equal frames)


@pytest.mark.parametrize("script", SCRIPTS)
def test_saved_statistics_of_another_shape_do_not_load(script):
    module = import_script(script)
    saved = {"obs_rms": module.statistics_state(RunningMeanStd(shape=(5,)))}
    with pytest.raises(SystemExit) as exit_info:
        module.load_states(saved, {"obs_rms": RunningMeanStd(shape=(3,))})
    assert exit_info.value.code == (
        "error: the saved obs_rms does not fit this script's network: its shape is (5,)"
    )
    with pytest.raises(SystemExit) as exit_info:  # (a tampered file: a number for the mean)
        module.load_states({"obs_rms": {"mean": 5}}, {"obs_rms": RunningMeanStd(shape=(3,))})
    assert exit_info.value.code.startswith("error: the saved obs_rms does not fit")


def test_a_discrete_checkpoint_from_before_norm_reward_resumes(saved_runs, tmp_path, capsys):
    """ppo_discrete.py's checkpoints had no return_rms key (nor the normalization flags in args)
    before it took --norm-reward; without the flag there is nothing to load, so they resume."""
    checkpoint = load(saved_runs["ppo_discrete.py"] / "checkpoint.pt")
    del checkpoint["return_rms"]
    for flag in ("norm_obs", "norm_reward"):
        del checkpoint["args"][flag]
    checkpoint["args"]["total_timesteps"] *= 2  # one more iteration to train
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    run_in(tmp_path, "ppo_discrete.py", "--resume", str(run_dir))
    assert load(run_dir / "checkpoint.pt")["iteration"] == 2 * checkpoint["iteration"]
    assert "the saved run predates --norm-obs --norm-reward: they take their defaults" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_flags_of_any_type_tyro_takes_round_trip_through_resume_and_eval_only(tmp_path, script):
    """A copy of the script with three new flags, of types a researcher adds (a tuple, a Literal,
    an optional float, with the interval Part 2 asks of a number): a run saves them, and --resume
    and --eval-only read them back."""
    new_flags = [
        "    hidden_sizes: tuple[int, ...] = (64, 64)  # a tuple",
        '    activation: Literal["tanh", "relu"] = "tanh"  # a Literal',
        "    init_log_std: float | None = None  # an optional float",
    ]
    text = (ROOT / script).read_text()
    anchor = next(line for line in text.splitlines() if line.startswith("    eval_episodes: int"))
    text = text.replace(anchor, "\n".join([anchor, *new_flags]))
    anchor = next(line for line in text.splitlines() if line.startswith('INTERVALS |= {"eval_'))
    text = text.replace(anchor, f'{anchor}\nINTERVALS["init_log_std"] = "(-inf, inf)"')
    (tmp_path / script).write_text(text)
    copy = str(tmp_path / script)
    flags = ["--hidden-sizes", "32", "16", "--activation", "relu", "--init-log-std", "-0.5"]
    run_to_success(tmp_path, copy, *TINY, *flags, "--total-timesteps", "256", "--save-model")
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = load(run_dir / "checkpoint.pt")["args"]
    assert (saved["hidden_sizes"], saved["activation"], saved["init_log_std"]) == (
        (32, 16),
        "relu",
        -0.5,
    )
    run_to_success(tmp_path, copy, "--resume", str(run_dir), "--total-timesteps", "512")
    assert load(run_dir / "checkpoint.pt")["args"]["hidden_sizes"] == (32, 16)
    stdout = run_to_success(tmp_path, copy, "--eval-only", str(run_dir / "agent.pt"))
    assert "eval: mean return" in stdout


def test_two_signals_before_training_begins_end_the_run_cleanly(tmp_path):
    """Before the first iteration there is nothing to resume: two Ctrl-C exit 130, no traceback."""
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED, "--save-model"]
    process = python(tmp_path, str(ROOT / "ppo_discrete.py"), *flags)
    while not list(tmp_path.glob("runs/*/events.out.tfevents.*")):
        time.sleep(0.01)  # (the run's writer is made just before training's setup, ...)
    time.sleep(0.2)  # (... in which creating the optimizer imports torch._dynamo, a second or two)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    ended_by(process, signal.SIGINT)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "traceback.txt").exists()


def test_eval_only_of_a_linked_agent_leaves_the_link(saved_runs, tmp_path):
    """Evaluating writes no agent.pt, so a link named agent.pt is the user's, not a planted one."""
    (tmp_path / "agent.pt").symlink_to(saved_runs["ppo_discrete.py"] / "agent.pt")
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path / "work", "ppo_discrete.py", "--eval-only", str(tmp_path / "agent.pt"))
    assert exit_info.value.code == 0 and (tmp_path / "agent.pt").is_symlink()


def test_printed_commands_quote_paths_for_the_shell(saved_runs, tmp_path, capsys):
    run_dir = tmp_path / "my runs"
    run_dir.mkdir()
    torch.save(load(saved_runs["ppo_discrete.py"] / "checkpoint.pt"), run_dir / "checkpoint.pt")
    with pytest.raises(SystemExit):
        run_in(tmp_path / "work", "ppo_discrete.py", "--resume", str(run_dir))
    command = f"evaluate with: python {ROOT / 'ppo_discrete.py'} --eval-only '{run_dir}',"
    assert command in capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS)
def test_printed_commands_keep_paths_with_spaces_whole_in_a_shell(monkeypatch, script):
    """The resume and the evaluate command, pasted into a shell: the script's and the run's paths
    come back whole, spaces and all."""
    module = import_script(script)
    monkeypatch.setattr(sys, "argv", [f"my scripts/{script}"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = module.RunArgs()
    for iteration, flag in ((0, "--resume"), (args.iterations, "--eval-only")):
        command = module.next_command(args, "runs/a run", iteration).rsplit("with: ", 1)[1]
        assert shlex.split(command) == ["python", f"my scripts/{script}", flag, "runs/a run"]
