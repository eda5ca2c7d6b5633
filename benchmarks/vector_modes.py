"""Does --vector-mode async pay on this machine? Random-action stepping rates of the scripts' vector
env (make_envs: SAME_STEP autoreset, episode statistics) in sync and in async mode.

    pip install "gymnasium[mujoco]"
    python benchmarks/vector_modes.py
"""

import sys
import time
from pathlib import Path

# the scripts' directory instead of this one, whose mujoco.py would shadow the mujoco package
sys.path[0] = str(Path(__file__).resolve().parent.parent)
from ppo_continuous import make_envs

CASES = [("Pendulum-v1", 4), ("HalfCheetah-v5", 2), ("HalfCheetah-v5", 4), ("Hopper-v5", 4)]
STEPS = 2000  # vector steps per measurement


def steps_per_second(vector_mode: str, env_id: str, num_envs: int) -> float:
    envs = make_envs(env_id, num_envs, vector_mode)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(STEPS)]
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    elapsed = time.perf_counter() - start
    envs.close()
    return STEPS * num_envs / elapsed


if __name__ == "__main__":
    for env_id, num_envs in CASES:
        sync = steps_per_second("sync", env_id, num_envs)
        async_ = steps_per_second("async", env_id, num_envs)
        print(
            f"{env_id} x{num_envs}: sync {sync:.0f} steps/s, async {async_:.0f} steps/s, "
            f"async/sync {async_ / sync:.2f}"
        )
