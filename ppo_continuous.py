"""Proximal Policy Optimization for continuous (Box) action spaces, in one file.

Part 1 is PPO: arguments, networks, §4 GAE, §3 clipped objective, `train` (the §9 loop). Part 2 is
what long runs and many processes need. §N: the README's "The math, section by section".

    python ppo_continuous.py --env-id Pendulum-v1
    torchrun --standalone --nproc_per_node 2 ppo_continuous.py --env-id Pendulum-v1  # 2 processes
"""

import copy
import itertools
import math
import os
import pickle
import random
import signal
import sys
import time
import traceback
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import BinaryIO, Literal, get_args, get_origin

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import tyro
from PIL import Image
from torch import nn
from torch.utils.tensorboard import SummaryWriter

SCRIPT = os.path.basename(__file__)


@dataclass
class Args:
    env_id: str = "Pendulum-v1"
    """the environment: a registered id, or `module:EnvId` (imports module, which registers it)"""
    total_timesteps: int = 50_000
    """total environment steps of the experiment, summed over all environments (in whole batches:
    a remainder is cut); with --resume, a new budget for the run"""
    learning_rate: float = 3e-3
    """the learning rate of the optimizer (§8.4)"""
    num_envs: int = 4
    """the number of parallel environments (§7), in all (under torchrun, K processes run N/K each)"""
    num_steps: int = 512
    """the number of steps to run in each environment per policy rollout (§7.2 T)"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to zero over the run (§8.4); a run extended
    by --resume --total-timesteps follows the longer run's line, so the rate steps up there"""
    gamma: float = 0.95
    """the discount factor gamma (§4.2)"""
    gae_lambda: float = 0.95
    """the lambda of generalized advantage estimation (§4.3)"""
    num_minibatches: int = 8
    """the number of minibatches each rollout is split into per epoch (§9.1)"""
    update_epochs: int = 10
    """the number of passes over each rollout (§9.2)"""
    norm_adv: bool = True
    """if toggled, advantages are normalized per minibatch (§8.6)"""
    clip_coef: float = 0.2
    """the clipping coefficient epsilon of the surrogate objective and value loss (§3.1, §5.2)"""
    clip_vloss: bool = False
    """if toggled, the value loss is clipped (§5.2)"""
    ent_coef: float = 0.01
    """the entropy coefficient c2 (§6)"""
    vf_coef: float = 0.5
    """the value-loss coefficient c1 (§6)"""
    max_grad_norm: float = 0.5
    """the maximum norm of the gradient (§8.4)"""
    target_kl: float | None = None
    """if set, an iteration's update stops early once the approximate KL (§10.1) exceeds it"""
    norm_obs: bool = False
    """if toggled, observations are normalized by running mean and variance (§8.5)"""
    norm_reward: bool = True
    """if toggled, rewards are divided by the running std of discounted returns (§8.5)"""
    state_dependent_std: bool = False
    """if toggled, the policy's log-std is a network output instead of a learned vector (§8.3)"""

    # The run: its name, randomness, hardware, outputs, and long runs (Part 2).
    exp_name: str = SCRIPT.removesuffix(".py")
    """the name of this experiment (part of the run directory's name)"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch and the environments)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, run the networks on the GPU if there is one (tiny MLPs are faster on the CPU)"""
    vector_mode: Literal["sync", "async"] = "sync"
    """sync steps the envs one after another in this process; async steps each in a process of its
    own, which pays only if an env step costs far more than passing its data (see the README)"""
    save_model: bool = False
    """if toggled, save the agent and its normalization statistics to `runs/{run_name}/agent.pt`"""
    capture_gif: bool = False
    """if toggled, write the first deterministic evaluation episode to `runs/{run_name}/episode.gif`
    (with --eval-only: `episode.gif` beside the saved agent)"""
    eval_episodes: int = 10
    """the number of deterministic evaluation episodes after training"""
    eval_every: int = 0
    """also evaluate every N iterations during training (0: only after it): learning curves"""
    checkpoint_every: int = 0
    """write `runs/{run_name}/checkpoint.pt` every N iterations (it is always written at the end)"""
    resume: str | None = None
    """a checkpoint.pt or its run directory: continue that run, with its saved arguments (and
    --total-timesteps, if given)"""
    eval_only: str | None = None
    """an agent.pt or checkpoint.pt (or its run directory): evaluate it as its run did, and exit
    (--eval-episodes, --capture-gif and --cuda, if given, replace the run's)"""


# Normalized observations and rewards are clipped to ±NORM_CLIP, as in SB3's VecNormalize.
NORM_CLIP = 10.0
EPSILON = 1e-8  # keeps divisions by a standard deviation finite
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)  # the Normal density's log normalizer, per dimension


def make_env(env_id: str) -> Callable[[], gym.Env]:
    def thunk() -> gym.Env:
        env = gym.make(env_id)
        # Records the raw (unnormalized) return and length of each episode in the step's info.
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


