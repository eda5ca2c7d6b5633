"""--track: a Weights & Biases run, written offline (WANDB_MODE=offline) and read back from its
.wandb file; and --track without wandb installed."""

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, SCRIPTS, scalar_events
from test_endings import python_with
from test_scripts import TINY

wandb_internal_pb2 = pytest.importorskip(
    "wandb.proto.wandb_internal_pb2", reason="needs wandb (pip install wandb)"
)

# Pendulum's episodes end at 200 steps, CartPole's sooner: two iterations log some of each.
FLAGS = ["--total-timesteps", "1024", "--num-envs", "2", "--num-steps", "256"]
FLAGS += ["--num-minibatches", "4", "--update-epochs", "2", "--eval-episodes", "1"]


def wandb_records(path) -> list:
    """The records of a .wandb file: its 7-byte header, then LevelDB-log blocks of 32 KiB whose
    chunks (a 7-byte header: crc, length, type; FULL=1, FIRST=2, MIDDLE=3, LAST=4) carry one
    protobuf Record each (or its parts)."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", "not a .wandb file"
    records, chunks, position = [], b"", 7
    while position + 7 <= len(data):
        if block - position % block < 7:  # (a block's tail too short for a header is padding)
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunks += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def offline_runs(workdir) -> list:
    """The offline W&B runs under workdir/wandb, in the order they were made, as (run record,
    history rows: {key: value}, config: {key: value})."""
    runs = []
    for run_dir in sorted((workdir / "wandb").glob("offline-run-*")):
        (path,) = run_dir.glob("run-*.wandb")
        run, history = None, []
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "run":
                run = record.run
            elif record.WhichOneof("record_type") == "history":
                items = record.history.item  # (a key "a/b" may come as nested_key ["a", "b"])
                history.append({key_of(item): json.loads(item.value_json) for item in items})
        config = {key_of(item): json.loads(item.value_json) for item in run.config.update}
        runs.append((run, history, config))
    return runs


def key_of(item) -> str:
    return item.key or "/".join(item.nested_key)


def python(workdir, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python ARGS...` in workdir, with these environment variables, to its end."""
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=workdir,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def track(workdir, script: str, *args: str) -> subprocess.CompletedProcess:
    """`python SCRIPT --track ARGS...` in workdir, W&B offline and its settings kept in workdir."""
    settings = str(workdir / ".wandb-settings")
    offline = {"WANDB_MODE": "offline", "WANDB_DIR": str(workdir)}
    offline |= {"WANDB_CONFIG_DIR": settings, "WANDB_CACHE_DIR": settings}
    return python(workdir, str(ROOT / script), "--track", *args, **offline)


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_offline_tracked_run_holds_the_scalars_config_and_gif(tmp_path, script):
    """The W&B run is named like the run directory, its config is the arguments, its history
    holds every TensorBoard scalar at its step (the same values), and the GIF is logged."""
    done = track(tmp_path, script, *FLAGS, "--capture-gif", "--wandb-project-name", "tests")
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    ((run, history, config),) = offline_runs(tmp_path)
    assert run.run_id == run.display_name == run_dir.name and run.project == "tests"
    assert config["env_id"] == ("Pendulum-v1" if "continuous" in script else "CartPole-v1")
    assert config["total_timesteps"] == 1024 and config["track"] is True
    logged = {}  # tag -> {step: value}, from the W&B history
    for row in history:  # (the rows synced from TensorBoard; the GIF's row has no step)
        for key, value in row.items() if "global_step" in row else ():
            if "/" in key and isinstance(value, float | int):
                logged.setdefault(key, {})[row["global_step"]] = value
    for tag, events in scalar_events(run_dir).items():
        assert logged[tag] == pytest.approx({e.step: e.value for e in events}, rel=1e-6), tag
    assert {"charts/episodic_return", "losses/value_loss", "eval/episodic_return"} <= set(logged)
    (gif,) = [row for row in history if "eval/episode/_type" in row]  # (flattened keys)
    assert gif["eval/episode/_type"] == "video-file" and gif["eval/episode/path"].endswith(".gif")


def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    """--resume writes a second offline run with the same id (`wandb sync` joins them) that
    holds the steps after the checkpoint."""
    script = "ppo_discrete.py"
    assert track(tmp_path, script, *FLAGS, "--total-timesteps", "512").returncode == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    resumed = track(tmp_path, script, "--resume", str(run_dir), "--total-timesteps", "1024")
    assert resumed.returncode == 0, resumed.stderr
    (first, _, _), (second, history, _) = offline_runs(tmp_path)
    assert first.run_id == second.run_id == run_dir.name
    steps = {row["global_step"] for row in history if "losses/value_loss" in row}
    assert steps == {1024}


def without_wandb(workdir, script: str, *args: str) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS...` where `import wandb` fails, as where it is not installed."""
    hide_wandb = "import runpy, sys; sys.modules['wandb'] = None; sys.argv = sys.argv[1:]; "
    hide_wandb += "runpy.run_path(sys.argv[0], run_name='__main__')"
    return python(workdir, "-c", hide_wandb, str(ROOT / script), *args)


@pytest.mark.parametrize("script", SCRIPTS)
def test_track_without_wandb_is_one_line_before_any_work(tmp_path, script):
    """wandb is optional: without it, --track exits with one line and makes no run directory."""
    done = without_wandb(tmp_path, script, "--track")
    assert done.returncode == 1 and not (tmp_path / "runs").exists()
    assert done.stderr == "error: --track needs wandb, which is not installed: pip install wandb\n"


def test_a_tracked_run_is_evaluated_without_wandb(tmp_path):
    """--eval-only tracks nothing: a run tracked elsewhere evaluates where wandb is not."""
    assert without_wandb(tmp_path, "ppo_discrete.py", *TINY).returncode == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["args"]["track"] = True
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    done = without_wandb(tmp_path, "ppo_discrete.py", "--eval-only", "checkpoint.pt")
    assert done.returncode == 0 and done.stderr == "", done.stderr


SLOW_INIT = """
import time, wandb
def slow_init(**settings):  # a start that waits (no network), and waits again as it unwinds
    try:
        time.sleep(60)
    finally:
        time.sleep(60)
wandb.init = slow_init
"""


def test_a_stop_signal_during_wandb_init_ends_the_run_at_once(tmp_path):
    """wandb.init can wait minutes (a timeout, a slow service) and take more to unwind: a
    SIGTERM then ends the process at once, exit 128 + 15."""
    process = python_with(SLOW_INIT, tmp_path, str(ROOT / "ppo_discrete.py"), "--track", *FLAGS)
    while not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()):
        time.sleep(0.1)  # (the run's directory comes just before wandb.init)
    time.sleep(1)
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM and time.monotonic() - start < 10
