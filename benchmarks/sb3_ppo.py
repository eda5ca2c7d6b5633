"""Stable-Baselines3 PPO with exactly the hyperparameters of one of our scripts, for comparison.

    python benchmarks/sb3_ppo.py --script ppo_continuous.py --total-timesteps 50000

The hyperparameters are not restated here: they are the script's own `Args`, its defaults and
any of its flags given here (parsed by the script's tyro), so the two implementations cannot drift
apart. The network is SB3's MlpPolicy shaped as ours: separate actor and critic of
`--hidden-sizes` and `--activation` (64-64 tanh), orthogonal init, log-std starting at
`--init-logstd` (0); no gSDE. Images: SB3's Atari wrappers and CnnPolicy for ALE/ ids, our
MinAtar CNN for MinAtar/ ids (make_env_and_policy), the same MLPs on the CNN's features.
Evaluation follows the scripts' `evaluate` exactly (same seeds, same deterministic episodes) and
is printed in the same format, and --curve writes one JSON line per evaluation: {"step": ...,
"return": ...}. (Atari: SB3 trains with its automatic FIRE, which our evaluation env does not
press for it; time SB3's Atari training only.)
"""

import argparse
import importlib
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import torch
import tyro
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecNormalize
from torch import nn

# the scripts' directory instead of this one, whose mujoco.py would shadow the mujoco package
sys.path[0] = str(Path(__file__).resolve().parent.parent)


def evaluate_sb3(model: PPO, script, args, episodes: int) -> list[float]:
    """The script's `evaluate`, driving SB3's policy: the same fresh env and seeds."""
    env = model.get_env()
    agent = SB3Agent(model, env if isinstance(env, VecNormalize) else None)
    args = replace(args, eval_episodes=episodes)  # (evaluate seeds the env with seed + num_envs)
    # obs_rms None: SB3Agent normalizes observations itself, with SB3's statistics
    return script.evaluate(agent, args, None)


class SB3Agent:
    """Looks like the scripts' Agent to their `evaluate`: the deterministic action of SB3's policy."""

    def __init__(self, model: PPO, vec_normalize: VecNormalize | None) -> None:
        self.model, self.vec_normalize = model, vec_normalize

    def parameters(self) -> Iterator[torch.Tensor]:  # (evaluate finds the device in them)
        return self.model.policy.parameters()

    def get_deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.numpy()
        if self.vec_normalize is not None:
            obs = self.vec_normalize.normalize_obs(obs)
        action, _ = self.model.predict(obs, deterministic=True)
        return torch.as_tensor(action)


class EvaluateEvery(BaseCallback):
    """Evaluates every `every` rollouts (iterations), as the scripts' --eval-every does."""

    def __init__(self, script, args, every: int, curve: list) -> None:
        super().__init__()
        self.script, self.args, self.every, self.curve = script, args, every, curve
        self.rollouts = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        # The scripts evaluate after an iteration's update; SB3 updates after _on_rollout_end, so
        # the evaluation after update k runs when rollout k + 1 starts.
        if self.rollouts > 0 and self.rollouts % self.every == 0:
            returns = evaluate_sb3(self.model, self.script, self.args, self.args.eval_episodes)
            self.curve.append({"step": self.num_timesteps, "return": float(np.mean(returns))})
        self.rollouts += 1


class MinAtarCNN(BaseFeaturesExtractor):
    """The scripts' CNN for small frames (the MinAtar paper's): 16 3x3 filters, 128 units, on
    (H, W, C) bool frames, which SB3 passes as they are (it transposes only uint8 images)."""

    def __init__(self, observation_space: gym.spaces.Box) -> None:
        super().__init__(observation_space, features_dim=128)
        height, width, channels = observation_space.shape
        flat = 16 * (height - 2) * (width - 2)
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(flat, 128), nn.ReLU()
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations.permute(0, 3, 1, 2))


