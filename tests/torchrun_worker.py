"""`torchrun ... torchrun_worker.py SCRIPT ARGS...` runs SCRIPT ARGS as `torchrun ... SCRIPT ARGS`
would, then saves this rank's final parameters and normalization statistics to rank{RANK}.pt in the
working directory, for tests/test_torchrun.py to compare the ranks."""

import os
import runpy
import sys

import torch

script = sys.argv[1]
sys.argv = sys.argv[1:]
state = runpy.run_path(script)["main"]()  # the script's main(): its final training state
ranks_state = {name: state[name] for name in ("model", "obs_rms", "return_rms") if state[name]}
torch.save(ranks_state, f"rank{os.environ['RANK']}.pt")
