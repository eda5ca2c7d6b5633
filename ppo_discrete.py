"""Proximal Policy Optimization for discrete (Discrete) action spaces, in one file.

Read it top to bottom: arguments, network, §4 GAE, §3 clipped objective, then the training loop
(§7 rollout, §9 update, §10 logging) and a deterministic evaluation. "§" marks a section of the
design document, ppo_design.md (the README maps each section to the code).

    python ppo_discrete.py --env-id CartPole-v1
    torchrun --standalone --nproc_per_node 2 ppo_discrete.py --env-id CartPole-v1  # 2 processes
"""

import copy
import os
import pickle
import random
import signal
import sys
import time
import warnings
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

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
    exp_name: str = SCRIPT.removesuffix(".py")
    """the name of this experiment (part of the run directory's name)"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch and the environments)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, run the networks on the GPU if there is one (tiny MLPs are faster on the CPU)"""
    env_id: str = "CartPole-v1"
    """the environment: a registered id, or `module:EnvId` (imports module, which registers it)"""
    total_timesteps: int = 100_000
    """total environment steps of the experiment, summed over all environments"""
    learning_rate: float = 2e-3
    """the learning rate of the optimizer (§8.4)"""
    vector_mode: Literal["sync", "async"] = "sync"
    """sync steps the envs one after another in this process; async steps each in a process of
    its own, which pays off only when an env step costs far more than passing its data between
    processes (see the README)"""
    num_envs: int = 8
    """the number of parallel environments (§7), in all: under torchrun each of K processes runs
    num_envs / K of them, so the batch and every hyperparameter mean the same at any K"""
    num_steps: int = 32
    """the number of steps to run in each environment per policy rollout (§7.2 T)"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to zero over the run (§8.4)"""
    gamma: float = 0.98
    """the discount factor gamma (§4.2)"""
    gae_lambda: float = 0.8
    """the lambda of generalized advantage estimation (§4.3)"""
    num_minibatches: int = 1
    """the number of minibatches each rollout is split into per epoch (§9.1)"""
    update_epochs: int = 20
    """the number of passes over each rollout (§9.2)"""
    norm_adv: bool = True
    """if toggled, advantages are normalized per minibatch"""
    clip_coef: float = 0.2
    """the clipping coefficient epsilon of the surrogate objective and value loss (§3.1, §5.2)"""
    clip_vloss: bool = False
    """if toggled, the value loss is clipped (§5.2)"""
    ent_coef: float = 0.0
    """the entropy coefficient c2 (§6)"""
    vf_coef: float = 0.5
    """the value-loss coefficient c1 (§6)"""
    max_grad_norm: float = 0.5
    """the maximum norm of the gradient (§8.4)"""
    target_kl: float | None = None
    """if set, an iteration's update stops early once the approximate KL (§10.1) exceeds it"""
    save_model: bool = False
    """if toggled, save the agent to `runs/{run_name}/agent.pt`"""
    capture_gif: bool = False
    """if toggled, write one deterministic evaluation episode to `gifs/{env_id}.gif`"""
    eval_episodes: int = 10
    """the number of deterministic evaluation episodes after training"""
    eval_every: int = 0
    """also evaluate every N iterations during training (0: only after it), logged at that step as
    `eval/episodic_return` (the benchmark's learning curves)"""
    checkpoint_every: int = 0
    """write `runs/{run_name}/checkpoint.pt` every N iterations (0: only when training ends, however
    it ends: done, Ctrl-C / SIGTERM, or an error)"""
    resume: str | None = None
    """a checkpoint.pt or its run directory: continue that run, with its saved arguments, in its
    directory, to its total_timesteps"""
    eval_only: str | None = None
    """an agent.pt or checkpoint.pt: run `eval-episodes` deterministic episodes with it (its saved
    env, seed and normalization statistics) and exit; `--capture-gif` and `--cuda` apply"""


