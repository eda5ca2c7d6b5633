"""Toy environments for the tests. `--env-id toy_envs:ConstantRewardBox-v0` imports this module,
which registers them (gymnasium's `module:EnvId` form). Each comes with Box and Discrete actions."""

import gymnasium as gym
import numpy as np

TIME_LIMIT = 50


class ConstantRewardEnv(gym.Env):
    """Reward 1 every step and always the same observation (zeros): the MDP never terminates, only
    the TimeLimit wrapper truncates it, so the true value of every state is 1 / (1 - gamma)."""

    def __init__(self, continuous: bool, obs_shape: tuple[int, ...] = (2,)) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=obs_shape, dtype=np.float32)
        if continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        else:
            self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, dtype=np.float32), 1.0, False, False, {}


for kind, continuous in (("Box", True), ("Discrete", False)):
    gym.register(
        f"ConstantReward{kind}-v0",
        entry_point=ConstantRewardEnv,
        max_episode_steps=TIME_LIMIT,
        kwargs={"continuous": continuous},
    )
    # An image-shaped observation, which the scripts' MLP cannot take.
    gym.register(
        f"ImageObservation{kind}-v0",
        entry_point=ConstantRewardEnv,
        max_episode_steps=TIME_LIMIT,
        kwargs={"continuous": continuous, "obs_shape": (4, 4, 3)},
    )
