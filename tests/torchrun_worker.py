"""`torchrun ... torchrun_worker.py SCRIPT ARGS...` runs SCRIPT ARGS as `torchrun ... SCRIPT ARGS`
would, then saves this rank's final parameters and normalization statistics to rank{RANK}.pt in the
working directory, for tests/test_torchrun.py to compare the ranks."""

import os
import runpy
import sys

import torch

script = sys.argv[1]
sys.argv = sys.argv[1:]
namespace = runpy.run_path(script, run_name="__main__")  # the script's globals when it ends
state = {"model": namespace["agent"].state_dict()}
for name in ("obs_rms", "return_rms"):  # ppo_continuous.py's, when they are on
    if namespace.get(name) is not None:
        state[name] = namespace[name].state_dict()
torch.save(state, f"rank{os.environ['RANK']}.pt")
