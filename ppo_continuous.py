"""Proximal Policy Optimization for continuous (Box) action spaces, in one file.

Part 1 is a whole PPO that runs on its own: arguments, networks, §4 GAE, §3 the objective (and
§13.2 its variants), `train` (the §9 loop) and `evaluate`. Part 2 attaches from outside what long
runs and many processes need (checks, checkpoints, resume, signals, torchrun). §N: the README's
"The math, section by section", beside the papers' equations.

    python ppo_continuous.py --env-id Pendulum-v1  # (torchrun ppo_continuous.py: many processes)
"""

import importlib
import itertools
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    env_id: str = "Pendulum-v1"  # a registered env id, or `module:EnvId` (imports module first)
    total_timesteps: int = 50_000  # env steps, all envs together (whole batches; tuned; paper: 1M)
    learning_rate: float = 4e-3  # the learning rate of the optimizer (§8.4; tuned; paper: 3e-4)
    num_envs: int = 4  # the number of parallel environments (§7; tuned; paper: 1)
    num_steps: int = 512  # the steps of each env per rollout (§7.2 T; tuned; paper: 2048)
    anneal_lr: bool = True  # the learning rate decays linearly to zero over the run (§8.4)
    gamma: float = 0.95  # the discount factor gamma (§4.2; tuned; paper: 0.99)
    gae_lambda: float = 0.95  # the lambda of generalized advantage estimation (§4.3; paper)
    num_minibatches: int = 8  # each epoch's minibatches (§9.1; tuned; paper: 32, of 64 steps)
    update_epochs: int = 10  # the number of passes over each rollout (§9.2; paper)
    norm_adv: bool = True  # advantages are normalized per minibatch (§8.6)
    clip_coef: float = 0.2  # epsilon, the clipping of the objective (§3.1) and the value (§5.2)
    clip_vloss: bool = False  # the value loss is clipped (§5.2)
    ent_coef: float = 0.01  # the entropy coefficient c2 (§6; tuned; paper: 0)
    vf_coef: float = 0.5  # the value-loss coefficient c1 (§6)
    max_grad_norm: float = 0.5  # the maximum norm of the gradient (§8.4)
    target_kl: float | None = None  # stop an update once the approximate KL (§10.1) exceeds it
    policy_loss: Literal["clip", "kl_penalty", "truly"] = "clip"  # the objective: §3.1, or §13.2's
    trust_region_kl: float = 0.01  # §13.2 d_targ of kl_penalty (PPO paper), δ of truly (its: 0.03)
    rollback_coef: float = 5.0  # α, the slope of truly's rollback (§13.2; its paper's MuJoCo value)
    ewma_decay: float | None = None  # §13.2 PPO-EWMA: the proximal policy's decay (None: PPO's)
    norm_obs: bool = False  # observations are normalized by running mean and variance (§8.5)
    norm_reward: bool = True  # rewards over the running std of discounted returns (§8.5; tuned)
    state_dependent_std: bool = False  # the log-std is a network output, not a vector (§8.3)
    init_logstd: float = 0.0  # the log-std's value at the start (§8.3; not state-dependent)
    hidden_sizes: tuple[int, ...] = (64, 64)  # actor, critic: hidden layers (§8.1; none: linear)
    activation: Literal["tanh", "relu"] = "tanh"  # the hidden layers' activation (§8.1)
    # The run: its name, randomness, hardware and evaluation.
    exp_name: str = os.path.basename(__file__).removesuffix(".py")  # part of the run's directory
    seed: int = 1  # seed of the experiment (torch's generator and the environments)
    cuda: bool = False  # run the networks on the GPU if there is one (tiny MLPs: the CPU is faster)
    vector_mode: Literal["sync", "async"] = "sync"  # async: each env in a process of its own (§7)
    eval_episodes: int = 10  # the number of deterministic evaluation episodes after training


NORM_CLIP = 10.0  # normalized observations and rewards are clipped to ±10, as in SB3's VecNormalize
EPSILON = 1e-8  # keeps divisions by a standard deviation finite
LOG_SQRT_2PI = 0.9189385332046727  # log √(2π), the Normal density's log normalizer per dimension


def make_envs(env_id: str, num_envs: int, vector_mode: str = "sync") -> gym.vector.VectorEnv:
    """§7 num_envs copies of env_id, stepped as one, recording their episodes' raw returns and
    lengths in infos["episode"]. SAME_STEP autoreset: a step that ends an episode returns the next
    one's first observation, and the true last one in infos["final_obs"]."""
    same_step = gym.vector.AutoresetMode.SAME_STEP
    if env_id.startswith("ALE/"):  # §7.5 ale-py's own vector env (C++ threads), (4, 84, 84) uint8
        importlib.import_module("ale_py")  # (it registers the ALE/ ids)
        # the id's game, frame skip, sticky actions and frame limit; FIRE is the agent's to press
        # (at a game's start as after a lost life); rewards are clipped below, after the statistics
        ale = {"autoreset_mode": same_step, "reward_clipping": False, "use_fire_reset": False}
        envs = gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", **ale)
        envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # (raw scores, whole games)
        # §7.5 what training sees: rewards clipped to [-1, 1], and a lost life as a termination
        return LifeLossEndsBootstrap(gym.wrappers.vector.ClipReward(envs, -1.0, 1.0))
    vector_env = gym.vector.AsyncVectorEnv if vector_mode == "async" else gym.vector.SyncVectorEnv
    copies = [lambda: make_env(env_id, render=False) for _ in range(num_envs)]
    return gym.wrappers.vector.RecordEpisodeStatistics(vector_env(copies, autoreset_mode=same_step))


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """§8.2 orthogonal initialization with gain `std` and a constant bias."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim: int, out_dim: int, out_std: float, hidden: tuple[int, ...], act: str) -> nn.Module:
    """§8.1 an MLP: hidden layers of sizes `hidden` (none: linear), each followed by `act` ("tanh"
    or "relu"); §8.2 hidden layers get gain √2, the output layer gain out_std."""
    activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[act]
    sizes, layers = (in_dim, *hidden), []
    for size_in, size_out in itertools.pairwise(sizes):
        layers += [layer_init(nn.Linear(size_in, size_out)), activation()]
    return nn.Sequential(*layers, layer_init(nn.Linear(sizes[-1], out_dim), std=out_std))


class CNN(nn.Module):
    """§8.1 the image encoder under actor and critic. Channels first if the first axis is the
    shorter of first and last ((4, 84, 84) Atari), else last ((10, 10, 4) MinAtar). 36 pixels a
    side or more: the PPO paper's Atari CNN (Mnih et al. 2015); less: MinAtar's (Young & Tian)."""

    def __init__(self, obs_space: gym.spaces.Box) -> None:
        super().__init__()
        shape, self.channels_last = obs_space.shape, obs_space.shape[0] >= obs_space.shape[-1]
        channels, height, width = (shape[2], shape[0], shape[1]) if self.channels_last else shape
        self.scale = 255.0 if obs_space.dtype == np.uint8 else 1.0  # (bool: 0 or 1 already)
        if min(height, width) >= 36:  # (in, out, kernel, stride): 32 8x8 /4, 64 4x4 /2, 64 3x3 /1
            convs, self.features = [(channels, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)], 512
        else:  # 16 3x3 /1
            convs, self.features = [(channels, 16, 3, 1)], 128
        layers = []
        for c_in, c_out, kernel, stride in convs:
            layers += [layer_init(nn.Conv2d(c_in, c_out, kernel, stride)), nn.ReLU()]
        layers.append(nn.Flatten())
        flat = nn.Sequential(*layers)(torch.zeros(1, channels, height, width)).shape[1]  # (1, flat)
        self.net = nn.Sequential(*layers, layer_init(nn.Linear(flat, self.features)), nn.ReLU())
        print(f"images {shape} {obs_space.dtype}, channels {('first', 'last')[self.channels_last]}")

    def forward(self, x: Tensor) -> Tensor:  # (batch, *obs_shape) -> (batch, features)
        x = x.permute(0, 3, 1, 2) if self.channels_last else x  # (batch, C, H, W)
        return self.net(x.float() / self.scale)  # uint8 / 255: the one scaling


class Agent(nn.Module):
    """§8.1 an actor and a critic (images: on one CNN encoder); §8.3 a diagonal Normal policy."""

    def __init__(self, envs: gym.vector.VectorEnv, args: Args) -> None:
        super().__init__()
        obs_space = envs.single_observation_space
        vectors = len(obs_space.shape) == 1  # (else images: one CNN under both MLPs)
        self.encoder = nn.Identity() if vectors else CNN(obs_space)
        features = obs_space.shape[0] if vectors else self.encoder.features
        action_dim = int(np.prod(envs.single_action_space.shape))
        self.critic = mlp(features, 1, 1.0, args.hidden_sizes, args.activation)
        outputs = 2 * action_dim if args.state_dependent_std else action_dim  # means (log-stds)
        self.actor = mlp(features, outputs, 0.01, args.hidden_sizes, args.activation)
        logstd = torch.full((1, action_dim), args.init_logstd)  # (1, action_dim)
        self.actor_logstd = None if args.state_dependent_std else nn.Parameter(logstd)

    def get_value(self, x: Tensor) -> Tensor:
        return self.critic(self.encoder(x)).squeeze(-1)  # (batch,)

    def get_mean_and_logstd(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """§8.3 the Normal policy's mean and log-std, (batch, action_dim) each."""
        if self.actor_logstd is None:
            return self.actor(features).chunk(2, dim=-1)
        action_mean = self.actor(features)
        return action_mean, self.actor_logstd.expand_as(action_mean)

    def get_deterministic_action(self, x: Tensor) -> Tensor:
        return self.get_mean_and_logstd(self.encoder(x))[0]  # the mean, (batch, action_dim)

    def get_action_and_value(self, x: Tensor, action: Tensor | None = None) -> tuple[Tensor, ...]:
        """§8.3 an action sampled (or the given one), (batch, action_dim), its log-prob, the entropy
        and the value, (batch,) each; the Normal's formulas, cheaper than torch.distributions'."""
        features = self.encoder(x)  # (batch, features): the observation, or the CNN's output
        action_mean, action_logstd = self.get_mean_and_logstd(features)
        action_std = action_logstd.exp()
        if action is None:
            action = action_mean + action_std * torch.randn_like(action_mean)
        # log N(a; μ, σ) = -(a-μ)²/2σ² - log σ - log √(2π), H = 1/2 + log σ + log √(2π); summed
        z = (action - action_mean) / action_std
        log_prob = (-0.5 * z**2 - action_logstd - LOG_SQRT_2PI).sum(-1)  # (batch,)
        entropy = (0.5 + action_logstd + LOG_SQRT_2PI).sum(-1)  # (batch,)
        return action, log_prob, entropy, self.critic(features).squeeze(-1)


