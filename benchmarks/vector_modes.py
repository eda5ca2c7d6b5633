"""Does --vector-mode async pay on this machine? Random-action stepping rates of the scripts' vector
env (make_env, SAME_STEP autoreset) as SyncVectorEnv and as AsyncVectorEnv.

    pip install "gymnasium[mujoco]"
    python benchmarks/vector_modes.py
"""

import sys
import time
from pathlib import Path

import gymnasium as gym

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # to import the scripts
from ppo_continuous import make_env

CASES = [("Pendulum-v1", 4), ("HalfCheetah-v5", 2), ("HalfCheetah-v5", 4), ("Hopper-v5", 4)]
STEPS = 2000  # vector steps per measurement


def steps_per_second(vector_env: type[gym.vector.VectorEnv], env_id: str, num_envs: int) -> float:
    envs = vector_env(
        [make_env(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
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
        sync = steps_per_second(gym.vector.SyncVectorEnv, env_id, num_envs)
        async_ = steps_per_second(gym.vector.AsyncVectorEnv, env_id, num_envs)
        print(
            f"{env_id} x{num_envs}: sync {sync:.0f} steps/s, async {async_:.0f} steps/s, "
            f"async/sync {async_ / sync:.2f}"
        )