def make_env_and_policy(script: ModuleType, args: object) -> tuple[VecEnv, str, dict]:
    """SB3's vector env and policy for the script's env: MlpPolicy shaped as the scripts' MLPs;
    Atari (ALE/ ids): SB3's Atari wrappers (30 no-ops, frame skip 4 with max-pooling, 84x84 gray,
    a lost life ends an episode for training, FIRE at a reset, rewards clipped) over ALE's single
    frames, 4 stacked, and CnnPolicy (the Nature CNN); MinAtar: MinAtarCNN; images' CNN under the
    scripts' MLPs."""
    mlps = {  # the actor's and the critic's MLPs (on images: on the CNN's features)
        "net_arch": {"pi": list(args.hidden_sizes), "vf": list(args.hidden_sizes)},
        "activation_fn": {"tanh": nn.Tanh, "relu": nn.ReLU}[args.activation],
    }
    if args.env_id.startswith("ALE/"):
        gym.register_envs(importlib.import_module("ale_py"))
        kwargs = {"frameskip": 1}  # (SB3's wrapper skips frames; the id keeps sticky actions)
        env = make_atari_env(args.env_id, args.num_envs, args.seed, env_kwargs=kwargs)
        return VecFrameStack(env, 4), "CnnPolicy", mlps  # (torch's default threads, as ours)
    if args.env_id.startswith("MinAtar/"):
        importlib.import_module("minatar.gym").register_envs()
        env = make_vec_env(args.env_id, n_envs=args.num_envs, seed=args.seed)
        return env, "MlpPolicy", {"features_extractor_class": MinAtarCNN, **mlps}
    torch.set_num_threads(1)  # as the scripts do for vectors: equal CPU use
    policy_kwargs = {
        **mlps,
        "ortho_init": True,
        "log_std_init": getattr(args, "init_logstd", 0.0),  # (ppo_discrete.py has none)
    }
    return (
        make_vec_env(args.env_id, n_envs=args.num_envs, seed=args.seed),
        "MlpPolicy",
        policy_kwargs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", required=True, choices=["ppo_continuous.py", "ppo_discrete.py"])
    parser.add_argument("--eval-every", type=int, default=0, help="iterations, as in the scripts")
    parser.add_argument("--curve", help="a JSON-lines file for the evaluations")
    cli, script_flags = parser.parse_known_args()  # (the rest: the script's own flags)

    script = importlib.import_module(cli.script.removesuffix(".py"))
    args = tyro.cli(script.Args, args=script_flags)
    env, policy, policy_kwargs = make_env_and_policy(script, args)
    if args.norm_obs or args.norm_reward:
        env = VecNormalize(
            env,
            norm_obs=args.norm_obs,
            norm_reward=args.norm_reward,
            clip_obs=script.NORM_CLIP,
            clip_reward=script.NORM_CLIP,
            gamma=args.gamma,
        )
    lr = args.learning_rate
    model = PPO(
        policy,
        env,
        learning_rate=(lambda remaining: remaining * lr) if args.anneal_lr else lr,
        n_steps=args.num_steps,
        batch_size=args.num_envs * args.num_steps // args.num_minibatches,  # the minibatch
        n_epochs=args.update_epochs,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_coef,
        clip_range_vf=args.clip_coef if args.clip_vloss else None,
        normalize_advantage=args.norm_adv,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        target_kl=args.target_kl,
        policy_kwargs=policy_kwargs,
        seed=args.seed,
        device="cpu",
    )
    curve = []
    callback = EvaluateEvery(script, args, cli.eval_every, curve) if cli.eval_every else None
    # The scripts run total_timesteps // batch whole iterations; SB3 would round up.
    batch_size = args.num_envs * args.num_steps
    total_timesteps = args.total_timesteps // batch_size * batch_size
    model.learn(total_timesteps=total_timesteps, callback=callback)
    if args.eval_episodes > 0:
        returns = evaluate_sb3(model, script, args, args.eval_episodes)
        curve.append({"step": model.num_timesteps, "return": float(np.mean(returns))})
    if cli.curve:
        Path(cli.curve).write_text("".join(json.dumps(point) + "\n" for point in curve))


if __name__ == "__main__":
    main()