def make_envs(env_id: str, num_envs: int, vector_mode: str) -> gym.vector.VectorEnv:
    """§7 num_envs copies of env_id, stepped as one. SAME_STEP autoreset: a step that ends an
    episode returns the next episode's first observation, and the true last one in
    infos["final_obs"]; no step spans two episodes. Both vector env classes work the same way."""
    vector_env = gym.vector.AsyncVectorEnv if vector_mode == "async" else gym.vector.SyncVectorEnv
    return vector_env(
        [make_env(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """§8.2 orthogonal initialization with gain `std` and a constant bias."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim: int, out_dim: int, out_std: float) -> nn.Sequential:
    """§8.1 a 64-64 tanh MLP; §8.2 hidden layers get gain √2, the output layer gain out_std."""
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, 64)),
        nn.Tanh(),
        layer_init(nn.Linear(64, 64)),
        nn.Tanh(),
        layer_init(nn.Linear(64, out_dim), std=out_std),
    )


class Agent(nn.Module):
    """§8.1 separate actor and critic networks; §8.3 a diagonal Normal policy."""

    def __init__(self, envs: gym.vector.VectorEnv, state_dependent_std: bool = False) -> None:
        super().__init__()
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        action_dim = int(np.prod(envs.single_action_space.shape))
        self.critic = mlp(obs_dim, 1, out_std=1.0)
        if state_dependent_std:
            # The actor outputs the mean and the log-std of each action dimension.
            self.actor = mlp(obs_dim, 2 * action_dim, out_std=0.01)
            self.actor_logstd = None
        else:
            self.actor = mlp(obs_dim, action_dim, out_std=0.01)
            self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)  # (batch, 1)

    def get_mean_and_logstd(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """§8.3 the Normal policy's mean and log-std, (batch, action_dim) each."""
        if self.actor_logstd is None:
            action_mean, action_logstd = self.actor(x).chunk(2, dim=-1)
        else:
            action_mean = self.actor(x)
            action_logstd = self.actor_logstd.expand_as(action_mean)
        return action_mean, action_logstd

    def get_deterministic_action(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_mean_and_logstd(x)[0]  # the mean, (batch, action_dim)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """§8.3 samples an action (or takes the given one); returns it with its log-prob, the
        policy's entropy and the value, (batch,) each but the action. The Normal's formulas are
        written out: a torch.distributions.Normal object costs more to build than the math."""
        action_mean, action_logstd = self.get_mean_and_logstd(x)
        action_std = action_logstd.exp()
        if action is None:
            action = action_mean + action_std * torch.randn_like(action_mean)
        # log N(a; μ, σ) = -(a - μ)² / 2σ² - log σ - log √(2π), and H = 1/2 + log σ + log √(2π),
        # summed over the action dimensions, which are independent.
        z = (action - action_mean) / action_std
        log_prob = (-0.5 * z**2 - action_logstd - LOG_SQRT_2PI).sum(-1)  # (batch,)
        entropy = (0.5 + action_logstd + LOG_SQRT_2PI).sum(-1)  # (batch,)
        return action, log_prob, entropy, self.critic(x)


class RunningMeanStd:
    """§8.5 running mean and variance of a stream of batches (Chan et al.'s parallel update)."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = EPSILON

    def update(self, batch: np.ndarray) -> None:
        """Merges a batch, (batch_size, *shape), into the statistics."""
        self.merge(batch.mean(axis=0), batch.var(axis=0), batch.shape[0])

    def merge(self, mean: np.ndarray, var: np.ndarray, count: float) -> None:
        """Merges the statistics (mean, variance, count) of more data into these."""
        delta = mean - self.mean
        total = self.count + count
        self.mean = self.mean + delta * count / total
        # sum of squared deviations of both parts, plus the shift between their means
        m2 = self.var * self.count + var * count
        m2 = m2 + delta**2 * self.count * count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, torch.Tensor]:
        names = ("mean", "var", "count")
        return {name: torch.tensor(getattr(self, name), dtype=torch.float64) for name in names}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean, self.var = state["mean"].numpy(), state["var"].numpy()
        self.count = state["count"].item()


def normalize_obs(
    obs: np.ndarray, rms: RunningMeanStd | None, device: torch.device
) -> torch.Tensor:
    """§8.5 the agent's input: (obs - mean) / std clipped to ±NORM_CLIP (if rms), float32."""
    if rms is not None:
        obs = np.clip((obs - rms.mean) / np.sqrt(rms.var + EPSILON), -NORM_CLIP, NORM_CLIP)
    return torch.tensor(obs, dtype=torch.float32, device=device)


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminations: np.ndarray,
    truncations: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> np.ndarray:
    """§4.2 generalized advantage estimation, backwards in time, for every env at once (§7.2).
    All inputs and the advantages returned are (num_steps, num_envs). values[t] = V(s_t);
    next_values[t] = V(s_{t+1}) of the state that really followed step t (§7.4: for a truncated
    episode, its final observation). The design's single "done" (§4.2) is split in two:
    - terminations[t]: s_{t+1} is terminal, its value is zero, so δ_t does not bootstrap;
    - terminations[t] or truncations[t]: the episode ended, so the sum over future δ stops at t.
    """
    episode_ends = np.maximum(terminations, truncations)
    # δ_t = r_t + γ V(s_{t+1}) - V(s_t), with V(terminal) = 0
    deltas = rewards + gamma * next_values * (1.0 - terminations) - values
    advantages = np.zeros_like(rewards)
    last_advantage = np.zeros_like(rewards[0])  # (num_envs,)
    for t in reversed(range(rewards.shape[0])):
        # Â_t = δ_t + γλ (1 - done_t) Â_{t+1}
        last_advantage = deltas[t] + gamma * gae_lambda * (1.0 - episode_ends[t]) * last_advantage
        advantages[t] = last_advantage
    return advantages


def clipped_surrogate_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float
) -> torch.Tensor:
    """§3.1 -L^CLIP: the negated mean of min(r Â, clip(r, 1-ε, 1+ε) Â), to be minimized."""
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_coef: float | None,
) -> torch.Tensor:
    """§5.1 L^VF = mean((V - R̂)²); given clip_coef, §5.2: max of unclipped and clipped errors."""
    unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    return torch.max(unclipped, (clipped_values - returns) ** 2).mean()


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """§8.6 a minibatch's advantages, (minibatch_size,), shifted and scaled to mean 0 and std 1 by
    the statistics of the whole minibatch (under torchrun, of all ranks' parts of it)."""
    all_advantages = gather_ranks(advantages)  # one process: advantages itself
    return (advantages - all_advantages.mean()) / (all_advantages.std() + EPSILON)


class Adam:
    """§8.4 Adam (Kingma & Ba, 2015), as torch.optim.Adam computes it, with its state_dict layout,
    written out: creating a torch.optim optimizer imports torch._dynamo, a second of every run.
    It updates all parameters as one vector: a few operations per step, not a few per tensor."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, eps: float = 1e-8) -> None:
        self.params, self.lr, self.eps = list(params), lr, eps
        self.beta1, self.beta2 = 0.9, 0.999  # the decay rates of the moment estimates
        self.steps = 0
        self.sizes = [param.numel() for param in self.params]
        self.m = self.params[0].new_zeros(sum(self.sizes))  # first moments, of g (num_params,)
        self.v = self.params[0].new_zeros(sum(self.sizes))  # second moments, of g²

    @torch.no_grad()
    def step(self) -> None:
        """θ ← θ - lr m̂ / (√v̂ + ε), where m̂ = m / (1 - β1^t) and v̂ = v / (1 - β2^t) undo the
        moments' start at 0."""
        self.steps += 1
        m_correction, v_correction = 1 - self.beta1**self.steps, 1 - self.beta2**self.steps
        grad = torch.cat([param.grad.flatten() for param in self.params])  # g, (num_params,)
        theta = torch.cat([param.flatten() for param in self.params])  # θ, (num_params,)
        self.m.lerp_(grad, 1 - self.beta1)  # m ← β1 m + (1 - β1) g
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)  # v ← β2 v + (1 - β2) g²
        denominator = (self.v.sqrt() / v_correction**0.5).add_(self.eps)  # √v̂ + ε
        theta.addcdiv_(self.m, denominator, value=-self.lr / m_correction)
        for param, value in zip(self.params, self.per_parameter(theta)):
            param.copy_(value)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def per_parameter(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """A (num_params,) vector's parts, shaped as the parameters (views into it)."""
        parts = vector.split(self.sizes)
        return [part.view_as(param) for part, param in zip(parts, self.params)]

    def state_dict(self) -> dict:
        state = {}  # per parameter, as torch.optim.Adam keeps it
        moments = zip(self.per_parameter(self.m), self.per_parameter(self.v))
        for i, (m, v) in enumerate(moments):
            state[i] = {"step": torch.tensor(float(self.steps)), "exp_avg": m, "exp_avg_sq": v}
        group = {"lr": self.lr, "betas": (self.beta1, self.beta2), "eps": self.eps}
        return {
            "state": state,
            "param_groups": [{**group, "weight_decay": 0, "params": list(state)}],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        moments = zip(self.per_parameter(self.m), self.per_parameter(self.v))
        for i, (m, v) in enumerate(moments):
            if i in state_dict["state"]:  # (torch.optim.Adam's state is empty before a step)
                saved = state_dict["state"][i]
                if saved["exp_avg"].shape != m.shape or saved["exp_avg_sq"].shape != v.shape:
                    raise ValueError(f"moments of shape {tuple(saved['exp_avg'].shape)}")
                m.copy_(saved["exp_avg"])
                v.copy_(saved["exp_avg_sq"])
                self.steps = int(saved["step"])
        group = state_dict["param_groups"][0]
        self.lr, self.eps = group["lr"], group["eps"]


def iterations_of(args: Args) -> int:
    """§9 the iterations of a run: the whole batches of num_envs * num_steps in total_timesteps."""
    return args.total_timesteps // (args.num_envs * args.num_steps)


def train(
    args: Args, envs: gym.vector.VectorEnv, device: torch.device, run_dir: str, saved: dict | None
) -> dict:
    """§9 PPO for args.total_timesteps env steps, logged to TensorBoard in run_dir; then saves and
    evaluates the agent. envs are this process's (under torchrun, num_envs / K of them); `saved`
    is the checkpoint that --resume continues, or None. Returns the final training state."""
    rank = dist.get_rank() if dist.is_initialized() else 0  # torchrun's process number
    num_envs = envs.num_envs
    batch_size = num_envs * args.num_steps  # this process's part of each batch
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = iterations_of(args)
    total_steps = num_iterations * args.num_envs * args.num_steps  # all ranks', as the run takes
    observation_space, action_space = envs.single_observation_space, envs.single_action_space

    # Rank r seeds with seed + r: its action noise and minibatch order are its own.
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    agent = Agent(envs, args.state_dependent_std).to(device)
    optimizer = Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)  # §8.4
    obs_rms = RunningMeanStd(observation_space.shape) if args.norm_obs else None  # §8.5
    return_rms = RunningMeanStd() if args.norm_reward else None
    trained = {"model": agent, "optimizer": optimizer, "obs_rms": obs_rms, "return_rms": return_rms}
    checkpointer = Checkpointer(args, envs, run_dir, trained)  # Part 2: checkpoints, signals
    start_iteration, global_step = checkpointer.resume(saved)  # a new run (None): 0, 0
    announce_run(args, run_dir, start_iteration, num_iterations)  # Part 2: where, how many steps
    broadcast_parameters(agent)  # Part 2: under torchrun, all ranks start from rank 0's
    writer = tensorboard_writer(args, run_dir, saved) if rank == 0 else None  # rank 0 alone logs

    # §7.2 rollout storage of this process's envs, (num_steps, num_envs, ...). numpy, like the
    # envs' data: a row per step costs far less than with tensors; the batch becomes tensors once.
    obs = np.zeros((args.num_steps, num_envs) + observation_space.shape, dtype=np.float32)
    actions = np.zeros((args.num_steps, num_envs) + action_space.shape, dtype=np.float32)
    logprobs = np.zeros((args.num_steps, num_envs), dtype=np.float32)
    rewards = np.zeros((args.num_steps, num_envs), dtype=np.float32)
    terminations = np.zeros((args.num_steps, num_envs), dtype=np.float32)
    truncations = np.zeros((args.num_steps, num_envs), dtype=np.float32)
    values = np.zeros((args.num_steps, num_envs), dtype=np.float32)
    final_values = np.zeros((args.num_steps, num_envs), dtype=np.float32)  # §7.4 V(final_obs)

    start_time, start_step = time.time(), global_step
    recent_returns = deque(maxlen=20)  # the last 20 training episodes, for the progress line
    # (num_envs, obs_dim). Env j of rank r is env i = r * num_envs + j of all args.num_envs, seeded
    # seed + i + global_step: a resumed run (global_step > 0) starts new episodes (see --resume).
    next_obs_raw, _ = envs.reset(seed=args.seed + rank * num_envs + global_step)
    if obs_rms is not None:
        obs_rms.update(next_obs_raw)
    next_obs = normalize_obs(next_obs_raw, obs_rms, device)
    discounted_return = np.zeros(num_envs)  # (num_envs,) for reward scaling (§8.5)
    eval_seed = args.seed + args.num_envs  # a fresh env seeded past the training envs' seeds

    with checkpointer:  # Part 2: however training ends, the last boundary is written
        for iteration in range(start_iteration + 1, num_iterations + 1):
            if args.anneal_lr:  # §8.4 lr(t) = lr_0 (1 - t / T)
                frac = 1.0 - (iteration - 1.0) / num_iterations
                optimizer.lr = frac * args.learning_rate

            # §9.1 phase 1: rollout collection
            rollout_start = time.time()
            finished_episodes = []  # (global_step, return, length) of each episode that ends
            for step in range(args.num_steps):
                global_step += args.num_envs  # all ranks' steps
                obs[step] = next_obs.cpu().numpy()
                with torch.inference_mode():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten().cpu().numpy()
                actions[step] = action.cpu().numpy()
                logprobs[step] = logprob.cpu().numpy()

                # The batch keeps the sampled action (its log-prob's); the env gets it clipped.
                env_action = np.clip(actions[step], action_space.low, action_space.high)
                next_obs_raw, reward, terminated, truncated, infos = envs.step(env_action)
                stop_if_nonfinite_env(next_obs_raw, reward, infos, global_step, checkpointer.path)
                if obs_rms is not None:
                    obs_rms.update(next_obs_raw)
                if return_rms is not None:  # §8.5 scale by the std of the discounted return
                    discounted_return = discounted_return * args.gamma + reward
                    return_rms.update(discounted_return)
                    reward = np.clip(
                        reward / np.sqrt(return_rms.var + EPSILON), -NORM_CLIP, NORM_CLIP
                    )
                    discounted_return[terminated | truncated] = 0.0
                rewards[step], terminations[step], truncations[step] = reward, terminated, truncated
                next_obs = normalize_obs(next_obs_raw, obs_rms, device)

                # §7.4 A time limit cut these episodes; the MDP did not end them. Bootstrap from
                # the value of each one's true last observation, normalized as the agent sees it.
                if truncated.any():
                    truncated_envs = np.flatnonzero(truncated)
                    # (num_truncated, obs_dim)
                    final_obs = np.stack(infos["final_obs"][truncated_envs])
                    final_obs = normalize_obs(final_obs, obs_rms, device)
                    with torch.inference_mode():
                        final_value = agent.get_value(final_obs).flatten().cpu().numpy()
                    final_values[step, truncated_envs] = final_value

                # RecordEpisodeStatistics puts the finished episodes' stats in infos["final_info"].
                if "episode" in infos.get("final_info", {}):
                    episode = infos["final_info"]["episode"]
                    for i in np.flatnonzero(infos["final_info"]["_episode"]):
                        finished_episodes.append((global_step, episode["r"][i], episode["l"][i]))

            # env steps per second while collecting (all ranks'): the env's cost plus the policy's
            rollout_sps = int(args.num_steps * args.num_envs / (time.time() - rollout_start))

            # §9.1 phase 2: advantages and returns
            with torch.inference_mode():
                next_value = agent.get_value(next_obs).flatten().cpu().numpy()  # (num_envs,)
            # §7.3 V(s_{t+1}) of each step's true successor: the next row of `values`, V(next_obs)
            # after the last step, and (§7.4) V(final_obs) where the episode was truncated.
            next_values = np.concatenate((values[1:], next_value[None]))  # (num_steps, num_envs)
            next_values = np.where(truncations.astype(bool), final_values, next_values)
            advantages = compute_gae(
                rewards, values, next_values, terminations, truncations, args.gamma, args.gae_lambda
            )  # (num_steps, num_envs)
            returns = advantages + values  # §4.4 R̂_t = Â_t + V(s_t)

            # the batch as tensors, flattened: (num_steps, num_envs, ...) -> (batch_size, ...)
            b_obs = torch.as_tensor(obs, device=device).reshape((-1,) + observation_space.shape)
            b_actions = torch.as_tensor(actions, device=device).reshape((-1,) + action_space.shape)
            b_logprobs = torch.as_tensor(logprobs, device=device).reshape(-1)
            b_advantages = torch.as_tensor(advantages, device=device).reshape(-1)
            b_returns = torch.as_tensor(returns, device=device).reshape(-1)
            b_values = torch.as_tensor(values, device=device).reshape(-1)

            # §9.1 phase 3: update_epochs passes over shuffled minibatches
            stats = defaultdict(list)  # each minibatch's figures (tensors), averaged for the log
            kl_exceeded = False
            for epoch in range(args.update_epochs):
                b_inds = np.random.permutation(batch_size)
                for start in range(0, batch_size, minibatch_size):
                    mb_inds = b_inds[start : start + minibatch_size]
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                        b_obs[mb_inds], b_actions[mb_inds]
                    )
                    logratio = newlogprob - b_logprobs[mb_inds]
                    ratio = logratio.exp()  # §2.3 r_t(θ) = π_θ(a|s) / π_θold(a|s)

                    mb_advantages = b_advantages[mb_inds]
                    if args.norm_adv:
                        mb_advantages = normalize_advantages(mb_advantages)  # §8.6

                    pg_loss = clipped_surrogate_loss(ratio, mb_advantages, args.clip_coef)  # §3.1
                    v_clip = args.clip_coef if args.clip_vloss else None  # §5.2 is optional
                    v_loss = value_loss(
                        newvalue.flatten(), b_values[mb_inds], b_returns[mb_inds], v_clip
                    )
                    entropy_loss = entropy.mean()  # §6 E_t[H(π_θ, s_t)]
                    loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * entropy_loss  # §6

                    with torch.no_grad():
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()  # §10.1
                        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
                    minibatch_stats = {
                        "policy_loss": pg_loss,
                        "value_loss": v_loss,
                        "entropy": entropy_loss,
                        "old_approx_kl": old_approx_kl,
                        "approx_kl": approx_kl,
                        "clipfrac": clipfrac,
                    }
                    for key, value in minibatch_stats.items():
                        stats[key].append(value.detach())
                    # (the ranks' mean: all of them must stop at the same minibatch)
                    if args.target_kl is not None and mean_over_ranks(approx_kl) > args.target_kl:
                        kl_exceeded = True  # stop before this minibatch moves the policy further
                        break

                    optimizer.zero_grad()
                    loss.backward()
                    mean_gradients_over_ranks(agent)  # one process: nothing to do
                    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    stop_if_nonfinite(loss, grad_norm, global_step, checkpointer.path)
                    optimizer.step()
                if kl_exceeded:
                    break

            # §10 diagnostics; the losses are averaged over every minibatch of this iteration and
            # over the ranks, the explained variance is rank 0's batch's
            losses = mean_over_ranks(torch.stack([torch.stack(h).mean() for h in stats.values()]))
            if rank == 0:
                for end_step, episodic_return, episodic_length in finished_episodes:
                    recent_returns.append(float(episodic_return))
                    writer.add_scalar("charts/episodic_return", episodic_return, end_step)
                    writer.add_scalar("charts/episodic_length", episodic_length, end_step)
                y_pred, y_true = values, returns
                var_y = np.var(y_true)
                explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
                sps = int((global_step - start_step) / (time.time() - start_time))
                scalars = {f"losses/{key}": value for key, value in zip(stats, losses.tolist())}
                scalars["losses/explained_variance"] = explained_var
                scalars["charts/learning_rate"] = optimizer.lr
                scalars |= {"charts/SPS": sps, "charts/rollout_SPS": rollout_sps}
                for tag, value in scalars.items():
                    writer.add_scalar(tag, value, global_step)
                mean_return = f"{np.mean(recent_returns):.1f}" if recent_returns else "n/a"
                eta = (total_steps - global_step) / max(sps, 1)
                print(
                    f"step {global_step}/{total_steps} | return {mean_return} "
                    f"| SPS {sps} | ETA {eta:.0f}s",
                    flush=True,
                )
                # (the final evaluation covers the last iteration; under torchrun this one has rank
                # 0's statistics, merged with the other ranks' at the boundary below)
                eval_now = args.eval_every > 0 and iteration % args.eval_every == 0
                if eval_now and iteration < num_iterations:
                    eval_returns = evaluate(
                        agent, args.env_id, args.eval_episodes, eval_seed, device, obs_rms
                    )
                    writer.add_scalar("eval/episodic_return", np.mean(eval_returns), global_step)
                writer.flush()  # the log on disk reaches this iteration, as far as any checkpoint
            if checkpointer.end_iteration(iteration, global_step):  # Part 2: stop on a signal?
                break
    envs.close()
    leave_process_group()  # Part 2: under torchrun, the ranks wait for each other and part
    if rank == 0 and args.save_model:  # the agent at the last iteration boundary
        agent_file = {key: checkpointer.state[key] for key in AGENT_KEYS}
        write_atomically(f"{run_dir}/agent.pt", lambda f: torch.save(agent_file, f))  # Part 2
        print(f"model saved to {run_dir}/agent.pt")
    checkpointer.exit_if_stopped()  # Part 2: after a signal, prints how to resume and exits

    if rank == 0:  # evaluating the agent
        if args.eval_episodes > 0:
            gif_path = f"{run_dir}/episode.gif" if args.capture_gif else None
            eval_returns = evaluate(
                agent, args.env_id, args.eval_episodes, eval_seed, device, obs_rms, gif_path
            )
            writer.add_scalar("eval/episodic_return", np.mean(eval_returns), global_step)
        writer.close()
    return checkpointer.state


def evaluate(
    agent: Agent,
    env_id: str,
    episodes: int,
    seed: int,
    device: torch.device,
    obs_rms: RunningMeanStd | None = None,
    gif_path: str | None = None,
) -> list[float]:
    """Runs deterministic episodes (the policy's mode) on a fresh env, normalization statistics
    frozen; prints and returns their returns. With gif_path, the first episode is written there."""
    env = gym.make(env_id, render_mode="rgb_array") if gif_path else gym.make(env_id)
    episodic_returns, frames = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)  # later episodes continue its RNG
        episodic_return, episode_over = 0.0, False
        while not episode_over:
            if gif_path and episode == 0:
                frames.append(Image.fromarray(env.render()))
            obs_tensor = normalize_obs(obs[None], obs_rms, device)
            with torch.inference_mode():
                action = agent.get_deterministic_action(obs_tensor)[0].cpu().numpy()
            action = np.clip(action, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            episodic_return += float(reward)
            episode_over = terminated or truncated
        episodic_returns.append(episodic_return)
    if gif_path:
        frame_ms = 1000 / env.metadata.get("render_fps", 30)
        gif = {"format": "GIF", "save_all": True, "append_images": frames[1:], "loop": 0}
        write_atomically(gif_path, lambda f: frames[0].save(f, duration=frame_ms, **gif))  # Part 2
        print(f"gif saved to {gif_path}")
    env.close()
    mean, std = np.mean(episodic_returns), np.std(episodic_returns)
    print(f"eval: mean return {mean:.1f} ± {std:.1f} over {episodes} episodes")
    return episodic_returns


# ---------------------------------------------------------------------------------------------
# Part 2: long runs and many processes. Everything above is PPO; a first reading can stop here.
# ---------------------------------------------------------------------------------------------

# agent.pt holds what evaluation needs; checkpoint.pt adds what training needs to continue.
AGENT_KEYS = ("script", "args", "spaces", "model", "obs_rms")
# (and return_rms, None without --norm-reward; ppo_discrete.py's checkpoints once had none)
CHECKPOINT_KEYS = (*AGENT_KEYS, "optimizer", "iteration", "global_step", "rng")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and a cluster's or `kill`'s request
# The flags --resume and --eval-only take from the command line; the rest come from the saved run
# (--env-id only to confirm the saved one: see saved_run_args).
RESUME_FLAGS = ("resume", "total_timesteps", "env_id")
EVAL_ONLY_FLAGS = ("eval_only", "eval_episodes", "capture_gif", "cuda", "env_id")


def main() -> dict:
    """Checks the command line (bad input exits with one line before any work), then trains."""
    for signum in STOP_SIGNALS:  # (in training: stop at an iteration boundary instead)
        signal.signal(signum, exit_on_signal)
    args = tyro.cli(Args)
    # torchrun starts WORLD_SIZE processes and tells each its RANK; plain python is rank 0 of 1.
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    # --resume and --eval-only read a saved run, whose arguments replace the command line's.
    saved_path = args.resume if args.resume is not None else args.eval_only
    saved = None
    if saved_path is not None:
        if os.path.isdir(saved_path):  # a run directory: its checkpoint
            saved_path = os.path.join(saved_path, "checkpoint.pt")
        keys = CHECKPOINT_KEYS if args.resume is not None else AGENT_KEYS
        try:
            saved = load_checkpoint(saved_path, keys)
            args = saved_run_args(args, saved["args"], typed_flags(sys.argv[1:]))
        except ValueError as e:
            sys.exit(f"error: {e}")
    if (error := args_error(args, world_size)) is not None:
        sys.exit(f"error: {error}")
    saved_dir = os.path.dirname(saved_path or "") or "."  # the saved run's directory
    if args.resume is not None:
        exit_if_complete(args, saved, saved_dir)
        if (error := newer_checkpoint_error(saved_path, saved)) is not None:
            sys.exit(f"error: {error}")
    try:
        envs = make_envs_holding_signals(args.env_id, args.num_envs // world_size, args.vector_mode)
    except Exception as e:  # noqa: BLE001 (an env's module or constructor may raise anything)
        sys.exit(f"error: cannot make env {args.env_id!r}: {one_line(e)}")
    if (error := env_error(args, envs, saved)) is not None:
        sys.exit(f"error: {error}")

    torch.backends.cudnn.deterministic = args.torch_deterministic
    # Tiny MLPs gain nothing from more threads, and extra threads slow a run many times over
    # when another process competes for the cores.
    torch.set_num_threads(1)
    # GIF frames need no window; on a machine without a display SDL would print an "error:" line.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # torchrun: this process's GPU ...
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # ... of this many
    try:
        device = device_of(args.cuda, local_rank, local_world_size, torch.cuda.device_count())
    except ValueError as e:
        sys.exit(f"error: {e}")
    if args.eval_only is not None:
        exit_after_evaluating(args, envs, device, saved, saved_path, saved_dir)
    if world_size > 1:  # gloo carries CPU tensors, nccl CUDA ones
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    if saved is not None:  # a resumed run continues in its directory; TensorBoard steps continue
        run_dir = saved_dir
    else:  # a new run gets a directory of its own, made by rank 0 (its name sent to the others)
        shared = [new_run_dir(args) if rank == 0 else None]
        if world_size > 1:
            dist.broadcast_object_list(shared, src=0)
        run_dir = shared[0]
    try:
        return train(args, envs, device, run_dir, saved)
    except Exception as e:  # noqa: BLE001 (the env's code, the disk, memory: see training_failure)
        sys.exit(f"error: {training_failure(e, run_dir)}")
    finally:  # however training ended: --vector-mode async's worker processes end with it
        envs.close()


def exit_after_evaluating(
    args: Args,
    envs: gym.vector.VectorEnv,
    device: torch.device,
    saved: dict,
    path: str,
    saved_dir: str,
) -> None:
    """--eval-only: the saved agent, evaluated as its run evaluated it; exits 0, or 1 with a line."""
    agent = Agent(envs, args.state_dependent_std).to(device)
    obs_rms = RunningMeanStd(envs.single_observation_space.shape) if args.norm_obs else None
    load_states(saved, {"model": agent, "obs_rms": obs_rms})
    envs.close()  # (they gave the spaces; evaluate makes an env of its own)
    gif_path = f"{saved_dir}/episode.gif" if args.capture_gif else None  # beside the agent
    print(f"evaluating {path}: {args.eval_episodes} episodes of {args.env_id}", flush=True)
    seed = args.seed + args.num_envs  # the training run's evaluation seed
    try:
        evaluate(agent, args.env_id, args.eval_episodes, seed, device, obs_rms, gif_path)
    except Exception as e:  # noqa: BLE001 (the env's code, the disk)
        sys.exit(f"error: evaluation failed: {one_line(e)}")
    sys.exit(0)


def args_error(args: Args, world_size: int = 1) -> str | None:
    """The first reason these arguments cannot make a run of world_size processes, or None."""
    for name, value in asdict(args).items():
        if isinstance(value, float) and not np.isfinite(value):
            return f"--{name.replace('_', '-')} must be a finite number, got {value}"
    sizes = ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs")
    for name in (*sizes, "learning_rate", "clip_coef", "max_grad_norm"):
        value = getattr(args, name)
        if value <= 0:
            return f"--{name.replace('_', '-')} must be positive, got {value}"
    for name in ("gamma", "gae_lambda"):
        value = getattr(args, name)
        if not 0 <= value <= 1:
            return f"--{name.replace('_', '-')} must be in [0, 1], got {value}"
    if args.target_kl is not None and args.target_kl <= 0:
        return f"--target-kl must be positive, got {args.target_kl}"
    for name in ("ent_coef", "vf_coef", "eval_episodes", "eval_every", "checkpoint_every"):
        value = getattr(args, name)
        if value < 0:
            return f"--{name.replace('_', '-')} must be non-negative, got {value}"
    if not 0 <= args.seed < 2**31:  # numpy takes seeds below 2**32; room for seed + env index
        return f"--seed must be in [0, 2**31), got {args.seed}"
    if (
        args.capture_gif or args.eval_every or args.eval_only is not None
    ) and not args.eval_episodes:
        return (
            "--capture-gif, --eval-every and --eval-only evaluate: they need --eval-episodes >= 1"
        )
    if args.num_envs % world_size != 0:
        return f"--num-envs {args.num_envs} is not divisible by the {world_size} torchrun processes"
    if args.eval_only is not None and world_size > 1:
        return "--eval-only runs in one process: start it with python, not torchrun"
    # Each process splits its share of the batch into num_minibatches parts.
    share = "" if world_size == 1 else f" / {world_size} processes"
    process_batch_size = args.num_envs // world_size * args.num_steps
    if process_batch_size % args.num_minibatches != 0:
        return (
            f"num_envs{share} * num_steps = {process_batch_size} is not divisible by "
            f"--num-minibatches {args.num_minibatches}"
        )
    batch_size = args.num_envs * args.num_steps
    if args.norm_adv and batch_size // args.num_minibatches < 2:
        return "--norm-adv needs minibatches of at least 2 samples: lower --num-minibatches"
    if args.total_timesteps < batch_size:
        return (
            f"--total-timesteps {args.total_timesteps} is below one batch "
            f"(num_envs * num_steps = {batch_size})"
        )
    return None


def env_error(args: Args, envs: gym.vector.VectorEnv, saved: dict | None) -> str | None:
    """The first reason this script or the saved run cannot act in the envs' spaces (or record
    their GIF), or None."""
    env_id, observation_space = args.env_id, envs.single_observation_space
    action_space = envs.single_action_space
    if args.capture_gif and "rgb_array" not in envs.metadata.get("render_modes", []):
        return f"--capture-gif: {env_id} cannot render frames (it has no rgb_array render mode)"
    if not isinstance(action_space, gym.spaces.Box):
        return (
            f"{env_id} has a {type(action_space).__name__} action space; "
            "ppo_continuous.py takes Box actions (use ppo_discrete.py for Discrete ones)"
        )
    if len(action_space.shape) != 1 or not np.issubdtype(action_space.dtype, np.floating):
        return f"{env_id} has action space {action_space}; ppo_continuous.py takes a 1-D float Box"
    if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
        return (
            f"{env_id} has observation space {observation_space}; the MLP takes a 1-D Box "
            "(wrap the env with gymnasium.wrappers.FlattenObservation)"
        )
    if saved is not None and saved["spaces"] != spaces_of(envs):
        return f"the saved run is for spaces {saved['spaces']}; {env_id} has {spaces_of(envs)}"
    return None


def spaces_of(envs: gym.vector.VectorEnv) -> list[str]:
    """The observation and action spaces, saved with the model and checked when it is loaded."""
    return [str(envs.single_observation_space), str(envs.single_action_space)]


def typed_flags(argv: list[str]) -> set[str]:
    """The Args fields the command line sets, by name, whatever their values: from `--env-id X`,
    `--env_id=X`, `--norm-obs` and `--no-norm-obs` alike."""
    names = {field.name for field in fields(Args)}
    typed = {token[2:].split("=")[0].replace("-", "_") for token in argv if token.startswith("--")}
    return {name if name in names else name.removeprefix("no_") for name in typed} & names


def saved_run_args(args: Args, saved_args: dict, typed: set[str]) -> Args:
    """The saved run's arguments, with those of the `typed` flags that its mode takes from the
    command line (RESUME_FLAGS or EVAL_ONLY_FLAGS). Raises ValueError if the command line sets any
    other flag, even to its default value (it would be ignored), if a saved argument is not of its
    type, or if the saved env id would import a module that the command line does not name."""
    own_flags = RESUME_FLAGS if args.resume is not None else EVAL_ONLY_FLAGS
    mode = "--resume" if args.resume is not None else "--eval-only"
    if ignored := sorted(typed - set(own_flags)):
        flag = f"--{ignored[0].replace('_', '-')}"
        raise ValueError(f"{flag} cannot be set with {mode}: the saved run's arguments apply")
    try:
        saved = Args(**saved_args)
    except TypeError:
        raise ValueError(f"its saved arguments do not fit this {SCRIPT}") from None
    for field in fields(Args):  # a tampered file's arguments, checked as tyro checks typed ones
        value, allowed = getattr(saved, field.name), get_args(field.type) or (field.type,)
        literal = get_origin(field.type) is Literal  # allowed values, not types
        if (value not in allowed) if literal else (type(value) not in allowed):
            raise ValueError(f"its saved {field.name} {value!r} is not a {field.type}")
    # gym.make("module:EnvId") imports module: a file never chooses the code that runs.
    if "env_id" in typed and args.env_id != saved.env_id:
        raise ValueError(f"--env-id {args.env_id} is not the saved run's env, {saved.env_id}")
    if ":" in saved.env_id and "env_id" not in typed:
        raise ValueError(
            f"the saved run's env {saved.env_id} imports the module {saved.env_id.split(':')[0]}: "
            f"if you trust it, confirm with --env-id {saved.env_id}"
        )
    # A resumed run saves its --resume path too: only this command line's own flags apply.
    saved = replace(saved, resume=None, eval_only=None)
    return replace(saved, **{name: getattr(args, name) for name in own_flags if name in typed})


def env_confirmation(env_id: str) -> str:
    """What --resume and --eval-only need on the command line to make the saved env: for a
    `module:EnvId`, which imports module, --env-id (see saved_run_args); else nothing."""
    return f" --env-id {env_id}" if ":" in env_id else ""


def exit_if_complete(args: Args, saved: dict, run_dir: str) -> None:
    """--resume of a run that has trained all its iterations says so and exits, changing nothing;
    a --total-timesteps below what it has trained is an error."""
    batch_size = args.num_envs * args.num_steps
    iteration, global_step = saved["iteration"], saved["global_step"]
    if iteration > iterations_of(args):
        sys.exit(
            f"error: --total-timesteps {args.total_timesteps} is below the {global_step} "
            "steps the run has trained"
        )
    if iteration == iterations_of(args):
        print(
            f"{run_dir} is complete ({iteration} iterations, {global_step} steps): evaluate it "
            f"with --eval-only {run_dir}{env_confirmation(args.env_id)}, or train it longer with "
            f"--resume {run_dir}{env_confirmation(args.env_id)} --total-timesteps N "
            f"(N >= {global_step + batch_size})"
        )
        sys.exit(0)


def newer_checkpoint_error(path: str, saved: dict) -> str | None:
    """--resume of a copy (e.g. runs/X/backup.pt) writes the run's checkpoint.pt beside it: not if
    that one is further on, which resuming would overwrite."""
    checkpoint_path = os.path.join(os.path.dirname(path), "checkpoint.pt")
    if os.path.exists(checkpoint_path) and not os.path.samefile(path, checkpoint_path):
        try:
            newer = load_checkpoint(checkpoint_path, CHECKPOINT_KEYS)["global_step"]
        except ValueError:
            return f"{checkpoint_path}, which resuming {path} would replace, is not readable"
        if newer > saved["global_step"]:
            return (
                f"{checkpoint_path} is further on (step {newer}) than {path} (step "
                f"{saved['global_step']}), and resuming would replace it: resume from it, or "
                f"move {path} into a directory of its own"
            )
    return None


def new_run_dir(args: Args) -> str:
    """Makes runs/{env_id}__{exp_name}__{seed}__{unix time} and returns it: a directory no other
    run has, since it is made here (exclusively; a name taken gets _2, _3, ...). Characters other
    than letters, digits, . _ - become _, and the name is cut to 200: it stays inside runs/."""
    name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)[:200]
    try:
        os.makedirs("runs", exist_ok=True)
        for number in itertools.count(1):
            run_dir = f"runs/{name}" if number == 1 else f"runs/{name}_{number}"
            try:
                os.mkdir(run_dir)
                return run_dir
            except FileExistsError:
                continue
    except OSError as e:
        sys.exit(f"error: cannot make the run directory in {os.getcwd()}: {e.strerror}")


def device_of(cuda: bool, local_rank: int, local_world_size: int, gpu_count: int) -> torch.device:
    """This process's device: with --cuda and a GPU, GPU local_rank (each of the local_world_size
    processes torchrun starts on this machine takes its own), else the CPU. Raises ValueError if
    this machine has fewer GPUs than processes."""
    if not cuda or gpu_count == 0:
        return torch.device("cpu")
    if local_world_size > gpu_count:
        raise ValueError(
            f"--cuda gives each process a GPU of its own, and this machine runs {local_world_size} "
            f"processes on {gpu_count} GPU(s): start at most {gpu_count} per machine "
            "(torchrun --nproc_per_node), or leave out --cuda"
        )
    return torch.device("cuda", local_rank)


def load_checkpoint(path: str, keys: tuple[str, ...]) -> dict:
    """Reads an agent.pt or checkpoint.pt that this script wrote and that has `keys`. Anything else
    (missing, truncated, corrupted, foreign, or a pickle with code in it) raises ValueError with a
    one-line reason. weights_only=True: code in the file is refused, never run."""
    not_ours = f"{path} is not a checkpoint written by {SCRIPT}"
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive: anything else is not ours
        raise ValueError(not_ours)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it did not write
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"refused {path}: not only tensors and plain data (loading the rest could run code)"
        ) from None
    except Exception as e:  # noqa: BLE001 (a damaged file fails with many error types)
        raise ValueError(
            f"cannot read {path}: truncated or corrupted ({type(e).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != SCRIPT:
        raise ValueError(not_ours)
    if missing := [key for key in keys if key not in checkpoint]:
        raise ValueError(
            f"{path} has no {', '.join(missing)}: is it an agent.pt, not a checkpoint?"
        )
    for key in ("iteration", "global_step"):
        if key in keys and (type(checkpoint[key]) is not int or checkpoint[key] < 0):
            raise ValueError(f"{path} has {key} {checkpoint[key]!r}, not a count")
    return checkpoint


def load_states(saved: dict, objects: dict) -> None:
    """Loads each saved state dict into the object of its name; exits with one line if it misfits."""
    for name, obj in objects.items():
        try:
            if isinstance(obj, RunningMeanStd) and saved[name]["mean"].shape != obj.mean.shape:
                raise ValueError(f"its shape is {tuple(saved[name]['mean'].shape)}")
            if obj is not None:
                obj.load_state_dict(saved[name])
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as e:
            reason = str(e).strip().splitlines()[0]
            sys.exit(f"error: the saved {name} does not fit this script's network: {reason}")


def write_atomically(path: str, write: Callable[[BinaryIO], object]) -> None:
    """write(file) into a new temp file beside `path`, fsync, then rename it over `path`: a crash
    or a full disk leaves the old file or the new one at `path`, never half of one, and a link
    planted at either name is replaced, never written through."""
    temp = f"{path}.tmp"
    try:
        if os.path.lexists(temp):  # a failed write's, or a planted link
            os.remove(temp)
        with open(temp, "xb") as f:  # x: a new file, or an error
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:  # (a failed write's temp file would only take the space a full disk lacks)
        if os.path.lexists(temp):
            os.remove(temp)


def announce_run(args: Args, run_dir: str, start_iteration: int, num_iterations: int) -> None:
    """Rank 0 prints where the run writes and its budget as it will really run: whole batches."""
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    batch_size = args.num_envs * args.num_steps
    steps = num_iterations * batch_size
    budget = f"{num_iterations} iterations x {batch_size} steps = {steps} steps"
    if steps < args.total_timesteps:
        budget += (
            f" (the last {args.total_timesteps - steps} of --total-timesteps do not fill a batch)"
        )
    start = f", resumed after iteration {start_iteration}" if start_iteration > 0 else ""
    print(f"run {run_dir}: {budget}{start}", flush=True)


def tensorboard_writer(args: Args, run_dir: str, saved: dict | None) -> SummaryWriter:
    """A new run logs its hyperparameters; a resumed one purges what was logged after the save."""
    if saved is not None:
        return SummaryWriter(run_dir, purge_step=saved["global_step"] + 1)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return writer


class Checkpointer:
    """Keeps a run whole at its iteration boundaries. `state`, the last one's training state (all
    that training changes, and the random generators; not the envs: see --resume), is written by
    rank 0 to checkpoint.pt every checkpoint_every iterations and on leaving `with checkpointer:`,
    however training ends. From `with` on, Ctrl-C or SIGTERM stop training at the next boundary."""

    def __init__(self, args: Args, envs: gym.vector.VectorEnv, run_dir: str, trained: dict) -> None:
        self.run = {"script": SCRIPT, "args": asdict(args), "spaces": spaces_of(envs)}
        self.num_iterations = iterations_of(args)
        self.trained = trained  # what training changes, by its name in the file
        self.run_dir, self.every = run_dir, args.checkpoint_every
        self.path = f"{run_dir}/checkpoint.pt"
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.launcher = "torchrun [its flags as before]" if dist.is_initialized() else "python"
        self.signal = self.stopped_by = None  # this rank's first signal; any rank's
        self.state = self.training_state(0, 0)

    def resume(self, saved: dict | None) -> tuple[int, int]:
        """Loads --resume's checkpoint (rank 0's generators: other ranks seed theirs anew); returns
        its iteration and global step, (0, 0) for a new run."""
        if saved is None:
            return 0, 0
        load_states(saved, self.trained)
        if self.rank == 0:
            numpy_rng = copy.deepcopy(saved["rng"]["numpy"])
            numpy_rng["state"]["key"] = numpy_rng["state"]["key"].numpy().astype(np.uint32)
            random.setstate(saved["rng"]["python"])
            np.random.set_state(numpy_rng)
            torch.set_rng_state(saved["rng"]["torch"])
        else:
            # (numpy takes seeds below 2**32)
            seed = (saved["args"]["seed"] + self.rank + saved["global_step"]) % 2**32
            torch.manual_seed(seed)
            np.random.seed(seed)
        self.state = self.training_state(saved["iteration"], saved["global_step"])
        return saved["iteration"], saved["global_step"]

    def training_state(self, iteration: int, global_step: int) -> dict:
        """The run (script, args, spaces), a copy of what training changes, and the generators."""
        state = {**self.run, "iteration": iteration, "global_step": global_step}
        for name, obj in self.trained.items():
            state[name] = None if obj is None else copy.deepcopy(obj.state_dict())
        numpy_rng = np.random.get_state(legacy=False)
        numpy_rng["state"]["key"] = torch.from_numpy(numpy_rng["state"]["key"].astype(np.int64))
        state["rng"] = {
            "python": random.getstate(),
            "numpy": numpy_rng,
            "torch": torch.get_rng_state(),
        }
        return state

    def __enter__(self) -> None:
        self.handlers = {s: signal.signal(s, self.request_stop) for s in STOP_SIGNALS}

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        for signum in STOP_SIGNALS:  # a signal now would cut the checkpoint short
            signal.signal(signum, signal.SIG_IGN)
        try:
            if self.rank == 0:
                write_atomically(self.path, lambda f: torch.save(self.state, f))
        finally:
            for signum, handler in self.handlers.items():
                signal.signal(signum, handler)
        if exc_type is SystemExit and self.stopped_by is not None:  # by a second signal
            self.print_resume_command()

    def request_stop(self, signum: int, frame: object) -> None:
        """The signal handler in training: the first signal stops it at the next iteration
        boundary; a second one at once (leaving `with checkpointer:` writes the last boundary)."""
        if self.signal is not None:
            self.stopped_by = signum
            sys.exit(128 + signum)
        self.signal = signum

    def end_iteration(self, iteration: int, global_step: int) -> bool:
        """The boundary after `iteration`: merges the ranks' §8.5 statistics, keeps the state (and
        writes it every checkpoint_every iterations); True if a signal reached any rank."""
        sync_statistics_over_ranks(self.state, self.trained["obs_rms"], self.trained["return_rms"])
        self.state = self.training_state(iteration, global_step)
        if self.rank == 0 and self.every > 0 and iteration % self.every == 0:
            write_atomically(self.path, lambda f: torch.save(self.state, f))
        self.stopped_by = stop_on_any_rank(self.signal)
        return self.stopped_by is not None

    def exit_if_stopped(self) -> None:
        """After a signal stopped training: prints the command that resumes, exits 128 + signal."""
        if self.stopped_by is not None:
            self.print_resume_command()
            sys.exit(128 + self.stopped_by)

    def print_resume_command(self) -> None:
        """The command that resumes the run; after its last iteration, the one that evaluates it."""
        if self.rank == 0:
            iteration = self.state["iteration"]
            confirmation = env_confirmation(self.run["args"]["env_id"])
            stopped = (
                f"stopped by {signal.Signals(self.stopped_by).name} after iteration {iteration}"
            )
            if iteration < self.num_iterations:
                command = f"resume with: {self.launcher} {sys.argv[0]} --resume {self.run_dir}"
            else:
                command = "training is complete; evaluate with: "
                command += f"python {sys.argv[0]} --eval-only {self.run_dir}"
            print(f"{stopped}; {command}{confirmation}", flush=True)


def make_envs_holding_signals(env_id: str, num_envs: int, vector_mode: str) -> gym.vector.VectorEnv:
    """make_envs, with Ctrl-C and SIGTERM blocked meanwhile, and delivered to this process after.
    --vector-mode async's worker processes inherit the block and never see them: a terminal's
    Ctrl-C, sent to every process of the job, would end them mid-step; this process stops them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return make_envs(env_id, num_envs, vector_mode)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def exit_on_signal(signum: int, frame: object) -> None:
    """Outside training (setup, evaluation), Ctrl-C or SIGTERM ends the process at once: exit
    128 + signal, without a traceback."""
    sys.exit(128 + signum)


def one_line(error: Exception) -> str:
    """An exception as one line: its type and the first line of its message."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message.splitlines()[0]}" if message else type(error).__name__


def training_failure(error: Exception, run_dir: str) -> str:
    """The line for an error that ended training (an env's code raised, the disk is full, ...);
    the traceback goes to run_dir/traceback.txt, for when the line is not enough."""
    line = f"training failed: {one_line(error)}"
    text = "".join(traceback.format_exception(error)).encode()
    try:
        write_atomically(f"{run_dir}/traceback.txt", lambda f: f.write(text))
        line += f" (traceback in {run_dir}/traceback.txt)"
    except OSError:
        pass
    if os.path.exists(f"{run_dir}/checkpoint.pt"):
        line += f"; the last good state is in {run_dir}/checkpoint.pt"
    return line


def stop_if_nonfinite_env(
    obs: np.ndarray, rewards: np.ndarray, infos: dict, step: int, path: str
) -> None:
    """Exits with one line if an env returned a NaN or infinite observation (the final one of an
    episode that ended included) or reward."""
    finite = np.isfinite(obs).reshape(len(rewards), -1).all(axis=1) & np.isfinite(rewards)
    for i in np.flatnonzero(infos.get("_final_obs", [])):
        finite[i] &= bool(np.isfinite(infos["final_obs"][i]).all())
    if not finite.all():
        sys.exit(
            f"error: env {int(np.argmin(finite))} returned a non-finite observation or reward at "
            f"global step {step}; the last good state is in {path}"
        )


def stop_if_nonfinite(loss: torch.Tensor, grad_norm: torch.Tensor, step: int, path: str) -> None:
    """Exits with one line if the loss or the gradient is NaN or infinite, before the step."""
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        sys.exit(
            f"error: non-finite loss or gradient at global step {step}; "
            f"the last good state is in {path}"
        )


# torchrun runs this script in K processes (ranks 0..K-1), each with num_envs / K envs. Every rank
# calls these at the same point (a collective waits for all); one process needs none of it.


def gather_ranks(x: torch.Tensor) -> torch.Tensor:
    """x of every rank, concatenated along dim 0 in rank order: (K * len(x), ...)."""
    if not dist.is_initialized():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of x over the ranks, elementwise."""
    if not dist.is_initialized():
        return x
    total = x.clone()
    dist.all_reduce(total)  # the sum (gloo has no average)
    return total / dist.get_world_size()


def mean_gradients_over_ranks(agent: nn.Module) -> None:
    """Replaces each gradient by its mean over the ranks: as each rank's loss is the mean over its
    part of the minibatch, that is the whole minibatch's gradient, and all ranks take the same step.
    (DDP would do this in backward(), but only for calls through its forward(); and hide it.)"""
    if not dist.is_initialized():
        return
    grads = [param.grad for param in agent.parameters()]
    mean_grad = mean_over_ranks(torch.cat([grad.flatten() for grad in grads]))  # (num_params,)
    for grad, mean in zip(grads, mean_grad.split([grad.numel() for grad in grads])):
        grad.copy_(mean.view_as(grad))


def broadcast_parameters(agent: nn.Module) -> None:
    """Every rank takes rank 0's parameters."""
    if dist.is_initialized():
        for param in agent.parameters():
            dist.broadcast(param.data, src=0)


def sync_statistics_over_ranks(
    boundary: dict, obs_rms: RunningMeanStd | None, return_rms: RunningMeanStd | None
) -> None:
    """In a rollout each rank updates the statistics from its own envs. `boundary` (the last
    training state) holds those all ranks agreed on; each rank's additions since (the merge undone)
    are gathered and merged into them, as if one process had stepped all the envs."""
    for rms, agreed in ((obs_rms, boundary["obs_rms"]), (return_rms, boundary["return_rms"])):
        if rms is None or not dist.is_initialized():
            continue
        agreed_mean, agreed_var = agreed["mean"].numpy(), agreed["var"].numpy()
        agreed_count = agreed["count"].item()
        count = rms.count - agreed_count
        mean = (rms.count * rms.mean - agreed_count * agreed_mean) / count
        m2 = rms.count * rms.var - agreed_count * agreed_var
        m2 = m2 - (mean - agreed_mean) ** 2 * agreed_count * count / rms.count
        counts = gather_ranks(torch.tensor([count], dtype=torch.float64))  # (K,)
        moments = gather_ranks(torch.from_numpy(np.stack([mean, m2 / count]))[None])
        rms.load_state_dict(agreed)
        for count, (mean, var) in zip(counts.tolist(), moments.numpy()):  # (K, 2, *shape)
            rms.merge(mean, var, count)


def stop_on_any_rank(signum: int | None) -> int | None:
    """The signal any rank received, or None: a rank that stopped alone would hang the others."""
    if not dist.is_initialized():
        return signum
    agreed = torch.tensor(signum or 0)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return int(agreed) or None


def leave_process_group() -> None:
    """Under torchrun: without a barrier first, a rank that left early could abort in teardown."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