EPSILON = 1e-8  # keeps divisions by a standard deviation finite
# agent.pt holds what evaluation needs; checkpoint.pt adds what training needs to continue.
AGENT_KEYS = ("script", "args", "spaces", "model", "obs_rms")
CHECKPOINT_KEYS = (*AGENT_KEYS, "optimizer", "iteration", "global_step", "rng")
# The flags --eval-only takes from the command line; the rest come from the saved run.
EVAL_ONLY_FLAGS = ("eval_only", "eval_episodes", "capture_gif", "cuda")


def make_env(env_id: str) -> Callable[[], gym.Env]:
    def thunk() -> gym.Env:
        env = gym.make(env_id)
        # Records the raw (unnormalized) return and length of each episode in the step's info.
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


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
    """§8.1 separate actor and critic networks; §8.3 a Categorical policy over the actions."""

    def __init__(self, envs: gym.vector.VectorEnv) -> None:
        super().__init__()
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        self.critic = mlp(obs_dim, 1, out_std=1.0)
        self.actor = mlp(obs_dim, int(envs.single_action_space.n), out_std=0.01)  # the logits

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)  # (batch, 1)

    def get_deterministic_action(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor(x).argmax(dim=-1)  # (batch,)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """§8.3 samples an action (or takes the given one); returns it with its log-prob, the
        policy's entropy and the value, (batch,) each. The Categorical's formulas are written
        out: a torch.distributions.Categorical object costs more to build than the math."""
        log_probs = torch.log_softmax(self.actor(x), dim=-1)  # (batch, num_actions)
        if action is None:
            action = torch.multinomial(log_probs.exp(), num_samples=1).squeeze(-1)
        log_prob = log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)  # (batch,)
        entropy = -(log_probs.exp() * log_probs).sum(-1)  # (batch,) H = -Σ_a π(a) log π(a)
        return action, log_prob, entropy, self.critic(x)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminations: torch.Tensor,
    truncations: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> torch.Tensor:
    """§4.2 generalized advantage estimation, backwards in time, for every env at once (§7.2).

    All inputs are (num_steps, num_envs). values[t] = V(s_t); next_values[t] = V(s_{t+1}) of the
    state that really followed step t (for a truncated episode: its final observation, not the
    reset one).
    The design's single "done" (§4.2, §7.3) is split in two, as gymnasium 1.x reports it:
    - terminations[t]: s_{t+1} is terminal, its value is zero, so δ_t does not bootstrap;
    - terminations[t] or truncations[t]: the episode ended, so the sum over future δ stops at t.
    Returns the advantages, (num_steps, num_envs).
    """
    num_steps = rewards.shape[0]
    episode_ends = torch.maximum(terminations, truncations)
    # δ_t = r_t + γ V(s_{t+1}) - V(s_t), with V(terminal) = 0
    deltas = rewards + gamma * next_values * (1.0 - terminations) - values
    advantages = torch.zeros_like(rewards)
    last_advantage = torch.zeros_like(rewards[0])  # (num_envs,)
    for t in reversed(range(num_steps)):
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


def evaluate(
    agent: Agent,
    env_id: str,
    episodes: int,
    seed: int,
    device: torch.device,
    gif_path: str | None = None,
) -> list[float]:
    """Runs deterministic episodes (the most probable action) on a fresh env; prints and returns
    their returns. With gif_path, the first episode is written there."""
    env = gym.make(env_id, render_mode="rgb_array") if gif_path else gym.make(env_id)
    episodic_returns, frames = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)  # later episodes continue its RNG
        episodic_return, episode_over = 0.0, False
        while not episode_over:
            if gif_path and episode == 0:
                frames.append(Image.fromarray(env.render()))
            obs_tensor = torch.tensor(obs[None], dtype=torch.float32, device=device)
            with torch.inference_mode():
                action = agent.get_deterministic_action(obs_tensor)[0].item()
            obs, reward, terminated, truncated, _ = env.step(action)
            episodic_return += float(reward)
            episode_over = terminated or truncated
        episodic_returns.append(episodic_return)
    if gif_path:
        os.makedirs(os.path.dirname(gif_path) or ".", exist_ok=True)
        frame_ms = 1000 / env.metadata.get("render_fps", 30)
        frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    env.close()
    mean, std = np.mean(episodic_returns), np.std(episodic_returns)
    print(f"eval: mean return {mean:.1f} ± {std:.1f} over {episodes} episodes")
    return episodic_returns


def args_error(args: Args, world_size: int = 1) -> str | None:
    """The first reason the sizes and hyperparameters cannot make a run on world_size processes
    (torchrun's), or None."""
    sizes = ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs")
    for name in (*sizes, "learning_rate", "clip_coef"):
        value = getattr(args, name)
        if value <= 0:
            return f"--{name.replace('_', '-')} must be positive, got {value}"
    for name in ("gamma", "gae_lambda"):
        value = getattr(args, name)
        if not 0 <= value <= 1:
            return f"--{name.replace('_', '-')} must be in [0, 1], got {value}"
    if args.target_kl is not None and args.target_kl <= 0:
        return f"--target-kl must be positive, got {args.target_kl}"
    for name in ("eval_episodes", "eval_every", "checkpoint_every"):
        value = getattr(args, name)
        if value < 0:
            return f"--{name.replace('_', '-')} must be non-negative, got {value}"
    if args.capture_gif and args.eval_episodes == 0:
        return "--capture-gif records an evaluation episode: it needs --eval-episodes >= 1"
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


def spaces_error(env_id: str, observation_space: gym.Space, action_space: gym.Space) -> str | None:
    """The first reason this script cannot learn on these spaces, or None."""
    if not isinstance(action_space, gym.spaces.Discrete):
        return (
            f"{env_id} has a {type(action_space).__name__} action space; "
            "ppo_discrete.py takes Discrete actions (use ppo_continuous.py for Box ones)"
        )
    if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
        return (
            f"{env_id} has observation space {observation_space}; the MLP takes a 1-D Box "
            "(wrap the env with gymnasium.wrappers.FlattenObservation)"
        )
    return None


def saved_run_args(args: Args, saved_args: dict) -> Args:
    """The saved run's arguments, with --resume, or --eval-only and its own flags, from the command
    line. Raises ValueError if the command line sets any other flag: it would be ignored."""
    own_flags = ("resume",) if args.resume is not None else EVAL_ONLY_FLAGS
    mode = "--resume" if args.resume is not None else "--eval-only"
    defaults = Args()
    for field in fields(Args):
        changed = getattr(args, field.name) != getattr(defaults, field.name)
        if changed and field.name not in own_flags:
            flag = f"--{field.name.replace('_', '-')}"
            raise ValueError(f"{flag} cannot be set with {mode}: the saved run's arguments apply")
    try:
        saved = Args(**saved_args)
    except TypeError:
        raise ValueError(f"its saved arguments do not fit this {SCRIPT}") from None
    # A resumed run saves its --resume path too: only this command line's own flags apply.
    saved = replace(saved, resume=None, eval_only=None)
    return replace(saved, **{name: getattr(args, name) for name in own_flags})


def load_checkpoint(path: str, keys: tuple[str, ...]) -> dict:
    """Reads an agent.pt or checkpoint.pt that this script wrote and that has `keys`. Anything else
    (missing, truncated, corrupted, foreign, or a pickle with code in it) raises ValueError with a
    one-line reason. weights_only=True: code in the file is refused, never run."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it did not write
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except pickle.UnpicklingError:
        raise ValueError(
            f"refused {path}: not only tensors and plain data (loading the rest could run code)"
        ) from None
    except Exception as e:  # noqa: BLE001 (a damaged file fails with many error types)
        raise ValueError(
            f"cannot read {path}: truncated or corrupted ({type(e).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != SCRIPT:
        raise ValueError(f"{path} was not written by {SCRIPT}")
    if missing := [key for key in keys if key not in checkpoint]:
        raise ValueError(
            f"{path} has no {', '.join(missing)}: is it an agent.pt, not a checkpoint?"
        )
    return checkpoint


def rng_states() -> dict:
    """The python, numpy and torch random generators' states, in types weights_only loads."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_states(states: dict) -> None:
    """Restores what rng_states() returned."""
    numpy_state = copy.deepcopy(states["numpy"])
    numpy_state["state"]["key"] = numpy_state["state"]["key"].numpy().astype(np.uint32)
    random.setstate(states["python"])
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])