def normalize_obs(obs: np.ndarray, rms: RunningMeanStd | None, device: torch.device) -> Tensor:
    """§8.5 the agent's input: (obs - mean) / std clipped to ±NORM_CLIP (if rms), float32; images
    (batch, *image_shape) keep their uint8 or bool (a quarter of float32's memory or less)."""
    if rms is not None:
        obs = np.clip((obs - rms.mean) / np.sqrt(rms.var + EPSILON), -NORM_CLIP, NORM_CLIP)
    return torch.tensor(obs, dtype=torch.float32 if obs.ndim == 2 else None, device=device)


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminations: np.ndarray,
    truncations: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> np.ndarray:
    """§4.2 GAE (PPO paper Eqs. 11-12, GAE paper Eq. 16), backwards in time, every env at once;
    inputs and result (num_steps, num_envs). next_values[t] = V(s_{t+1}) of the state that really
    followed step t (§7.4: a truncated episode's final observation). The design's one "done" is two:
    terminations[t], s_{t+1} is terminal (V = 0: δ_t does not bootstrap); terminations[t] or
    truncations[t], the episode ended (the sum over future δ stops at t)."""
    episode_ends = np.maximum(terminations, truncations)
    # δ_t = r_t + γ V(s_{t+1}) - V(s_t), with V(terminal) = 0 (Eq. 12)
    deltas = rewards + gamma * next_values * (1.0 - terminations) - values
    advantages = np.zeros_like(rewards)
    last_advantage = np.zeros_like(rewards[0])  # (num_envs,)
    for t in reversed(range(rewards.shape[0])):
        # Â_t = δ_t + γλ (1 - done_t) Â_{t+1}, Eq. 11 summed backwards
        last_advantage = deltas[t] + gamma * gae_lambda * (1.0 - episode_ends[t]) * last_advantage
        advantages[t] = last_advantage
    return advantages


def clipped_surrogate_loss(ratio: Tensor, advantages: Tensor, clip_coef: float) -> Tensor:
    """§3.1 -L^CLIP (PPO paper Eq. 7): the negated mean of min(r Â, clip(r, 1-ε, 1+ε) Â)."""
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()


def kl_penalty_loss(ratio: Tensor, advantages: Tensor, kl: Tensor, kl_coef: float) -> Tensor:
    """§13.2 -L^KLPEN (PPO paper Eq. 8): the negated mean of r Â - β KL[π_old(·|s), π_θ(·|s)]."""
    return -(ratio * advantages - kl_coef * kl).mean()


def adapted_kl_coef(kl_coef: float, kl: float, kl_target: float) -> float:
    """§13.2 the next β (PPO paper Sec. 4): ×2 if the KL d > 1.5 d_targ, /2 if d < d_targ / 1.5"""
    return kl_coef * 2 if kl > 1.5 * kl_target else kl_coef / 2 if kl < kl_target / 1.5 else kl_coef


def truly_loss(ratio: Tensor, advantages: Tensor, kl: Tensor, delta: float, alpha: float) -> Tensor:
    """§13.2 Truly PPO's -L^TR-RB (Wang et al. 2019, arXiv:1903.07940): r Â, less α KL where the
    policy left the trust region (KL ≥ δ) in Â's favour (r Â > Â): a gradient back, not none."""
    surrogate = ratio * advantages
    rolled_back = (kl >= delta) & (surrogate > advantages)
    return -torch.where(rolled_back, surrogate - alpha * kl, surrogate).mean()


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, v_clip: float | None) -> Tensor:
    """§5.1 L^VF = mean((V - R̂)²); given v_clip, §5.2: max of unclipped and clipped errors."""
    unclipped = (values - returns) ** 2
    if v_clip is None:
        return unclipped.mean()
    clipped_values = old_values + torch.clamp(values - old_values, -v_clip, v_clip)
    return torch.max(unclipped, (clipped_values - returns) ** 2).mean()


