"""Where a run's wall time goes: one script, at its defaults or given flags, as a whole process
under cProfile, its time split into the parts issue 31 names, beside the wall of
`python -c "import torch, gymnasium"` (the floor a launch can reach).

    python benchmarks/breakdown.py --script ppo_discrete.py
    python benchmarks/breakdown.py --script ppo_continuous.py -- --total-timesteps 20000

Each part is the cumulative time of the functions named in PARTS (cProfile counts a recursive
call once): they overlap where one calls another (an import made inside the optimizer's first
construction counts in both), so they do not add up to the wall. The profiler slows Python-heavy
parts more than torch's kernels: read the parts against each other, and the wall of a run without
the profiler beside them.
"""

import argparse
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# part -> (a file name's ending, a function's name): the functions whose cumulative time it is
PARTS = {
    "imports": [("<frozen importlib._bootstrap>", "_find_and_load")],
    "optimizer's construction": [("torch/optim/adam.py", "__init__")],
    "forward passes": [("torch/nn/modules/module.py", "_wrapped_call_impl")],
    "backward passes": [("torch/_tensor.py", "backward")],
    "gradient clipping": [("torch/nn/utils/clip_grad.py", "clip_grad_norm_")],
    "optimizer steps": [("torch/optim/adam.py", "step")],
    "env steps (vector env)": [("gymnasium/vector/sync_vector_env.py", "step")],
}


def wall(command: list[str], workdir: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=workdir, check=True, capture_output=True)
    return time.perf_counter() - start


def parts(profile: str, script: str) -> dict[str, float]:
    """Each part's seconds (and the script's train()): the largest cumulative time among its
    functions' entries."""
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, ..., tottime, cumtime, ..)
    named = {**PARTS, "train()": [(script, "train")]}
    seconds = dict.fromkeys(named, 0.0)
    for (file, _, name), (_, _, _, cumtime, _) in stats.items():
        for part, functions in named.items():
            if any(file.endswith(end) and name == function for end, function in functions):
                seconds[part] = max(seconds[part], cumtime)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", default="ppo_discrete.py")
    parser.add_argument("flags", nargs="*", help="the script's flags, after --")
    cli = parser.parse_args()
    script = [str(ROOT / cli.script), *cli.flags]
    with tempfile.TemporaryDirectory() as workdir:
        floor = wall([sys.executable, "-c", "import torch, gymnasium"], workdir)
        run = wall([sys.executable, *script], workdir)
        profiled = wall([sys.executable, "-m", "cProfile", "-o", "run.prof", *script], workdir)
        seconds = parts(f"{workdir}/run.prof", cli.script)
    print(f"{cli.script} {' '.join(cli.flags)}".strip())
    print(f"  import torch, gymnasium: {floor:.2f} s")
    print(f"  the run: {run:.2f} s; under cProfile: {profiled:.2f} s, of which:")
    for part, part_seconds in seconds.items():
        print(f"    {part}: {part_seconds:.2f} s")


if __name__ == "__main__":
    main()