def training_state(
    run: dict,
    agent: Agent,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    global_step: int,
) -> dict:
    """A checkpoint: `run` (script, args, spaces) and a copy, not references, of everything that
    training changes, at an iteration boundary. The envs are not in it: see `--resume`."""
    return {
        **run,
        "model": copy.deepcopy(agent.state_dict()),
        "obs_rms": None,  # no observation normalization here, as in ppo_continuous.py without it
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "iteration": iteration,
        "global_step": global_step,
        "rng": rng_states(),
    }


def save_atomically(checkpoint: dict, path: str) -> None:
    """torch.save to a temp file in the same directory, fsync, then rename over `path`: a crash or
    a second Ctrl-C leaves the old file or the new one at `path`, never half of one."""
    with open(f"{path}.tmp", "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f"{path}.tmp", path)


def first_nonfinite_env(observations: np.ndarray, rewards: np.ndarray) -> int | None:
    """The index of the first env whose observation or reward is NaN or infinite, or None."""
    finite = np.isfinite(observations).reshape(len(rewards), -1).all(axis=1) & np.isfinite(rewards)
    return None if finite.all() else int(np.argmin(finite))


# torchrun runs this script in K processes (ranks 0..K-1), each with num_envs / K envs. These
# helpers are what they share; each must be called by every rank at the same point, since a
# collective waits for all of them. In a single process they return their input.


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


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """A minibatch's advantages, (minibatch_size,), shifted and scaled to mean 0 and std 1 by the
    statistics of the whole minibatch: under torchrun, of all ranks' parts of it."""
    all_advantages = gather_ranks(advantages)
    return (advantages - all_advantages.mean()) / (all_advantages.std() + EPSILON)


def mean_gradients_over_ranks(agent: nn.Module) -> None:
    """Replaces each parameter's gradient by its mean over the ranks. Each rank's loss is the mean
    over its part of the minibatch, so the mean gradient is the gradient of the whole minibatch's
    loss; all ranks then take the same step and their parameters stay identical. One all_reduce of
    all the gradients, flattened: DDP would do the same inside backward(), but only for calls
    through its wrapper's forward(), and it would hide this step of the math."""
    if not dist.is_initialized():
        return
    grads = [param.grad for param in agent.parameters()]
    mean_grad = mean_over_ranks(torch.cat([grad.flatten() for grad in grads]))  # (num_params,)
    for grad, mean in zip(grads, mean_grad.split([grad.numel() for grad in grads])):
        grad.copy_(mean.view_as(grad))


def stop_on_any_rank(signum: int | None) -> int | None:
    """The signal that any rank received, or None: all ranks stop after the same iteration, since
    one that stopped alone would leave the others waiting forever in their next collective."""
    if not dist.is_initialized():
        return signum
    agreed = torch.tensor(signum or 0)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return int(agreed) or None


stop_signal: int | None = None  # set by the first SIGINT or SIGTERM during training


def request_stop(signum: int, frame: object) -> None:
    """Training stops at the end of the current iteration and saves it. The default handlers come
    back, so a second signal ends the process at once; the checkpoint on disk stays whole, since it
    is only ever replaced atomically."""
    global stop_signal  # a signal handler reaches the training loop only through a global
    stop_signal = signum
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    args = tyro.cli(Args)
    # torchrun starts WORLD_SIZE processes and tells each its RANK; plain python is rank 0 of 1.
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    # --resume and --eval-only read a saved run, whose arguments replace the command line's.
    saved, saved_path = None, args.resume or args.eval_only
    if saved_path is not None:
        if os.path.isdir(saved_path):  # a run directory: its checkpoint
            saved_path = os.path.join(saved_path, "checkpoint.pt")
        keys = CHECKPOINT_KEYS if args.resume is not None else AGENT_KEYS
        try:
            saved = load_checkpoint(saved_path, keys)
            args = saved_run_args(args, saved["args"])
        except ValueError as e:
            sys.exit(f"error: {e}")
    if (error := args_error(args, world_size)) is not None:
        sys.exit(f"error: {error}")
    num_iterations = args.total_timesteps // (args.num_envs * args.num_steps)
    # This process's envs and its share of each batch and minibatch (all of them in one process).
    num_envs = args.num_envs // world_size
    batch_size = num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches

    # §7 vector envs. SAME_STEP autoreset: a step that ends an episode returns the next episode's
    # first observation, and the true last one in infos["final_obs"]; no step spans two episodes.
    # Both vector env classes work the same way.
    vector_env = (
        gym.vector.AsyncVectorEnv if args.vector_mode == "async" else gym.vector.SyncVectorEnv
    )
    try:
        envs = vector_env(
            [make_env(args.env_id) for _ in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
    except (gym.error.Error, ImportError) as e:
        sys.exit(f"error: cannot make env {args.env_id!r}: {e}")
    observation_space, action_space = envs.single_observation_space, envs.single_action_space
    if (error := spaces_error(args.env_id, observation_space, action_space)) is not None:
        sys.exit(f"error: {error}")
    spaces = [str(observation_space), str(action_space)]  # saved with the model, checked on load
    if saved is not None and saved["spaces"] != spaces:
        sys.exit(f"error: {saved_path} is for spaces {saved['spaces']}; {args.env_id} has {spaces}")

    # Rank r seeds with seed + r: its action noise and minibatch order are its own.
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # Tiny MLPs gain nothing from more threads, and extra threads slow a run many times over
    # when another process competes for the cores.
    torch.set_num_threads(1)
    use_cuda = torch.cuda.is_available() and args.cuda
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # this process's GPU on its machine
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world_size > 1:
        # gloo carries CPU tensors, nccl CUDA ones; torchrun's variables say where rank 0 is.
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo")

    agent = Agent(envs).to(device)
    # §8.4 Adam; fused=True runs its update of all parameters as one kernel, much faster here.
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    if saved is not None:
        try:
            agent.load_state_dict(saved["model"])
            if args.resume is not None:
                optimizer.load_state_dict(saved["optimizer"])
                # The checkpoint holds rank 0's generators; the others seed those training draws from
                # anew.
                if rank == 0:
                    set_rng_states(saved["rng"])
                else:
                    torch.manual_seed(args.seed + rank + saved["global_step"])
                    np.random.seed(args.seed + rank + saved["global_step"])
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            reason = str(e).strip().splitlines()[0]
            sys.exit(f"error: {saved_path} does not fit this script's network: {reason}")
    if world_size > 1:  # every rank starts from rank 0's parameters
        for param in agent.parameters():
            dist.broadcast(param.data, src=0)

    # Evaluation runs on a fresh env seeded past the training envs' seeds.
    eval_seed = args.seed + args.num_envs
    gif_path = f"gifs/{args.env_id}.gif" if args.capture_gif else None
    if args.eval_only is not None:
        evaluate(agent, args.env_id, args.eval_episodes, eval_seed, device, gif_path)
        sys.exit(0)

    if args.resume is not None:  # the same run directory; TensorBoard steps continue
        run_dir = os.path.dirname(saved_path)
        start_iteration, global_step = saved["iteration"], saved["global_step"]
    else:
        run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        start_iteration, global_step = 0, 0
    if world_size > 1:  # rank 0's name (the ranks may start in different seconds)
        run_dirs = [run_dir]
        dist.broadcast_object_list(run_dirs, src=0)
        run_dir = run_dirs[0]
    if rank == 0:  # rank 0 alone logs, saves and evaluates; the others only train
        # purge_step hides the points an interrupted process logged after its last checkpoint,
        # so that a resumed run logs each step once.
        purge_step = global_step + 1 if args.resume is not None else None
        writer = SummaryWriter(run_dir, purge_step=purge_step)
        if args.resume is None:
            hyperparameters = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
            writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{hyperparameters}")
    checkpoint_path = f"{run_dir}/checkpoint.pt"
    run = {"script": SCRIPT, "args": asdict(args), "spaces": spaces}

    # §7.2 rollout storage of this process's envs, (num_steps, num_envs, ...)
    obs = torch.zeros((args.num_steps, num_envs) + observation_space.shape, device=device)
    actions = torch.zeros((args.num_steps, num_envs) + action_space.shape, device=device)
    logprobs = torch.zeros((args.num_steps, num_envs), device=device)
    rewards = torch.zeros((args.num_steps, num_envs), device=device)
    terminations = torch.zeros((args.num_steps, num_envs), device=device)
    truncations = torch.zeros((args.num_steps, num_envs), device=device)
    values = torch.zeros((args.num_steps, num_envs), device=device)
    # V(final_obs) at the steps that truncated an episode (other entries are never read)
    final_values = torch.zeros((args.num_steps, num_envs), device=device)

    start_time, start_step = time.time(), global_step
    recent_returns = deque(maxlen=20)  # the last 20 training episodes, for the progress line
    # (num_envs, obs_dim). Env j of rank r is env i = r * num_envs + j of all args.num_envs, seeded
    # seed + i + global_step: the seeds of one process running them all. The envs' states are not
    # in a checkpoint: a resumed run starts new episodes (global_step > 0 gives them new seeds).
    next_obs_raw, _ = envs.reset(seed=args.seed + rank * num_envs + global_step)
    next_obs = torch.tensor(next_obs_raw, dtype=torch.float32, device=device)

    # The state at the last iteration boundary, written however training ends.
    checkpoint = training_state(run, agent, optimizer, start_iteration, global_step)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stopped_by = None  # the signal that stopped training, on any rank
    try:
        for iteration in range(start_iteration + 1, num_iterations + 1):
            if args.anneal_lr:  # §8.4 lr(t) = lr_0 (1 - t / T)
                frac = 1.0 - (iteration - 1.0) / num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            # §9.1 phase 1: rollout collection
            rollout_start = time.time()
            for step in range(args.num_steps):
                global_step += args.num_envs  # all ranks' steps
                obs[step] = next_obs
                with torch.inference_mode():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
                actions[step] = action
                logprobs[step] = logprob

                next_obs_raw, reward, terminated, truncated, infos = envs.step(action.cpu().numpy())
                if (bad_env := first_nonfinite_env(next_obs_raw, reward)) is not None:
                    sys.exit(
                        f"error: env {bad_env} returned a non-finite observation or reward at "
                        f"global step {global_step}; the last good state is in {checkpoint_path}"
                    )
                rewards[step] = torch.as_tensor(reward, device=device)
                terminations[step] = torch.as_tensor(terminated, device=device)
                truncations[step] = torch.as_tensor(truncated, device=device)
                next_obs = torch.tensor(next_obs_raw, dtype=torch.float32, device=device)

                # A time limit cut these episodes; the MDP did not end them. Bootstrap from the
                # value of each one's true last observation.
                if truncated.any():
                    truncated_envs = np.flatnonzero(truncated)
                    # (num_truncated, obs_dim)
                    final_obs = np.stack(infos["final_obs"][truncated_envs])
                    final_obs = torch.tensor(final_obs, dtype=torch.float32, device=device)
                    with torch.inference_mode():
                        final_values[step, truncated_envs] = agent.get_value(final_obs).flatten()

                # RecordEpisodeStatistics puts the finished episodes' stats in infos["final_info"].
                # Rank 0 logs its own envs' episodes: a sample of all of them.
                if rank == 0 and "episode" in infos.get("final_info", {}):
                    episode = infos["final_info"]["episode"]
                    for i in np.flatnonzero(infos["final_info"]["_episode"]):
                        recent_returns.append(float(episode["r"][i]))
                        writer.add_scalar("charts/episodic_return", episode["r"][i], global_step)
                        writer.add_scalar("charts/episodic_length", episode["l"][i], global_step)

            # env steps per second while collecting (all ranks'): the env's cost plus the policy's
            rollout_sps = int(args.num_steps * args.num_envs / (time.time() - rollout_start))

            # §9.1 phase 2: advantages and returns
            with torch.inference_mode():
                next_value = agent.get_value(next_obs).flatten()  # (num_envs,)
            # §7.3 V(s_{t+1}) of each step's true successor: the next row of `values`, V(next_obs)
            # after the last step, and V(final_obs) where the episode was truncated.
            next_values = torch.cat((values[1:], next_value.unsqueeze(0)))  # (num_steps, num_envs)
            next_values = torch.where(truncations.bool(), final_values, next_values)
            advantages = compute_gae(
                rewards, values, next_values, terminations, truncations, args.gamma, args.gae_lambda
            )  # (num_steps, num_envs)
            returns = advantages + values  # §4.4 R̂_t = Â_t + V(s_t)

            # flatten the batch: (num_steps, num_envs, ...) -> (batch_size, ...)
            b_obs = obs.reshape((-1,) + observation_space.shape)
            b_actions = actions.reshape((-1,) + action_space.shape)
            b_logprobs = logprobs.reshape(-1)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)

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
                        mb_advantages = normalize_advantages(mb_advantages)

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
                    mean_gradients_over_ranks(agent)  # the whole minibatch's gradient
                    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):  # before the step
                        sys.exit(
                            f"error: non-finite loss or gradient at global step {global_step}; "
                            f"the last good state is in {checkpoint_path}"
                        )
                    optimizer.step()
                if kl_exceeded:
                    break

            # §10 diagnostics; the losses are averaged over every minibatch of this iteration and
            # over the ranks, the explained variance is rank 0's batch's
            losses = mean_over_ranks(torch.stack([torch.stack(h).mean() for h in stats.values()]))
            if rank == 0:
                y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
                var_y = np.var(y_true)
                explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
                sps = int((global_step - start_step) / (time.time() - start_time))
                writer.add_scalar(
                    "charts/learning_rate", optimizer.param_groups[0]["lr"], global_step
                )
                for key, value in zip(stats, losses.tolist()):
                    writer.add_scalar(f"losses/{key}", value, global_step)
                writer.add_scalar("losses/explained_variance", explained_var, global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                writer.add_scalar("charts/rollout_SPS", rollout_sps, global_step)
                mean_return = f"{np.mean(recent_returns):.1f}" if recent_returns else "n/a"
                eta = (args.total_timesteps - global_step) / max(sps, 1)
                print(
                    f"step {global_step}/{args.total_timesteps} | return {mean_return} "
                    f"| SPS {sps} | ETA {eta:.0f}s",
                    flush=True,
                )
                # (the evaluation after training covers the last iteration)
                if (
                    args.eval_every > 0
                    and iteration % args.eval_every == 0
                    and iteration < num_iterations
                ):
                    eval_returns = evaluate(
                        agent, args.env_id, args.eval_episodes, eval_seed, device
                    )
                    writer.add_scalar("eval/episodic_return", np.mean(eval_returns), global_step)
            checkpoint = training_state(run, agent, optimizer, iteration, global_step)
            if rank == 0 and args.checkpoint_every > 0 and iteration % args.checkpoint_every == 0:
                save_atomically(checkpoint, checkpoint_path)
                writer.flush()  # the log on disk reaches at least as far as the checkpoint
            stopped_by = stop_on_any_rank(stop_signal)
            if stopped_by is not None:
                break
    finally:  # done, a signal, or an error: keep the last boundary and every logged point
        if rank == 0:
            save_atomically(checkpoint, checkpoint_path)
            writer.flush()
    envs.close()
    if world_size > 1:
        # Every rank is done with the others' data: without this barrier, a rank that left first
        # sometimes aborted in gloo's teardown.
        dist.barrier()
        dist.destroy_process_group()
    if stopped_by is not None:
        if rank == 0:
            launcher = "python" if world_size == 1 else "torchrun [its flags as before]"
            print(
                f"stopped by {signal.Signals(stopped_by).name} after iteration "
                f"{checkpoint['iteration']}; resume with: {launcher} {sys.argv[0]} --resume {run_dir}"
            )
        sys.exit(128 + stopped_by)

    if rank == 0:  # saving and evaluating the agent
        if args.save_model:
            save_atomically({key: checkpoint[key] for key in AGENT_KEYS}, f"{run_dir}/agent.pt")
            print(f"model saved to {run_dir}/agent.pt")

        if args.eval_episodes > 0:
            eval_returns = evaluate(
                agent, args.env_id, args.eval_episodes, eval_seed, device, gif_path
            )
            writer.add_scalar("eval/episodic_return", np.mean(eval_returns), global_step)
        writer.close()
