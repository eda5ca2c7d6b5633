"""Shared helpers: run a script in-process in a temp directory; read its TensorBoard scalars."""

import importlib
import runpy
import sys
from pathlib import Path
from types import ModuleType

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("ppo_continuous.py", "ppo_discrete.py")
sys.path.insert(0, str(ROOT))  # the scripts import as modules, e.g. `import ppo_continuous`


def import_script(script: str) -> ModuleType:
    """The script as a module: its functions and classes (importing it trains nothing)."""
    return importlib.import_module(script.removesuffix(".py"))


@pytest.fixture
def run_script(tmp_path, monkeypatch):
    """Runs a script's __main__ block in-process, as `python SCRIPT ARGS...` would, each call in a
    fresh directory under tmp_path where it writes runs/ and gifs/; returns the run directory."""
    calls = 0

    def run(script: str, *args: str) -> Path:
        nonlocal calls
        calls += 1
        workdir = tmp_path / f"call{calls}"
        workdir.mkdir()
        monkeypatch.chdir(workdir)
        monkeypatch.setattr(sys, "argv", [script, *args])
        runpy.run_path(str(ROOT / script), run_name="__main__")
        (run_dir,) = (workdir / "runs").iterdir()
        return run_dir

    return run


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every TensorBoard scalar of a run, by tag, in step order."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
