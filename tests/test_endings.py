"""However a run ends (a signal, an exception or exit in the env's code, a killed process, a second
process on the run, an endless env, a platform without POSIX's APIs), it leaves a checkpoint that
resumes, or one `error:` line and nothing lost."""

import errno
import fcntl
import os
import re
import signal
import subprocess
import time
import types

import numpy as np
import pytest
import torch
from conftest import ROOT, SCRIPTS, import_script, run_in
from PIL import Image
from test_long_runs import (
    ALIGNED,
    BATCH,
    ended_by,
    load,
    python,
    run_to_success,
    toy_env,
    wait_for_progress_lines,
)
from torch.utils.tensorboard import SummaryWriter
from toy_envs import TIME_LIMIT

DISCRETE = str(ROOT / "ppo_discrete.py")
LONG = ["--total-timesteps", str(400 * BATCH)]  # (a run that is still training when stopped)


def only_run_dir(workdir):
    (run_dir,) = (workdir / "runs").iterdir()
    return run_dir


def python_with(prelude: str, cwd, script: str, *args: str, **popen_args) -> subprocess.Popen:
    """`python SCRIPT ARGS...` with `prelude` run first, in the same process."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = sys.argv[1:]\n"
    code += "runpy.run_path(sys.argv[0], run_name='__main__')"
    return python(cwd, "-c", code, script, *args, **popen_args)


def test_sighup_stops_a_run_like_sigterm_and_it_resumes(tmp_path):
    """A closed terminal (SIGHUP) stops the run at its next boundary: checkpoint, resume command,
    exit 128 + 1."""
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED, *LONG]
    # (SIGHUP as a terminal leaves it, even where these tests run under nohup, which ignores it)
    default_sighup = lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL)
    process = python(tmp_path, DISCRETE, *flags, preexec_fn=default_sighup)
    wait_for_progress_lines(process, 1)
    process.send_signal(signal.SIGHUP)
    last_line = ended_by(process, signal.SIGHUP).splitlines()[-1]
    match = re.fullmatch(r"stopped by SIGHUP after iteration (\d+); resume with: (.+)", last_line)
    run_dir = only_run_dir(tmp_path)
    assert match and load(run_dir / "checkpoint.pt")["iteration"] == int(match[1])
    more = str((int(match[1]) + 2) * BATCH)  # (two more iterations)
    assert run_to_success(tmp_path, *match[2].split()[1:], "--total-timesteps", more)


def test_a_run_started_with_sighup_ignored_keeps_ignoring_it(tmp_path):
    """Under nohup (SIGHUP ignored from the start) a closed terminal does not stop the run."""
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED, *LONG]
    ignore_sighup = lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)
    process = python(tmp_path, DISCRETE, *flags, preexec_fn=ignore_sighup)
    wait_for_progress_lines(process, 1)
    process.send_signal(signal.SIGHUP)
    wait_for_progress_lines(process, 3)  # (still training)
    process.send_signal(signal.SIGTERM)
    assert "stopped by SIGTERM after iteration" in ended_by(process, signal.SIGTERM)


def test_a_killed_run_without_checkpoint_flags_resumes_from_its_last_minute(tmp_path):
    """No --checkpoint-every: checkpoint.pt is written once the last one is a minute old. Time
    runs 100,000 times faster here, so every boundary is a minute after the last: a SIGKILL (no
    handler runs) leaves the boundary before it, which resumes."""
    fast_clock = "import time\nclock = time.monotonic\ntime.monotonic = lambda: 1e5 * clock()"
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED, *LONG]
    process = python_with(fast_clock, tmp_path, DISCRETE, *flags)
    wait_for_progress_lines(process, 3)
    process.kill()
    process.communicate(timeout=30)
    run_dir = only_run_dir(tmp_path)
    iteration = load(run_dir / "checkpoint.pt")["iteration"]
    assert iteration >= 2  # (the first boundaries: a minute after the start, and after that)
    resume = ["--resume", str(run_dir), *toy_env("ConstantReward", "ppo_discrete.py")]
    stdout = run_to_success(tmp_path, DISCRETE, *resume, "--total-timesteps", str(6 * BATCH))
    assert f"resumed after iteration {iteration}" in stdout


def test_a_second_process_on_a_running_run_is_refused_and_the_first_is_untouched(tmp_path):
    """While a run trains, --resume of it is one line; an --eval-only reads a whole checkpoint
    (and writes its GIF whole beside it: the run writes no GIF before its end, and each write
    replaces a file whole). The first run then stops and resumes as if alone, with no traceback
    in its directory."""
    flags = [*toy_env("NoFps", "ppo_discrete.py"), *ALIGNED, *LONG]
    first = python(tmp_path, DISCRETE, *flags, "--checkpoint-every", "1")
    wait_for_progress_lines(first, 2)
    run_dir = only_run_dir(tmp_path)
    confirm = toy_env("NoFps", "ppo_discrete.py")
    process = python(tmp_path, DISCRETE, "--resume", str(run_dir), *confirm)
    assert process.communicate(timeout=60)[1] == (
        f"error: {run_dir} is in use by another process (it holds {run_dir}/lock)\n"
    )
    assert process.returncode == 1
    evaluation = ["--eval-only", str(run_dir), "--eval-episodes", "1", "--capture-gif"]
    run_to_success(tmp_path, DISCRETE, *evaluation, *confirm)
    assert Image.open(run_dir / "episode.gif").n_frames == TIME_LIMIT
    (run_dir / "episode.gif").unlink()
    first.send_signal(signal.SIGTERM)
    ended_by(first, signal.SIGTERM)
    assert sorted(
        path.name for path in run_dir.iterdir() if not path.name.startswith("events")
    ) == [
        "checkpoint.pt",
        "lock",
    ]


def test_a_resume_that_read_a_checkpoint_a_run_then_rewrote_is_refused(tmp_path):
    """--resume reads the checkpoint before it can hold the lock; if the run that held it wrote
    it meanwhile (stopping, say), resuming the older state would undo that run's last
    iterations: it is refused under the lock, the newer checkpoint untouched."""
    flags = [*toy_env("SlowStart", "ppo_discrete.py"), *ALIGNED]
    run_to_success(tmp_path, DISCRETE, *flags, "--total-timesteps", str(2 * BATCH))
    run_dir = only_run_dir(tmp_path)
    older = load(run_dir / "checkpoint.pt")
    (tmp_path / "starting").unlink()
    resume = ["--resume", str(run_dir), "--env-id", flags[1], "--total-timesteps", str(4 * BATCH)]
    process = python(tmp_path, DISCRETE, *resume)  # (reads it, then makes its slow envs)
    while not (tmp_path / "starting").exists():
        time.sleep(0.1)
    newer = {**older, "global_step": older["global_step"] + 1}  # (as another run's last write)
    torch.save(newer, run_dir / "checkpoint.pt.new")
    os.replace(run_dir / "checkpoint.pt.new", run_dir / "checkpoint.pt")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and stderr == (
        f"error: a run wrote {run_dir}/checkpoint.pt as this one started: resume it again\n"
    )
    assert load(run_dir / "checkpoint.pt")["global_step"] == newer["global_step"]


def test_an_endless_env_is_evaluated_in_capped_episodes(tmp_path):
    """An env without a time limit never ends an episode: evaluation cuts each at 10,000 steps
    (reward 1 each)."""
    flags = [*toy_env("NeverEnding", "ppo_discrete.py"), "--num-envs", "2", "--num-steps", "64"]
    flags += ["--num-minibatches", "2", "--total-timesteps", "128", "--eval-episodes", "2"]
    stdout = run_to_success(tmp_path, DISCRETE, *flags)
    assert "eval: mean return 10000.0 ± 0.0 over 2 episodes" in stdout


@pytest.mark.parametrize("when", ["an evaluation in training", "the final evaluation"])
def test_a_signal_stops_an_evaluation_at_once(tmp_path, when):
    """A signal in any evaluation (here of an endless env: 50 episodes of 10,000 steps) ends the
    run at once, with what continues it: a resume, or an --eval-only once training is complete."""
    flags = [*toy_env("NeverEnding", "ppo_discrete.py"), "--num-envs", "2", "--num-steps", "64"]
    flags += ["--num-minibatches", "2", "--eval-episodes", "50"]
    if when == "the final evaluation":
        flags += ["--total-timesteps", "128"]
    else:
        flags += ["--total-timesteps", "1280", "--eval-every", "1"]
    process = python(tmp_path, DISCRETE, *flags)
    wait_for_progress_lines(process, 1)
    time.sleep(1)  # (in the evaluation)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    last_line = ended_by(process, signal.SIGTERM, timeout=30).splitlines()[-1]
    assert time.monotonic() - started < 10
    next_step = "training is complete" if when == "the final evaluation" else "resume with"
    assert last_line.startswith(f"stopped by SIGTERM after iteration 1; {next_step}")


def test_a_gif_of_an_env_without_a_frame_rate_is_written_at_30_fps(tmp_path):
    flags = [*toy_env("NoFps", "ppo_discrete.py"), *ALIGNED, "--total-timesteps", str(BATCH)]
    run_to_success(tmp_path, DISCRETE, *flags, "--capture-gif", "--eval-episodes", "1")
    gif = Image.open(only_run_dir(tmp_path) / "episode.gif")
    frame_ms = pytest.approx(1000 / 30, abs=5)  # (a GIF keeps it in units of 10 ms)
    assert gif.n_frames == TIME_LIMIT and gif.info["duration"] == frame_ms


def test_a_gif_of_an_env_with_a_zero_frame_rate_is_refused_before_training(tmp_path):
    """gymnasium's env checker would refuse it at the first frame: after training."""
    flags = [*toy_env("ZeroFps", "ppo_discrete.py"), *ALIGNED, "--capture-gif"]
    process = python(tmp_path, DISCRETE, *flags, "--eval-episodes", "1")
    assert process.communicate(timeout=60)[1] == (
        f"error: --capture-gif: {flags[1]} has render_fps 0, not a frame rate (None: 30)\n"
    )
    assert process.returncode == 1 and not (tmp_path / "runs").exists()


