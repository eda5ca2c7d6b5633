"""Shared helpers: run a script in-process in a temp directory; read its TensorBoard scalars."""

import importlib
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("ppo_continuous.py", "ppo_discrete.py")
ACTION_KIND = {"ppo_continuous.py": "Box", "ppo_discrete.py": "Discrete"}  # of the toy envs
sys.path.insert(0, str(ROOT))  # the scripts import as modules, e.g. `import ppo_continuous`
# benchmarks/table.py, which the benchmarks import (appended: mujoco.py there is not the package)
sys.path.append(str(ROOT / "benchmarks"))


def import_script(script: str) -> ModuleType:
    """The script as a module: its functions and classes (importing it trains nothing)."""
    return importlib.import_module(script.removesuffix(".py"))


def run_in(workdir: Path, script: str, *args: str) -> Path:
    """Runs a script's __main__ block in-process, as `python SCRIPT ARGS...` in workdir would, and
    returns the run directory it wrote. Afterwards the working directory, sys.argv and the signal
    handlers the script installs are as before."""
    cwd, argv = Path.cwd(), sys.argv
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        os.chdir(workdir)
        sys.argv = [script, *args]
        runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        os.chdir(cwd)
        sys.argv = argv
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    (run_dir,) = (workdir / "runs").iterdir()
    return run_dir


def readme_code(containing: str) -> str:
    """The README's one ```python block that contains `containing`, as written."""
    blocks = [
        block.split("```")[0] for block in (ROOT / "README.md").read_text().split("```python\n")
    ]
    (code,) = [block for block in blocks[1:] if containing in block]
    return code


def stdout_of(command: list[str], cwd: Path) -> str:
    """What a command prints, run as a process in cwd (a failure raises)."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def run_script(tmp_path):
    """run_in, each call in a fresh directory under tmp_path (where it writes runs/)."""
    calls = 0

    def run(script: str, *args: str) -> Path:
        nonlocal calls
        calls += 1
        return run_in(tmp_path / f"call{calls}", script, *args)

    return run


def scalar_events(run_dir: Path) -> dict[str, list]:
    """Every TensorBoard scalar event (.step, .value) of a run, by tag, as TensorBoard shows them:
    in order, without the points a resumed run purged."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every TensorBoard scalar value of a run, by tag, in step order."""
    return {tag: [e.value for e in events] for tag, events in scalar_events(run_dir).items()}
