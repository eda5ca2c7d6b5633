"""Toy environments for the tests. `--env-id toy_envs:ConstantRewardBox-v0` imports this module,
which registers them (gymnasium's `module:EnvId` form). Each comes with Box and Discrete actions."""

import os
import time
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np

TIME_LIMIT = 50


class ConstantRewardEnv(gym.Env):
    """Reward 1 every step and always the same observation (zeros): the MDP never terminates, only
    the TimeLimit wrapper truncates it, so the true value of every state is 1 / (1 - gamma)."""

    def __init__(
        self, continuous: bool, obs_shape: tuple[int, ...] = (2,), action_space=None, dtype=None
    ) -> None:
        low, high = {None: (-1.0, 1.0), np.uint8: (0, 255), np.bool_: (0, 1)}[dtype]
        dtype = dtype or np.float32  # (uint8 or bool: an image, for its shapes)
        self.observation_space = gym.spaces.Box(low, high, shape=obs_shape, dtype=dtype)
        if action_space is not None:
            self.action_space = action_space
        elif continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        else:
            self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype), {}

    def step(self, action):
        obs = np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype)
        return obs, 1.0, False, False, {}


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


class StrictActionEnv(ConstantRewardEnv):
    """ConstantRewardEnv that raises if an action is not in its action space (e.g. 0 for a
    Discrete(3, start=1)), and rewards the highest action (so a policy can learn to take it)."""

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        obs, _, terminated, truncated, info = super().step(action)
        return (
            obs,
            float(action == self.action_space.start + self.action_space.n - 1),
            terminated,
            truncated,
            info,
        )


class NaNFinalObservationEnv(ConstantRewardEnv):
    """ConstantRewardEnv whose last observation before the time limit is NaN: the truncated
    episode's final observation, which the vector env hands over in infos["final_obs"]."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.steps = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        if self.steps == TIME_LIMIT:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


class FailingEnv(ConstantRewardEnv):
    """ConstantRewardEnv whose code raises: in its constructor, its reset, or its FAIL_STEP-th
    step (after the first iterations of the tests' runs). `error`: what the step raises, or
    "os._exit" (its process ends at once, as in a simulator's crash)."""

    FAIL_STEP = 120

    def __init__(self, continuous: bool, fails_in: str, error: str = "RuntimeError") -> None:
        if fails_in == "constructor":
            raise RuntimeError("broken on purpose")
        super().__init__(continuous)
        self.fails_in, self.error, self.steps = fails_in, error, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.fails_in == "reset":
            raise RuntimeError("broken on purpose")
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.fails_in == "step" and self.steps == self.FAIL_STEP:
            if self.error == "os._exit":
                os._exit(3)
            raise {
                "RuntimeError": RuntimeError("broken on purpose"),
                "KeyboardInterrupt": KeyboardInterrupt(),
                "SystemExit": SystemExit(3),
                "SystemExitText": SystemExit("the env says goodbye"),
                "GeneratorExit": GeneratorExit(),
            }[self.error]
        return super().step(action)


class SlowStartEnv(ConstantRewardEnv):
    """Its constructor writes `starting` in the working directory, then takes 3 s."""

    def __init__(self, continuous: bool) -> None:
        Path("starting").touch()
        time.sleep(3)
        super().__init__(continuous)


class RenderingEnv(ConstantRewardEnv):
    """ConstantRewardEnv with rgb_array frames (each a shade darker) and no render_fps."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": None}

    def __init__(self, continuous: bool, render_mode: str | None = None) -> None:
        super().__init__(continuous)
        self.render_mode, self.frames = render_mode, 0

    def render(self):
        self.frames += 1
        return np.full((8, 8, 3), 255 - self.frames % 256, dtype=np.uint8)


class ZeroFpsEnv(RenderingEnv):
    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 0}


class BrokenRenderEnv(RenderingEnv):
    """Its render raises (it is called only to capture a GIF, after training)."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def render(self):
        raise RuntimeError("cannot render on purpose")


gym.register(  # actions 1, 2, 3
    "ShiftedActionsDiscrete-v0",
    entry_point=StrictActionEnv,
    max_episode_steps=TIME_LIMIT,
    kwargs={"continuous": False, "action_space": gym.spaces.Discrete(3, start=1)},
)
for name, action_space in (
    ("MatrixActionsBox-v0", gym.spaces.Box(-1.0, 1.0, shape=(2, 2))),
    ("IntegerActionsBox-v0", gym.spaces.Box(-3, 3, shape=(1,), dtype=np.int64)),
    ("HalfActionsBox-v0", gym.spaces.Box(-1, 1, shape=(1,), dtype=np.float16)),
):
    gym.register(
        name,
        entry_point=ConstantRewardEnv,
        max_episode_steps=TIME_LIMIT,
        kwargs={"continuous": True, "action_space": action_space},
    )

# Each kind's envs: name -> (class, its arguments but `continuous`), with a TimeLimit.
FAILING_PARTS = ("constructor", "reset", "step")
ERRORS = ("KeyboardInterrupt", "SystemExit", "SystemExitText", "GeneratorExit", "os._exit")
WITH_TIME_LIMIT = {
    "ConstantReward": (ConstantRewardEnv, {}),
    "ImageObservation": (ConstantRewardEnv, {"obs_shape": (4, 4, 3)}),  # (float: not an image)
    "MatrixObservation": (ConstantRewardEnv, {"obs_shape": (4, 4)}),
    "TinyImage": (ConstantRewardEnv, {"obs_shape": (2, 2, 1), "dtype": np.uint8}),
    "UintImage": (ConstantRewardEnv, {"obs_shape": (12, 12, 3), "dtype": np.uint8}),
    "SlowStart": (SlowStartEnv, {}),
    "NoFps": (RenderingEnv, {}),
    "ZeroFps": (ZeroFpsEnv, {}),
    "BrokenRender": (BrokenRenderEnv, {}),
    **{f"FailingIn{part.title()}": (FailingEnv, {"fails_in": part}) for part in FAILING_PARTS},
    **{  # (raised in its step)
        f"{error.replace('os._exit', 'ProcessExit')}InStep": (
            FailingEnv,
            {"fails_in": "step", "error": error},
        )
        for error in ERRORS
    },
    **{
        env_class.__name__.removesuffix("Env"): (env_class, {})
        for env_class in (NaNObservationEnv, HugeRewardEnv, NaNFinalObservationEnv)
    },
}
for kind, continuous in (("Box", True), ("Discrete", False)):
    for name, (env_class, kwargs) in WITH_TIME_LIMIT.items():
        gym.register(
            f"{name}{kind}-v0",
            entry_point=env_class,
            max_episode_steps=TIME_LIMIT,
            kwargs={"continuous": continuous, **kwargs},
        )
    # Without a TimeLimit: episodes never end, in training nor in evaluation (but for its cap).
    gym.register(
        f"NeverEnding{kind}-v0", entry_point=ConstantRewardEnv, kwargs={"continuous": continuous}
    )
