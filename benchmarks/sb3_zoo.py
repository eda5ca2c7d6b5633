"""Stable-Baselines3 PPO as a user of rl-baselines3-zoo would run it: the zoo's tuned settings and
budget for the env (rl_zoo3 2.9.2, hyperparams/ppo.yml), then the scripts' own evaluation.

    python benchmarks/sb3_zoo.py --env-id Pendulum-v1 --seed 1

What is not in the zoo's entry is SB3's default (e.g. batch_size 64 for Pendulum-v1, no
VecNormalize). The evaluation is the scripts' `evaluate` (10 deterministic episodes on a fresh env,
seeded past the training envs), printed in the same format: benchmarks/time_to_solve.py reads it.
"""

import argparse
import importlib
import sys
from pathlib import Path

import torch
from sb3_ppo import evaluate_sb3
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

# the scripts' directory instead of this one, whose mujoco.py would shadow the mujoco package
sys.path[0] = str(Path(__file__).resolve().parent.parent)


def linear(initial: float):
    """The zoo's `lin_X`: X at the start, decaying linearly to 0 (SB3 passes the remaining
    fraction of the run)."""
    return lambda remaining: remaining * initial


# rl_zoo3 2.9.2, hyperparams/ppo.yml (policy MlpPolicy, n_timesteps 1e5 for both)
ZOO = {
    "CartPole-v1": {
        "script": "ppo_discrete.py",
        "n_envs": 8,
        "n_timesteps": 100_000,
        "ppo": {
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": linear(0.001),
            "clip_range": linear(0.2),
        },
    },
    "Pendulum-v1": {
        "script": "ppo_continuous.py",
        "n_envs": 4,
        "n_timesteps": 100_000,
        "ppo": {
            "n_steps": 1024,
            "gae_lambda": 0.95,
            "gamma": 0.9,
            "n_epochs": 10,
            "ent_coef": 0.0,
            "learning_rate": 1e-3,
            "clip_range": 0.2,
            "use_sde": True,
            "sde_sample_freq": 4,
        },
    },
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", required=True, choices=ZOO)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=10)
    cli = parser.parse_args()
    zoo = ZOO[cli.env_id]
    torch.set_num_threads(1)  # as the scripts do: equal CPU use

    env = make_vec_env(cli.env_id, n_envs=zoo["n_envs"], seed=cli.seed)
    model = PPO("MlpPolicy", env, seed=cli.seed, device="cpu", **zoo["ppo"])
    model.learn(total_timesteps=zoo["n_timesteps"])
    script = importlib.import_module(zoo["script"].removesuffix(".py"))
    args = script.Args(env_id=cli.env_id, seed=cli.seed, num_envs=zoo["n_envs"])
    evaluate_sb3(model, script, args, cli.eval_episodes)