def train(
    args: Args,
    envs: gym.vector.VectorEnv | None = None,
    writer: SummaryWriter | None = None,
    on_start: Callable[[dict], tuple[int, int]] | None = None,
    on_iteration_end: Callable[[int, int], None] | None = None,
    on_eval_step: Callable[[gym.Env], None] | None = None,
) -> Agent:
    """§9 PPO for args.total_timesteps env steps, logged to TensorBoard, then evaluated; returns
    the agent. Alone, it makes its envs and writer (runs/...); Part 2 passes its own, and hooks:
    on_start(what training changes, by name) -> the iteration and step to continue after,
    on_iteration_end(iteration, global_step), and on_eval_step for evaluate."""
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)  # torch draws every random number (actions, minibatches)
    envs = make_envs(args.env_id, args.num_envs, args.vector_mode) if envs is None else envs
    # Tiny MLPs lose to threads on a busy machine; a CNN keeps torch's default (the allowed cores).
    if len(envs.single_observation_space.shape) == 1:
        torch.set_num_threads(1)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}") if writer is None else writer
    num_envs = envs.num_envs  # the envs stepped here (args.num_envs, or a process's share of them)
    batch_size = num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // (args.num_envs * args.num_steps)  # §9 whole batches
    total_steps = num_iterations * args.num_envs * args.num_steps
    observation_space, action_space = envs.single_observation_space, envs.single_action_space
    agent = Agent(envs, args).to(device)
    params = [{"params": agent.parameters(), "kl_coef": 1.0}]  # §13.2 β (saved, as is the lr)
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=1e-5, fused=True)
    ewma_average = get_ema_multi_avg_fn(args.ewma_decay or 0.0)  # (with the decay of --ewma-decay)
    ewma = None if args.ewma_decay is None else AveragedModel(agent, multi_avg_fn=ewma_average)
    obs_rms = RunningMeanStd(shape=observation_space.shape) if args.norm_obs else None  # §8.5
    return_rms = RunningMeanStd() if args.norm_reward else None
    trained = {"model": agent, "optimizer": optimizer, "obs_rms": obs_rms, "return_rms": return_rms}
    trained["ewma"] = ewma  # §13.2 PPO-EWMA's proximal policy: an average of the agent's weights
    start_iteration, global_step = on_start(trained) if on_start else (0, 0)  # Part 2: resume
    group = optimizer.param_groups[0]  # (after on_start: a resume replaces the groups)
    objective = {  # the policy objective --policy-loss names (§3.1, §13.2), as a loss
        "clip": lambda r, a, kl: clipped_surrogate_loss(r, a, args.clip_coef),  # (r, Â, KL)
        "kl_penalty": lambda r, a, kl: kl_penalty_loss(r, a, kl, group["kl_coef"]),
        "truly": lambda r, a, kl: truly_loss(r, a, kl, args.trust_region_kl, args.rollback_coef),
    }[args.policy_loss]

    start_time, start_step = time.time(), global_step
    recent_returns = deque(maxlen=20)  # the last 20 training episodes, for the progress line
    # (num_envs, *obs_shape); env i is seeded seed + i + global_step (a resumed run: new episodes)
    next_obs = normalize_obs(envs.reset(seed=args.seed + global_step)[0], obs_rms, device)
    discounted_return = np.zeros(num_envs)  # (num_envs,) for reward scaling (§8.5)
    # §7.2 rollout storage, (num_steps, num_envs, ...): the agent's inputs (torch), the rest numpy
    obs = torch.zeros((args.num_steps, *next_obs.shape), dtype=next_obs.dtype, device=device)
    actions = np.zeros((args.num_steps, num_envs) + action_space.shape, dtype=np.float32)
    # (num_steps, num_envs) each; final_values: §7.4 V(final_obs) where an episode was truncated
    logprobs, rewards, terminations, truncations, values, final_values = (
        np.zeros((args.num_steps, num_envs), dtype=np.float32) for _ in range(6)
    )

    for iteration in range(start_iteration + 1, num_iterations + 1):
        if args.anneal_lr:  # §8.4 lr(t) = lr_0 (1 - t / T)
            frac = 1.0 - (iteration - 1.0) / num_iterations
            group["lr"] = frac * args.learning_rate

        # §9.1 phase 1: rollout collection
        rollout_start = time.time()  # for rollout_SPS: env steps per second while collecting
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            with torch.inference_mode():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            values[step], logprobs[step] = value.cpu().numpy(), logprob.cpu().numpy()
            actions[step] = action.cpu().numpy()
            # The batch keeps the sampled action (its log-prob's); the env gets it clipped.
            env_action = np.clip(actions[step], action_space.low, action_space.high)
            next_obs_raw, reward, terminated, truncated, infos = envs.step(env_action)
            if obs_rms is not None:
                obs_rms.update(next_obs_raw)
            if return_rms is not None:  # §8.5 scale by the std of the discounted return
                discounted_return = discounted_return * args.gamma + reward
                return_rms.update(discounted_return)
                reward = np.clip(reward / np.sqrt(return_rms.var + EPSILON), -NORM_CLIP, NORM_CLIP)
                discounted_return[terminated | truncated] = 0.0
            rewards[step], terminations[step], truncations[step] = reward, terminated, truncated
            next_obs = normalize_obs(next_obs_raw, obs_rms, device)
            # §7.4 a time limit, not the MDP, ended these: bootstrap from V(true last observation)
            if truncated.any():
                truncated_envs = np.flatnonzero(truncated)
                final_obs = np.stack(infos["final_obs"][truncated_envs])  # (truncated, *obs_shape)
                final_obs = normalize_obs(final_obs, obs_rms, device)
                with torch.inference_mode():
                    final_values[step, truncated_envs] = agent.get_value(final_obs).cpu().numpy()
            for i in np.flatnonzero(infos.get("_episode", [])):  # ended episodes' raw stats
                recent_returns.append(float(infos["episode"]["r"][i]))
                writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)
        rollout_sps = int(args.num_steps * args.num_envs / max(time.time() - rollout_start, 1e-6))

        # §9.1 phase 2: advantages and returns
        with torch.inference_mode():
            next_value = agent.get_value(next_obs).cpu().numpy()  # (num_envs,)
        # §7.3 V(s_{t+1}) of each step's true successor: the next row of `values`, V(next_obs)
        # after the last step, and (§7.4) V(final_obs) where the episode was truncated.
        next_values = np.concatenate((values[1:], next_value[None]))  # (num_steps, num_envs)
        next_values = np.where(truncations.astype(bool), final_values, next_values)
        advantages = compute_gae(
            rewards, values, next_values, terminations, truncations, args.gamma, args.gae_lambda
        )  # (num_steps, num_envs)
        returns = advantages + values  # §4.4 R̂_t = Â_t + V(s_t)
        b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values = (  # (batch_size, ...)
            torch.as_tensor(x, device=device).flatten(0, 1)
            for x in (obs, actions, logprobs, advantages, returns, values)
        )

        # §9.1 phase 3: update_epochs passes over shuffled minibatches
        stats = defaultdict(list)  # each minibatch's figures (tensors), averaged for the log
        kl_exceeded = False
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(batch_size)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start : start + minibatch_size]
                mb_obs, mb_actions = b_obs[mb_inds], b_actions[mb_inds]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb_obs, mb_actions)
                prox_logprob = b_logprobs[mb_inds]  # §13.2 π_prox: the behaviour policy (PPO), or
                if ewma is not None:  # PPO-EWMA's, the policy of the agent's weights averaged
                    with torch.no_grad():
                        prox_logprob = ewma.module.get_action_and_value(mb_obs, mb_actions)[1]
                logratio = newlogprob - prox_logprob
                ratio = logratio.exp()  # §2.3 r = π_θ(a|s) / π_θold(a|s), Eq. 6 (EWMA: / π_prox)
                kl = (ratio - 1) - logratio  # §10.1 per sample; its mean estimates KL[π_old, π_θ]
                # Â: §8.6 to mean 0 and std 1 over the minibatch, then weighted by π_prox / π_old
                # (§13.2 PPO-EWMA's decoupled objective; 1, exactly, in PPO)
                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    std = mb_advantages.std() + EPSILON
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / std
                mb_advantages = mb_advantages * (prox_logprob - b_logprobs[mb_inds]).exp()

                pg_loss = objective(ratio, mb_advantages, kl)  # §3.1 -L^CLIP, or §13.2's
                v_clip = args.clip_coef if args.clip_vloss else None  # §5.2 is optional
                v_loss = value_loss(newvalue, b_values[mb_inds], b_returns[mb_inds], v_clip)
                entropy_loss = entropy.mean()  # §6 E_t[H(π_θ, s_t)]
                # §6 L = -L^CLIP + c1 L^VF - c2 H: PPO paper Eq. 9's L^{CLIP+VF+S}, negated
                loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * entropy_loss
                with torch.no_grad():
                    stats["policy_loss"].append(pg_loss.detach())
                    stats["value_loss"].append(v_loss.detach())
                    stats["entropy"].append(entropy_loss.detach())
                    stats["old_approx_kl"].append((-logratio).mean())
                    stats["approx_kl"].append(kl.mean())  # §10.1 (here without gradient: a gauge)
                    stats["clipfrac"].append(((ratio - 1.0).abs() > args.clip_coef).float().mean())
                kl_exceeded = args.target_kl is not None and stats["approx_kl"][-1] > args.target_kl
                if kl_exceeded:
                    break  # stop before this minibatch moves the policy further
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(  # §8.4; a NaN or infinite norm raises before the step
                    group["params"], args.max_grad_norm, error_if_nonfinite=True
                )  # (the optimizer's list of parameters: no walk over the modules at each step)
                optimizer.step()
                if ewma is not None:  # §13.2 θ_prox ← β θ_prox + (1 - β) θ (the first step: θ)
                    ewma.update_parameters(agent)
            if kl_exceeded:
                break
        if args.policy_loss == "kl_penalty":  # §13.2 β from d, the KL after this update (Sec. 4)
            with torch.inference_mode():  # log-ratios (batch_size,); d: their §10.1 estimate
                logratio = agent.get_action_and_value(b_obs, b_actions)[1] - b_logprobs
            d = ((logratio.exp() - 1) - logratio).mean().item()
            group["kl_coef"] = adapted_kl_coef(group["kl_coef"], d, args.trust_region_kl)
            writer.add_scalar("charts/kl_coef", group["kl_coef"], global_step)

        # §10 diagnostics: the losses averaged over every minibatch of the iteration
        var_returns = np.var(returns)  # explained variance: how much of the returns V predicts
        explained_var = np.nan if var_returns == 0 else 1 - np.var(returns - values) / var_returns
        sps = int((global_step - start_step) / max(time.time() - start_time, 1e-6))
        scalars = {f"losses/{k}": torch.stack(v).mean().item() for k, v in stats.items()}
        scalars |= {"losses/explained_variance": explained_var, "charts/learning_rate": group["lr"]}
        scalars |= {"charts/SPS": sps, "charts/rollout_SPS": rollout_sps}
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step)
        writer.flush()  # the log on disk reaches this iteration
        mean_return = f"{np.mean(recent_returns):.1f}" if recent_returns else "n/a"
        eta = f"{(total_steps - global_step) / max(sps, 1):.0f}s"
        print(f"step {global_step}/{total_steps} | return {mean_return} | SPS {sps} | ETA {eta}")
        if on_iteration_end:
            on_iteration_end(iteration, global_step)  # Part 2: checkpoints, processes, signals

    envs.close()
    if args.eval_episodes > 0:
        eval_returns = evaluate(agent, args, obs_rms, on_eval_step)
        writer.add_scalar("eval/episodic_return", np.mean(eval_returns), global_step)
    writer.close()
    return agent