def test_a_failure_after_the_last_iteration_is_named_and_the_run_is_kept(tmp_path):
    """Training completes; then the GIF's render fails: the line says so, the trained agent and
    checkpoint are saved, and the command evaluates the run."""
    flags = [*toy_env("BrokenRender", "ppo_discrete.py"), *ALIGNED, "--save-model"]
    flags += ["--total-timesteps", str(2 * BATCH), "--capture-gif", "--eval-episodes", "1"]
    process = python(tmp_path, DISCRETE, *flags)
    _, stderr = process.communicate(timeout=60)
    run_dir = only_run_dir(tmp_path)
    assert process.returncode == 1 and stderr == (
        "error: failed after training: RuntimeError: cannot render on purpose (traceback in "
        f"runs/{run_dir.name}/traceback.txt); training is complete; evaluate with: python "
        f"{DISCRETE} --eval-only runs/{run_dir.name} --env-id {flags[1]}\n"
    )
    assert load(run_dir / "checkpoint.pt")["iteration"] == 2 and (run_dir / "agent.pt").exists()


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "error", ["KeyboardInterrupt", "SystemExit", "SystemExitText", "GeneratorExit", "ProcessExit"]
)
def test_an_env_that_interrupts_or_exits_leaves_a_run_that_resumes(tmp_path, script, error):
    """The env's step raises KeyboardInterrupt, SystemExit(3) or SystemExit("text"), a
    BaseException, or its async worker process ends (os._exit) at its 120th step (iteration 3):
    the last line on stderr is the error, with the command that resumes the run from iteration
    2; the resumed run completes."""
    flags = [*toy_env(f"{error}InStep", script), *ALIGNED, "--total-timesteps", str(8 * BATCH)]
    if error == "ProcessExit":
        flags += ["--vector-mode", "async"]
    process = python(tmp_path, str(ROOT / script), *flags)
    _, stderr = process.communicate(timeout=60)
    run_dir = only_run_dir(tmp_path)
    last_line = stderr.splitlines()[-1]
    assert process.returncode == 1 and last_line.startswith("error: training failed: ")
    assert last_line.endswith(
        f"; resume with: python {ROOT / script} --resume runs/{run_dir.name} --env-id {flags[1]}"
    )
    assert load(run_dir / "checkpoint.pt")["iteration"] == 2
    resume = ["--resume", str(run_dir), "--env-id", flags[1], "--total-timesteps", str(4 * BATCH)]
    run_to_success(tmp_path, str(ROOT / script), *resume)  # (2 iterations: 100 steps of 120)


