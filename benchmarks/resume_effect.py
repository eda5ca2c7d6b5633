"""What a resume changes: each seed's default run of ppo_continuous.py, uninterrupted, against
the same run stopped by SIGTERM after an iteration and resumed (new episodes from there on).
Prints each pair's final deterministic evaluation and whether their parameters are equal.

    python benchmarks/resume_effect.py [--seeds 11 12 13] [--stop-after 8]
"""

import argparse
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SCRIPT = str(Path(__file__).resolve().parent.parent / "ppo_continuous.py")


def final_eval(stdout: str) -> str:
    return re.search(r"eval: mean return (\S+ ± \S+)", stdout)[1]


def script_stdout(workdir: Path, *args: str) -> str:
    """`python ppo_continuous.py ARGS...` in workdir, to its end: its stdout."""
    command = [sys.executable, SCRIPT, *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=True).stdout


def uninterrupted(workdir: Path, seed: int) -> tuple[str, dict]:
    stdout = script_stdout(workdir, "--seed", str(seed))
    (run_dir,) = (workdir / "runs").iterdir()
    return final_eval(stdout), torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def stopped_and_resumed(workdir: Path, seed: int, stop_after: int) -> tuple[str, int, dict]:
    """SIGTERM once `stop_after` progress lines are out (it stops at the next boundary)."""
    process = subprocess.Popen(
        [sys.executable, SCRIPT, "--seed", str(seed)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = 0
    while lines < stop_after:
        lines += process.stdout.readline().startswith("step ")
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate()
    stopped_at = int(re.search(r"stopped by SIGTERM after iteration (\d+)", stdout)[1])
    (run_dir,) = (workdir / "runs").iterdir()
    resumed = script_stdout(workdir, "--resume", str(run_dir))
    model = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    return final_eval(resumed), stopped_at, model


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--stop-after", type=int, default=8, help="progress lines before SIGTERM")
    args = parser.parse_args()
    print(
        "| seed | uninterrupted: eval | stopped after iteration | resumed: eval | same parameters |"
    )
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            whole, whole_model = uninterrupted(Path(a), seed)
            resumed, stopped_at, resumed_model = stopped_and_resumed(Path(b), seed, args.stop_after)
        same = all(torch.equal(whole_model[key], resumed_model[key]) for key in whole_model)
        print(f"| {seed} | {whole} | {stopped_at} | {resumed} | {'yes' if same else 'no'} |")