def evaluate(
    agent: Agent, args: Args, obs_rms: RunningMeanStd | None, on_step: Callable | None = None
) -> list[float]:
    """args.eval_episodes deterministic episodes (the policy's mode), a new env seeded past
    training's, statistics frozen; prints, returns their returns; on_step(env): the first's steps"""
    device, env = next(agent.parameters()).device, make_env(args.env_id, on_step is not None)
    if env.spec.max_episode_steps is None:  # no time limit: its episodes end at 10,000 steps
        env = gym.wrappers.TimeLimit(env, max_episode_steps=10_000)
    episodic_returns = []
    for episode in range(args.eval_episodes):
        # The first episode is seeded; the later ones continue its RNG.
        obs, _ = env.reset(seed=args.seed + args.num_envs if episode == 0 else None)
        episodic_return, episode_over = 0.0, False
        while not episode_over:
            if on_step and episode == 0:
                on_step(env)
            obs_tensor = normalize_obs(obs[None], obs_rms, device)
            with torch.inference_mode():
                action = agent.get_deterministic_action(obs_tensor)[0].cpu().numpy()
            action = np.clip(action, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            episodic_return += float(reward)
            episode_over = terminated or truncated
        episodic_returns.append(episodic_return)
    env.close()
    mean, std = np.mean(episodic_returns), np.std(episodic_returns)
    print(f"eval: mean return {mean:.1f} ± {std:.1f} over {len(episodic_returns)} episodes")
    return episodic_returns


class LifeLossEndsBootstrap(gym.vector.VectorWrapper):
    """§7.5 a lost life is a termination for training, V = 0 after it (as in the PPO paper's Atari
    runs), while the game goes on: the statistics recorded inside this wrapper see whole games."""

    lives = 0  # (num_envs,) after a step; none is lost at the first, nor by a new game (more)

    def step(self, actions: np.ndarray) -> tuple:
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        life_lost, self.lives = infos["lives"] < self.lives, infos["lives"]
        return obs, rewards, terminations | life_lost, truncations, infos


def make_env(env_id: str, render: bool) -> gym.Env:
    """One env (in color if render): make_envs' copies, and evaluation's (Atari's: make_envs'
    observations bit for bit, whole games). MinAtar registers its ids here (async workers too)."""
    if env_id.startswith("MinAtar/") and env_id not in gym.registry:
        importlib.import_module("minatar.gym").register_envs()
    if not env_id.startswith("ALE/"):
        return gym.make(env_id, render_mode="rgb_array") if render else gym.make(env_id)
    render_mode = "rgb_array" if render else None
    # frames one at a time (AtariPreprocessing skips 4), to ALE v5's limit of 108,000, as training
    env = gym.make(env_id, frameskip=1, max_episode_steps=108_000, render_mode=render_mode)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84)
    return gym.wrappers.FrameStackObservation(env, 4, padding_type="zero")


# ---------------------------------------------------------------------------------------------
# Part 2: long runs and many processes. Part 1 above is a whole PPO; a first reading stops here.
# ---------------------------------------------------------------------------------------------

import contextlib
import copy
import importlib.util
import multiprocessing
import pickle
import shlex
import shutil
import signal
import sys
import traceback
from dataclasses import asdict, fields, replace

import torch.distributed as dist
from PIL import Image
from typeguard import TypeCheckError, check_type

try:  # the run directory's lock: fcntl's on POSIX, msvcrt's on Windows
    import fcntl
except ImportError:
    fcntl = None
    import msvcrt