def test_under_torchrun_each_rank_keeps_its_own_traceback(tmp_path):
    """Rank 1's env returns NaN (it is seeded even); rank 0 then fails waiting for it. Each
    writes its own traceback file: the real cause is kept."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    flags = [*toy_env("NaNObservation", "ppo_discrete.py"), *ALIGNED, *LONG]
    process = python(tmp_path, *torchrun, DISCRETE, *flags)
    process.communicate(timeout=120)
    run_dir = only_run_dir(tmp_path)
    assert "FloatingPointError" in (run_dir / "traceback_1.txt").read_text()
    assert not (run_dir / "traceback.txt").exists()


# Windows and its Python lack what POSIX has: signal masks, SIGHUP, fcntl. This stands in for
# msvcrt's lock (the scripts' Windows branch) with fcntl's lockf, taken before fcntl goes.
WITHOUT_POSIX = """
import subprocess, gymnasium, torch, torch.utils.tensorboard, tyro  # (subprocess: msvcrt = Windows)
import fcntl, signal, sys, types
lockf, exclusive = fcntl.lockf, fcntl.LOCK_EX | fcntl.LOCK_NB
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_NBLCK = 2
msvcrt.locking = lambda fd, mode, size: lockf(fd, exclusive, size)
sys.modules["msvcrt"], sys.modules["fcntl"] = msvcrt, None
for name in ("pthread_sigmask", "SIG_BLOCK", "SIG_SETMASK", "SIGHUP"):
    delattr(signal, name)
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_without_posix_apis_a_run_trains_stops_resumes_and_evaluates(tmp_path, script):
    flags = [*toy_env("ConstantReward", script), *ALIGNED, *LONG]
    process = python_with(WITHOUT_POSIX, tmp_path, str(ROOT / script), *flags)
    wait_for_progress_lines(process, 1)
    process.send_signal(signal.SIGTERM)
    ended_by(process, signal.SIGTERM)
    run_dir = only_run_dir(tmp_path)
    with open(run_dir / "lock", "a") as lock:  # a second process on the run: refused
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        confirm = toy_env("ConstantReward", script)
        resume = ["--resume", str(run_dir), *confirm]
        refused = python_with(WITHOUT_POSIX, tmp_path, str(ROOT / script), *resume)
        _, stderr = refused.communicate(timeout=60)
        assert refused.returncode == 1 and "is in use by another process" in stderr
    resume = ["--resume", str(run_dir), "--total-timesteps", str(20 * BATCH)]
    for args in (resume, ["--eval-only", str(run_dir), "--eval-episodes", "1"]):
        process = python_with(WITHOUT_POSIX, tmp_path, str(ROOT / script), *args, *confirm)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert load(run_dir / "checkpoint.pt")["global_step"] == 20 * BATCH


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_filesystem_without_locks_is_named_and_can_be_opted_out_of(tmp_path, monkeypatch, script):
    """Where flock fails for want of locks (ENOLCK: some network filesystems), the start is one
    line that says so and how to go on, and leaves no run directory behind; PPO_NO_LOCK=1 then
    trains (unlocked)."""

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    flags = [*toy_env("ConstantReward", script), *ALIGNED, "--total-timesteps", str(BATCH)]
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, script, *flags)
    assert re.fullmatch(
        r"error: cannot lock runs/[^/]+/lock: no locks available \(no locks here\? PPO_NO_LOCK=1\)",
        exit_info.value.code,
    )
    assert list((tmp_path / "runs").iterdir()) == []  # (a refused start leaves nothing)
    monkeypatch.setenv("PPO_NO_LOCK", "1")
    run_dir = run_in(tmp_path, script, *flags)
    assert load(run_dir / "checkpoint.pt")["iteration"] == 1


