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


class NaNObservationEnv(ConstantRewardEnv):
    """ConstantRewardEnv, but if it was seeded with an even seed, its NAN_STEP-th step (counted
    over all its episodes) returns a NaN observation."""

    NAN_STEP = 70

    def __init__(self, continuous: bool) -> None:
        super().__init__(continuous)
        self.steps, self.breaks = 0, False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.breaks = seed % 2 == 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        if self.breaks and self.steps == self.NAN_STEP:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


class HugeRewardEnv(ConstantRewardEnv):
    """Reward 1e38 every step: finite, but a float32 sum of a few of them is infinite."""

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, 1e38, terminated, truncated, info


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
    for env_class in (NaNObservationEnv, HugeRewardEnv):
        gym.register(
            f"{env_class.__name__.removesuffix('Env')}{kind}-v0",
            entry_point=env_class,
            max_episode_steps=TIME_LIMIT,
            kwargs={"continuous": continuous},
        )