SCRIPT = os.path.basename(__file__)
AGENT_KEYS = ("args", "model", "obs_rms")  # agent.pt's (for evaluation); checkpoint.pt's add:
CHECKPOINT_KEYS = (*AGENT_KEYS, "script", "spaces", "optimizer", "iteration", "global_step", "rng")
# Ctrl-C, a cluster's or kill's request, a closed terminal (POSIX); one ignored (nohup) stays so
SIGNALS = (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
STOP_SIGNALS = [s for s in SIGNALS if s is not None and signal.getsignal(s) is not signal.SIG_IGN]
GIF_BYTES = 2**30  # --capture-gif keeps 1 GiB of frames at most: a longer episode, its start
CHECKPOINT_SECONDS = 60  # checkpoint.pt is written at the first boundary this long after the last
# The flags --resume and --eval-only take from the command line (--env-id only to confirm it)
RESUME_FLAGS = ("total_timesteps", "env_id", "track", "wandb_project_name", "wandb_entity")
EVAL_ONLY_FLAGS = ("eval_episodes", "capture_gif", "cuda", "env_id")
# Each number flag's interval, as in math ("[0, 1)": 0, not 1; None: unset), checked at start
INTERVALS = {"total_timesteps": "(0, inf)", "learning_rate": "(0, inf)", "num_envs": "(0, inf)"}
INTERVALS |= {"num_steps": "(0, inf)", "gamma": "[0, 1]", "gae_lambda": "[0, 1]"}
INTERVALS |= {"num_minibatches": "(0, inf)", "update_epochs": "(0, inf)", "clip_coef": "(0, inf)"}
INTERVALS |= {"ent_coef": "[0, inf)", "vf_coef": "[0, inf)", "max_grad_norm": "(0, inf)"}
INTERVALS |= {"target_kl": "(0, inf)", "trust_region_kl": "(0, inf)", "rollback_coef": "[0, inf)"}
INTERVALS |= {"ewma_decay": "[0, 1)", "init_logstd": "(-inf, inf)", "hidden_sizes": "(0, inf)"}
INTERVALS |= {"seed": f"[0, {2**31})"}  # (room for the envs' seeds, seed + index + step)
INTERVALS |= {"eval_episodes": "[0, inf)", "eval_every": "[0, inf)", "checkpoint_every": "[0, inf)"}


@dataclass
class RunArgs(Args):
    """Proximal Policy Optimization: PPO's flags (Part 1), then those of long runs (Part 2)."""

    eval_every: int = 0  # also evaluate every N iterations of training (0: after it only)
    checkpoint_every: int = 0  # also write checkpoint.pt every N iterations (always: each minute)
    resume: str | None = None  # a run directory (or its checkpoint.pt): continue that run
    save_model: bool = False  # also write agent.pt (model, statistics) with each checkpoint.pt
    capture_gif: bool = False  # write the first evaluation episode to {run directory}/episode.gif
    eval_only: str | None = None  # an agent.pt or checkpoint.pt (or its run directory): evaluate it
    track: bool = False  # sync the run to Weights & Biases (CleanRL's --track; pip install wandb)
    wandb_project_name: str = "ppo"  # the W&B project of --track
    wandb_entity: str | None = None  # the W&B team or user of --track (None: your default entity)
    iterations = property(lambda self: self.total_timesteps // (self.num_envs * self.num_steps))


def main() -> dict:
    """Checks the command line (bad input: one line, before any work), trains, returns the state."""
    for signum in STOP_SIGNALS:  # exit at once, 128 + signal, no traceback (training: see LongRun)
        signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))
    args = tyro.cli(RunArgs)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # rendered frames need no window (nor SDL)
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a pipe or a log file at once
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    saved_path, saved = args.resume if args.resume is not None else args.eval_only, None
    if saved_path is not None:  # a saved run, whose arguments replace the command line's
        if os.path.isdir(saved_path):
            saved_path = os.path.join(saved_path, "checkpoint.pt")
        try:
            saved = load_checkpoint(saved_path, CHECKPOINT_KEYS if args.resume else AGENT_KEYS)
            args = saved_run_args(args, saved["args"])
        except ValueError as e:
            sys.exit(f"error: {e}")
    if (error := args_error(args, world_size)) is not None:
        sys.exit(f"error: {error}")
    saved_dir = os.path.dirname(saved_path or "") or "."  # the saved run's directory
    if args.resume is not None and os.path.basename(saved_path) != "checkpoint.pt":
        sys.exit(f"error: --resume takes a run directory or its checkpoint.pt, not {saved_path}")
    if args.resume is not None and saved["iteration"] >= args.iterations:  # nothing to train
        iteration, steps = saved["iteration"], saved["global_step"]
        more = f"resume with --total-timesteps {steps + args.num_envs * args.num_steps} or more"
        done = f"{saved_dir} has trained {steps} steps, --total-timesteps {args.total_timesteps}"
        print(f"{done}: {next_command(args, saved_dir, iteration)}, or {more}")
        sys.exit(0)  # (a job that resubmits itself until done ends here)
    if hasattr(signal, "pthread_sigmask"):  # blocked in the async workers too: no Ctrl-C mid-step
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # (returns the mask before)
    try:
        envs = make_envs(args.env_id, args.num_envs // world_size, args.vector_mode)
    except Exception as e:  # noqa: BLE001 (an env's module or constructor may raise anything)
        for worker in multiprocessing.active_children():  # the async workers started: SIGKILL
            worker.kill()  # (they block the stop signals), or they print tracebacks after the line
        sys.exit(f"error: cannot make env {args.env_id!r}: {one_line(e)}")
    finally:  # (however it ends: this process's signal mask as it was, for a caller in it too)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if (error := env_error(args, envs, saved)) is not None:
        envs.close()  # (async workers: ended, not left to print tracebacks after the line)
        sys.exit(f"error: {error}")
    if args.cuda and torch.cuda.device_count() > 0:  # train()'s "cuda": this process's own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if args.eval_only is not None:  # train() with the saved agent, no iteration left

        def load_saved_agent(trained: dict) -> tuple[int, int]:
            load_states(saved, {"model": trained["model"], "obs_rms": trained["obs_rms"]})
            return args.iterations, 0

        print(f"evaluating {saved_path}: {args.eval_episodes} episodes of {args.env_id}")
        gif = Gif(f"{saved_dir}/episode.gif") if args.capture_gif else None  # (written whole)
        try:
            train(args, envs, NoLog(), load_saved_agent, on_eval_step=gif.add if gif else None)
            if gif:
                gif.write()
        except Exception as e:  # noqa: BLE001 (the env's code, the disk)
            sys.exit(f"error: evaluation failed: {one_line(e)}")
        sys.exit(0)
    # A resumed run's directory, or rank 0 makes one; rank 0 claims it before torchrun's meet
    run_dir = saved_dir if saved is not None else new_run_dir(args) if rank == 0 else None
    lock = claim_run_dir(run_dir, new=saved is None) if rank == 0 else None
    if lock is not None and args.resume is not None:  # (it was read before this lock)
        latest = load_checkpoint(saved_path, CHECKPOINT_KEYS)  # has a run written it since?
        if latest["global_step"] != saved["global_step"]:
            sys.exit(f"error: a run wrote {saved_path} as this one started: resume it again")
    if world_size > 1:  # gloo carries CPU tensors, nccl CUDA ones
        dist.init_process_group("cpu:gloo,cuda:nccl" if args.cuda else "gloo")
        if rank > 0:  # rank 0 speaks for the run (errors still reach stderr)
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        names = [run_dir]  # rank 0's run directory, sent to every rank
        dist.broadcast_object_list(names, src=0)
        run_dir = names[0]
    if args.track and rank == 0:  # (before LongRun makes its writer: wandb patches it to sync)
        wandb = importlib.import_module("wandb")  # (here: only --track pays for the import)
        name = os.path.basename(os.path.abspath(run_dir))  # (the id a resume continues)
        who = {"project": args.wandb_project_name, "entity": args.wandb_entity}
        what = {"config": asdict(args), "sync_tensorboard": True, "save_code": True}
        for signum in STOP_SIGNALS:  # (wandb's init and finish can take minutes: a stop exits)
            signal.signal(signum, lambda signum, frame: os._exit(128 + signum))
        try:
            wandb.init(**who, name=name, id=name, resume="allow", **what)
        except Exception as e:  # noqa: BLE001 (no login, no network: wandb's own errors)
            envs.close()
            sys.exit(f"error: --track: {one_line(e)}")
    long_run = LongRun(args, envs, run_dir, saved)
    if rank > 0:  # envs r * n + j (n = num_envs / K), seeded as one process seeds them (README)
        seed = args.seed + rank * (args.num_envs // world_size)
        args = replace(args, seed=seed, capture_gif=False, eval_episodes=0)
    gif = Gif(f"{run_dir}/episode.gif") if args.capture_gif else None
    try:
        with long_run:
            hooks = (long_run.start, long_run.end_iteration, gif.add if gif else None)
            train(args, FiniteCheck(envs), long_run.writer, *hooks)
            if gif:
                gif.write()
        if args.track and args.capture_gif:  # (rank 0's GIF: the others capture none)
            wandb.log({"eval/episode": wandb.Video(f"{run_dir}/episode.gif")})
        files = "TensorBoard logs, checkpoint.pt" + (", agent.pt" if args.save_model else "")
        print(f"{run_dir}: {files}; {next_command(args, run_dir, args.iterations)}")
    except BaseException as e:  # (the env's code may raise anything: even KeyboardInterrupt)
        if isinstance(e, SystemExit) and (long_run.stopped_by or str(e.code).startswith("error")):
            raise  # this script's own ending: a stop (exit 128 + signal), or an error line
        sys.exit(f"error: {run_failure(e, long_run)}")
    finally:  # the async workers end with the run; a dead one's error must not bury the line
        with contextlib.suppress(Exception):
            envs.close()
        envs.closed = True  # (gymnasium's __del__ would retry a failed close)
        if args.track and rank == 0:  # (failed or stopped: not "finished"; its lines come first)
            wandb.finish(exit_code=1 if sys.exc_info()[0] else 0)
        if lock is not None:  # (for a caller in the same process: the end of the run frees it)
            os.close(lock)
    return long_run.state


def args_error(args: RunArgs, world_size: int = 1) -> str | None:
    """The first reason these arguments cannot make a run of world_size processes, or None."""
    gpus, local_size = torch.cuda.device_count(), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if args.cuda and 0 < gpus < local_size:  # torchrun's processes on this machine, a GPU each
        return f"--cuda gives each process a GPU: start at most {gpus} here, not {local_size}"
    for name, value in asdict(args).items():  # numbers, and tuples of them (not bool; None: unset)
        flag, numbers = f"--{name.replace('_', '-')}", value if type(value) is tuple else (value,)
        for number in (x for x in numbers if type(x) in (int, float)):
            if name not in INTERVALS:  # (a flag new in a copy of this script)
                return f"{flag} has no interval: give it one in INTERVALS (Part 2)"
            if not in_interval(number, INTERVALS[name]):  # (NaN is in none)
                return f"{flag} must be in {INTERVALS[name]}, got {value}"
    if args.track and not args.eval_only and importlib.util.find_spec("wandb") is None:
        return "--track needs wandb, which is not installed: pip install wandb"
    if (args.capture_gif or args.eval_every or args.eval_only) and not args.eval_episodes:
        return "--capture-gif, --eval-every and --eval-only need --eval-episodes >= 1"
    if args.num_envs % world_size != 0:
        return f"--num-envs {args.num_envs} is not divisible by the {world_size} torchrun processes"
    if world_size > 1 and (args.eval_only or args.target_kl or args.policy_loss == "kl_penalty"):
        return "--eval-only, --target-kl and kl_penalty run in one process: use python"
    share = "" if world_size == 1 else f" / {world_size} processes"  # each splits its share
    batch = args.num_envs // world_size * args.num_steps  # (this process's)
    if batch % (n := args.num_minibatches) != 0:
        return f"num_envs{share} * num_steps = {batch} is not divisible by --num-minibatches {n}"
    if args.norm_adv and batch // args.num_minibatches < 2:
        return "--norm-adv needs minibatches of at least 2 samples: lower --num-minibatches"
    if args.total_timesteps < (batch_size := args.num_envs * args.num_steps):
        return f"--total-timesteps {args.total_timesteps} is below one batch ({batch_size} steps)"
    return None


def in_interval(x: float, interval: str) -> bool:  # (an interval as INTERVALS writes it)
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = low <= x if interval[0] == "[" else low < x
    return above and (x <= high if interval[-1] == "]" else x < high)


def env_error(args: RunArgs, envs: gym.vector.VectorEnv, saved: dict | None) -> str | None:
    """The first reason the envs do not fit this script or the saved run (or the GIF), or None."""
    env_id, action_space = args.env_id, envs.single_action_space
    obs_space, atari = envs.single_observation_space, env_id.startswith("ALE/")
    # (Atari: evaluation steps gymnasium's AtariEnv, which renders; the vector env does not)
    metadata = importlib.import_module("ale_py.env").AtariEnv.metadata if atari else envs.metadata
    if atari and args.eval_episodes and importlib.util.find_spec("cv2") is None:
        return "evaluating Atari needs OpenCV: pip install opencv-python-headless"
    if args.capture_gif and "rgb_array" not in metadata.get("render_modes", []):
        return f"--capture-gif: {env_id} cannot render frames (it has no rgb_array render mode)"
    if args.capture_gif and (fps := metadata.get("render_fps")) is not None and fps <= 0:
        return f"--capture-gif: {env_id} has render_fps {fps}, not a frame rate (None: 30)"
    if not isinstance(action_space, gym.spaces.Box):
        return f"{SCRIPT} takes Box actions; {env_id} has {action_space} (use ppo_discrete.py)"
    if len(action_space.shape) != 1 or action_space.dtype not in (np.float32, np.float64):
        return f"{env_id} has {action_space}; ppo_continuous.py takes a 1-D float32 or float64 Box"
    image = len(obs_space.shape or ()) == 3 and obs_space.dtype in (np.uint8, np.bool_)
    if not (isinstance(obs_space, gym.spaces.Box) and (len(obs_space.shape) == 1 or image)):
        hint = "a 1-D Box (see FlattenObservation) or a uint8/bool image, (H, W, C) or (C, H, W)"
        return f"the networks take {hint}; {env_id} has {obs_space}"
    if image and (min(obs_space.shape) < 3 or args.norm_obs):  # (the CNN's smallest kernel)
        return f"images of 3x3 or more, without --norm-obs (they are scaled by /255); {obs_space}"
    spaces = [str(obs_space), str(action_space)]  # (a checkpoint saves them; agent.pt does not)
    if saved is not None and saved.get("spaces", spaces) != spaces:
        return f"the saved run is for spaces {saved['spaces']}; {env_id} has {spaces}"
    return None


def saved_run_args(args: RunArgs, saved_args: dict) -> RunArgs:
    """The saved run's arguments and the typed flags its mode takes; ValueError for a typed flag
    that would change another, a saved argument not of its flag's type, an unconfirmed module."""
    resume = args.resume is not None
    own_flags, mode = (RESUME_FLAGS, "--resume") if resume else (EVAL_ONLY_FLAGS, "--eval-only")
    types = {field.name: field.type for field in fields(RunArgs)}
    for name, value in saved_args.items():
        if name not in types:
            raise ValueError(f"its saved {name} is not a flag of this {SCRIPT}")
        try:
            check_type(value, types[name])
        except TypeCheckError:
            raise ValueError(f"its saved {name} {value!r} is not a {types[name]}") from None
    saved = RunArgs(**saved_args)  # (with its mode's path: a resumed run saved its --resume too)
    if newer := [f"--{name.replace('_', '-')}" for name in types if name not in saved_args]:
        print(f"the saved run predates {' '.join(newer)}: they take their defaults")
    saved = replace(saved, resume=args.resume, eval_only=None if resume else args.eval_only)
    typed = tyro.cli(RunArgs, default=saved)  # the command line over the saved arguments
    changed = [name for name in types if repr(getattr(typed, name)) != repr(getattr(saved, name))]
    if ignored := [name for name in changed if name not in own_flags]:
        flag = f"--{ignored[0].replace('_', '-')}"
        raise ValueError(f"{flag} cannot be set with {mode}: the saved run's arguments apply")
    # gym.make("module:EnvId") imports module: a file never chooses the code that runs.
    if typed.env_id != (env := saved.env_id):
        raise ValueError(f"--env-id {typed.env_id} is not the saved run's env, {env}")
    if ":" in env and args.env_id != env:  # (args.env_id: typed, or the default)
        raise ValueError(f"the saved env {env} imports a module: trust it with --env-id {env}")
    return typed


def next_command(args: RunArgs, run_dir: str, iteration: int) -> str:
    """What resumes a run stopped after `iteration`, or evaluates it once complete (README)."""
    confirm = f" --env-id {shlex.quote(args.env_id)}" if ":" in args.env_id else ""
    script, run_dir = shlex.quote(sys.argv[0]), shlex.quote(run_dir) + confirm  # (shell-safe)
    if iteration < args.iterations:
        launcher = "torchrun [its flags as before]" if "WORLD_SIZE" in os.environ else "python"
        return f"resume with: {launcher} {script} --resume {run_dir}"
    return f"training is complete; evaluate with: python {script} --eval-only {run_dir}"


def new_run_dir(args: RunArgs) -> str:
    """Makes runs/{env_id}__{exp_name}__{seed}__{time} (taken: _2, ...), a name safe in runs/."""
    name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)[:200]
    try:
        for number in itertools.count(1):
            run_dir = f"runs/{name}" if number == 1 else f"runs/{name}_{number}"
            with contextlib.suppress(FileExistsError):
                os.makedirs(run_dir)  # (made here, or FileExistsError)
                return run_dir
    except OSError as e:
        sys.exit(f"error: cannot make the run directory in {os.getcwd()}: {e.strerror}")


def claim_run_dir(run_dir: str, new: bool = False) -> int:
    """One process writes into a run directory: it holds run_dir/lock (returned) until it closes
    it or ends, however it ends; another exits. PPO_NO_LOCK=1: the file, not locked (README)."""
    lock, unlocked = None, os.environ.get("PPO_NO_LOCK") == "1"
    try:  # (O_NOFOLLOW: POSIX's; msvcrt: Windows's lock)
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        lock = os.open(f"{run_dir}/lock", flags, 0o644)  # (not 0o777's default: no executable)
        if fcntl is not None and not unlocked:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif not unlocked:
            msvcrt.locking(lock, msvcrt.LK_NBLCK, 1)
    except OSError as e:  # (the lock is held: POSIX's EAGAIN, Windows's EACCES errors)
        if new:  # a refused start leaves nothing behind (a new run's directory holds its lock)
            shutil.rmtree(run_dir, ignore_errors=True)
        if lock is not None and isinstance(e, BlockingIOError | PermissionError):
            sys.exit(f"error: {run_dir} is in use by another process (it holds {run_dir}/lock)")
        sys.exit(f"error: cannot lock {run_dir}/lock: {one_line(e)} (no locks here? PPO_NO_LOCK=1)")
    return lock


def load_checkpoint(path: str, keys: tuple[str, ...]) -> dict:
    """This script's agent.pt or checkpoint.pt with `keys`; else ValueError (weights_only=True)."""
    not_ours = f"{path} is not a checkpoint written by {SCRIPT}"
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # torch.save writes a zip archive: else, not ours
                raise ValueError(not_ours)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"refused {path}: not only tensors and plain data (it could run code)")
    except Exception as e:  # noqa: BLE001 (a damaged file fails with many error types)
        raise ValueError(f"cannot read {path}: truncated or corrupted ({type(e).__name__})")
    ours = type(checkpoint) is dict and type(checkpoint.get("args")) is dict
    if not ours or checkpoint.get("script", SCRIPT) != SCRIPT or "model" not in checkpoint:
        raise ValueError(not_ours)  # (agent.pt has no "script")
    if missing := [key for key in keys if key not in checkpoint]:
        raise ValueError(f"{path} has no {', '.join(missing)}: is it an agent.pt?")
    for key in ("iteration", "global_step"):
        if key in keys and (type(checkpoint[key]) is not int or checkpoint[key] < 0):
            raise ValueError(f"{path} has {key} {checkpoint[key]!r}, not a count")
    return checkpoint