def test_a_tensorboard_writer_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    """The writer's event file cannot be made (a full or read-only disk): one line, naming the
    cause and the file, and no traceback on the screen."""

    class ReadOnlyWriter(SummaryWriter):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", "runs/x/events.out.tfevents")

    monkeypatch.setattr("torch.utils.tensorboard.SummaryWriter", ReadOnlyWriter)
    flags = [*toy_env("ConstantReward", "ppo_discrete.py"), *ALIGNED]
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, "ppo_discrete.py", *flags, "--total-timesteps", str(BATCH))
    assert exit_info.value.code.startswith(
        "error: training failed: permission denied: runs/x/events.out.tfevents"
    )


def test_a_gif_keeps_at_most_gif_bytes_of_frames(tmp_path, monkeypatch):
    """--capture-gif of a long episode: the frames kept stop at GIF_BYTES (the episode's start),
    and the GIF holds those."""
    module = import_script("ppo_discrete.py")
    shades = iter(range(1000))  # (frames of 1,800 bytes, each a shade lighter: none merged)
    render = lambda: np.full((20, 30, 3), next(shades) % 256, dtype=np.uint8)
    monkeypatch.setattr(module, "GIF_BYTES", 10 * 1800)
    env = types.SimpleNamespace(render=render, metadata={"render_fps": 50})
    gif = module.Gif(str(tmp_path / "episode.gif"))
    for _ in range(1000):
        gif.add(env)
    assert len(gif.frames) == 10
    gif.write()
    written = Image.open(tmp_path / "episode.gif")
    assert written.n_frames == 10 and written.info["duration"] == 20