def load_states(saved: dict, objects: dict) -> None:
    """Loads each saved state into the object of its name; exits with one line on a misfit."""
    for name, obj in objects.items():
        try:
            if isinstance(obj, RunningMeanStd):
                if (shape := tuple(saved[name]["mean"].shape)) != obj.mean.shape:
                    raise ValueError(f"its shape is {shape}")
                obj.mean, obj.var = saved[name]["mean"].numpy(), saved[name]["var"].numpy()
                obj.count = float(saved[name]["count"])
            elif obj is not None:  # a network or an optimizer
                if isinstance(obj, torch.optim.Optimizer):  # (fused Adam: memory errors on misfits)
                    params = [param for group in obj.param_groups for param in group["params"]]
                    for index, state in saved[name]["state"].items():
                        for value in state.values():
                            if value.dim() > 0 and value.shape != params[index].shape:
                                raise ValueError(f"moments of shape {tuple(value.shape)}")
                obj.load_state_dict(saved[name])
        except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as e:
            lines = [line.strip() for line in str(e).strip().splitlines()]  # torch's: a heading,
            reason = lines[-1] if len(lines) < 3 else f"{lines[1]} (and {len(lines) - 2} more)"
            sys.exit(f"error: the saved {name} does not fit this script's network: {reason}")


def write_atomically(path: str, write: Callable[..., object]) -> None:
    """write(file) to a new temp file, fsync, rename over `path`: a crash or a full disk leaves
    the old file or the new one, never half; a link planted at either name is replaced."""
    temp = f"{path}.tmp"
    try:
        if os.path.lexists(temp):  # a failed write's, or a planted link
            os.remove(temp)
        with open(temp, "xb") as f:  # x: a new file, or an error
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as e:  # (a file object's names no file: this names `path`)
        raise OSError(e.errno, e.strerror or str(e), path) from e
    finally:  # (a failed write's temp file would only take the space a full disk lacks)
        if os.path.lexists(temp):
            os.remove(temp)


class Gif:
    """--capture-gif: the frames of evaluation's first episode (MinAtar's, 10x10 floats in [0, 1]:
    uint8, 16x16 pixels each), written to `path` atomically when evaluation is over."""

    def __init__(self, path: str) -> None:  # fps: the env's render_fps (None: 30)
        self.path, self.frames, self.fps = path, [], None

    def add(self, env: gym.Env) -> None:  # evaluate's on_step
        frame, self.fps = env.render(), env.metadata.get("render_fps")  # (height, width, 3)
        if frame.dtype != np.uint8:
            frame = np.kron(frame * 255, np.ones((16, 16, 1))).astype(np.uint8)
        if (len(self.frames) + 1) * frame.nbytes <= GIF_BYTES:  # (bounded memory)
            self.frames.append(Image.fromarray(frame))

    def write(self) -> None:
        first, frame_ms = self.frames[0], 1000 / (self.fps or 30)
        gif = {"save_all": True, "append_images": self.frames[1:], "duration": frame_ms, "loop": 0}
        write_atomically(self.path, lambda f: first.save(f, "GIF", **gif))
        print(f"gif saved to {self.path} ({len(self.frames)} frames)")


class NoLog:  # the writer of torchrun's ranks but 0 and of --eval-only: it logs nothing
    add_scalar = add_text = flush = close = staticmethod(lambda *args: None)


class FiniteCheck(gym.vector.VectorWrapper):  # a NaN or infinite observation or reward raises
    def step(self, actions: np.ndarray) -> tuple:
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        finite = np.isfinite(obs).reshape(len(rewards), -1).all(axis=1) & np.isfinite(rewards)
        for i in np.flatnonzero(infos.get("_final_obs", [])):
            finite[i] &= bool(np.isfinite(infos["final_obs"][i]).all())
        if not finite.all():  # (the first env that did)
            raise FloatingPointError(f"env {np.argmin(finite)} returned a NaN or infinite value")
        return obs, rewards, terminations, truncations, infos


class LongRun:
    """A run's iteration boundaries, in one process or torchrun's K (rank 0 logs and writes):
    `state`, the last boundary's (what training changes, the generator), goes to checkpoint.pt
    however the run ends. In `with`, a signal stops at the next boundary; a second, at once."""

    def __init__(self, args: RunArgs, envs: gym.vector.VectorEnv, run_dir: str, saved: dict | None):
        self.args, self.run_dir, self.saved = args, run_dir, saved
        spaces = [str(envs.single_observation_space), str(envs.single_action_space)]
        self.run = {"script": SCRIPT, "args": asdict(args), "spaces": spaces}
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.signal = self.stopped_by = None  # this rank's first signal; any rank's
        self.stop_at_once = False  # (no boundary ahead: in an evaluation, after the last)
        self.state, self.written_at = None, time.monotonic()  # the last boundary's; its last write
        self.on_disk = None if saved is None else saved["iteration"]  # checkpoint.pt's iteration

    def start(self, trained: dict) -> tuple[int, int]:
        """on_start: loads --resume's checkpoint; under torchrun, the ranks become one agent."""
        self.trained = trained  # what training changes, by its name in the file
        iteration, global_step = 0, 0
        if self.saved is not None:
            load_states(self.saved, trained)
            iteration, global_step = self.saved["iteration"], self.saved["global_step"]
            if self.rank == 0:
                torch.set_rng_state(self.saved["rng"])
            else:  # (its generator was not saved: it seeds anew, not as at the run's start)
                torch.manual_seed(self.args.seed + self.rank + global_step)
        if dist.is_initialized():  # (rank 0's weights, and §13.2 PPO-EWMA's average of them)
            for module in (m for m in (trained["model"], trained["ewma"]) if m is not None):
                for param in module.parameters():
                    dist.broadcast(param.data, src=0)
            average_gradients_over_ranks(trained["model"], trained["optimizer"])
        self.state = self.training_state(iteration, global_step)
        iterations, batch_size = self.args.iterations, self.args.num_envs * self.args.num_steps
        budget = f"{iterations} iterations x {batch_size} steps = {iterations * batch_size} steps"
        start = f", resumed after iteration {iteration}" if iteration > 0 else ""
        print(f"run {self.run_dir}: {budget}{start}")  # the budget as it will really run
        return iteration, global_step

    def training_state(self, iteration: int, global_step: int) -> dict:
        state = {**self.run, "iteration": iteration, "global_step": global_step}
        for name, obj in self.trained.items():
            is_rms = isinstance(obj, RunningMeanStd | None)
            state[name] = statistics_state(obj) if is_rms else copy.deepcopy(obj.state_dict())
        state["rng"] = torch.get_rng_state()  # (train() draws from torch's generator only)
        return state

    def end_iteration(self, iteration: int, global_step: int) -> None:
        """on_iteration_end: the ranks' §8.5 statistics merged; the state kept, and written a minute
        after the last write, every checkpoint_every and after the last; a stop; an evaluation."""
        sync_statistics_over_ranks(self.state, self.trained)
        self.state = self.training_state(iteration, global_step)
        last, checkpoint_every = iteration == self.args.iterations, self.args.checkpoint_every
        overdue = time.monotonic() > self.written_at + CHECKPOINT_SECONDS
        if last or overdue or (checkpoint_every and iteration % checkpoint_every == 0):
            self.write()
        stopped_by = torch.tensor(self.signal or 0)  # any rank's: one stopping alone would hang
        if dist.is_initialized():
            dist.all_reduce(stopped_by, op=dist.ReduceOp.MAX)
            if stopped_by or last:  # the ranks part here; rank 0 alone writes and evaluates
                dist.barrier()  # first: a rank that left early could abort in teardown
                dist.destroy_process_group()
        if stopped_by:
            self.stopped_by = int(stopped_by)
            sys.exit(128 + self.stopped_by)
        every = self.args.eval_every  # (the last iteration's evaluation is train()'s)
        if self.rank == 0 and every and iteration % every == 0 and not last:
            self.stop_at_once = True
            returns = evaluate(self.trained["model"], self.args, self.trained["obs_rms"])
            self.writer.add_scalar("eval/episodic_return", np.mean(returns), global_step)
        self.stop_at_once = last  # (after the last: train()'s evaluation)

    def write(self) -> None:
        """checkpoint.pt, and (--save-model) agent.pt: what evaluation needs of the same state."""
        if self.rank == 0 and self.state is not None:
            write_atomically(f"{self.run_dir}/checkpoint.pt", lambda f: torch.save(self.state, f))
            self.written_at, self.on_disk = time.monotonic(), self.state["iteration"]
            if self.args.save_model:
                agent_file = {key: self.state[key] for key in AGENT_KEYS}
                write_atomically(f"{self.run_dir}/agent.pt", lambda f: torch.save(agent_file, f))

    def __enter__(self) -> None:  # (in main's try: a writer that cannot start is one line)
        purge_step = None if self.saved is None else self.saved["global_step"] + 1  # (resumed)
        self.writer = NoLog() if self.rank else SummaryWriter(self.run_dir, purge_step=purge_step)
        table = "\n".join(f"|{key}|{value}|" for key, value in asdict(self.args).items())
        self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        self.handlers = {s: signal.signal(s, self.request_stop) for s in STOP_SIGNALS}

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        for signum in STOP_SIGNALS:  # a signal now would cut the checkpoint short
            signal.signal(signum, signal.SIG_IGN)
        try:
            self.write()
        finally:
            for signum, handler in self.handlers.items():
                signal.signal(signum, handler)
        if self.stopped_by is not None and self.state is not None:  # (None: before train)
            iteration, name = self.state["iteration"], signal.Signals(self.stopped_by).name
            command = next_command(self.args, self.run_dir, iteration)
            print(f"stopped by {name} after iteration {iteration}; {command}")

    def request_stop(self, signum: int, frame: object) -> None:
        if self.signal is not None or self.stop_at_once:
            self.stopped_by = signum
            sys.exit(128 + signum)
        self.signal = signum


def statistics_state(rms: RunningMeanStd | None) -> dict[str, Tensor] | None:
    """§8.5 running statistics as float64 tensors, which torch.save writes with the agent."""
    if rms is None:
        return None
    return {name: torch.tensor(value, dtype=torch.float64) for name, value in vars(rms).items()}


def one_line(error: Exception) -> str:
    """An exception as one line: its type and its message's first line, whole."""
    if isinstance(error, OSError) and error.strerror:  # its cause and file: "no space left on ..."
        return error.strerror.lower() + (f": {error.filename}" if error.filename else "")
    message = str(error).strip().split("\n")[0].removesuffix(".")
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def run_failure(error: BaseException, long_run: LongRun) -> str:
    """The line for an error that ended a run: what failed, its traceback's file, what next."""
    run_dir, state, rank = long_run.run_dir, long_run.state, long_run.rank
    complete = state is not None and state["iteration"] == long_run.args.iterations
    line = f"{'failed after training' if complete else 'training failed'}: {one_line(error)}"
    name = "traceback.txt" if os.environ.get("WORLD_SIZE", "1") == "1" else f"traceback_{rank}.txt"
    text = "".join(traceback.format_exception(error)).encode()
    with contextlib.suppress(OSError):  # (a disk that takes no file: the line alone)
        write_atomically(f"{run_dir}/{name}", lambda f: f.write(text))
        line += f" (traceback in {run_dir}/{name})"
    if long_run.on_disk is not None:  # the iteration of the checkpoint.pt there
        line += f"; {next_command(long_run.args, run_dir, long_run.on_disk)}"
    return line


def average_gradients_over_ranks(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """torchrun runs this script in K processes (ranks), num_envs / K envs each, all calling this
    and sync_statistics_over_ranks alike. Once backward() has every gradient, one all_reduce makes
    each the ranks' mean: all take the same step (§8.6 advantages normalized per rank)."""
    params = [param for param in model.parameters() if param.requires_grad]
    done = []  # the parameters whose gradient this backward() has completed

    def gradient_done(param: Tensor) -> None:
        done.append(param)
        if len(done) == len(params):
            done.clear()
            grads = [param.grad for param in params]
            mean = torch.cat([grad.flatten() for grad in grads]) / dist.get_world_size()
            dist.all_reduce(mean)  # (num_params,) the sum of the ranks' shares: the mean
            for grad, part in zip(grads, mean.split([grad.numel() for grad in grads])):
                grad.copy_(part.view_as(grad))

    def all_averaged(*hook_args: object) -> None:  # the optimizer's hook before each step
        if done:  # (the hook of a parameter without a gradient did not run)
            raise RuntimeError("under torchrun every parameter needs a gradient in each step")

    for param in params:
        param.register_post_accumulate_grad_hook(gradient_done)
    optimizer.register_step_pre_hook(all_averaged)


def sync_statistics_over_ranks(boundary: dict, trained: dict) -> None:
    """trained's §8.5 statistics, made those of all ranks' data: the `boundary` state's sums
    (count, Σx, Σx², in float64) plus each rank's additions since."""

    def sums(mean: np.ndarray, var: np.ndarray, count: float) -> np.ndarray:
        return count * np.stack([np.ones_like(mean), mean, var + mean**2])  # (3, *shape)

    for rms, agreed in ((trained[name], boundary[name]) for name in ("obs_rms", "return_rms")):
        if rms is None or not dist.is_initialized():
            continue
        agreed_sums = sums(agreed["mean"].numpy(), agreed["var"].numpy(), float(agreed["count"]))
        added = torch.tensor(sums(rms.mean, rms.var, rms.count) - agreed_sums)  # (3, *shape)
        dist.all_reduce(added)  # summed over the ranks (a copy: gloo frees no numpy memory)
        count, total, squares = agreed_sums + added.numpy()
        rms.mean, rms.count = total / count, float(count.flat[0])
        rms.var = squares / count - rms.mean**2


if __name__ == "__main__":
    main()
