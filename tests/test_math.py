"""The math of both scripts against independent, brute-force references (§3, §4, §5, §8)."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SCRIPTS, import_script
from gymnasium.wrappers.utils import RunningMeanStd
from torch.distributions import Categorical, Normal

BOX_4 = gym.spaces.Box(-1.0, 1.0, (4,))  # an observation space for the policy tests

MODULES = [import_script(script) for script in SCRIPTS]


def random_rollout(num_steps: int, num_envs: int, seed: int) -> dict[str, torch.Tensor]:
    """Random rewards and values with episode ends of both kinds sprinkled in, (num_steps, num_envs).
    As in a real rollout, next_values[t] = values[t+1] unless an episode ended at step t."""
    rng = np.random.default_rng(seed)
    ends = rng.random((num_steps, num_envs))
    terminations = ends < 0.1
    truncations = (ends >= 0.1) & (ends < 0.2)
    values = rng.normal(size=(num_steps, num_envs))
    next_values = np.concatenate([values[1:], rng.normal(size=(1, num_envs))])
    episode_ended = terminations | truncations
    next_values[episode_ended] = rng.normal(size=episode_ended.sum())  # V(final_obs) or anything
    rollout = {
        "rewards": rng.normal(size=(num_steps, num_envs)),
        "values": values,
        "next_values": next_values,
        "terminations": terminations.astype(float),
        "truncations": truncations.astype(float),
    }
    return {key: torch.tensor(value) for key, value in rollout.items()}


def episode_end(rollout: dict[str, torch.Tensor], t: int, i: int) -> int:
    """The last step at or after t in env i's episode: its first termination or truncation, or the
    rollout's last step."""
    num_steps = rollout["rewards"].shape[0]
    for k in range(t, num_steps):
        if rollout["terminations"][k, i] or rollout["truncations"][k, i]:
            return k
    return num_steps - 1


def brute_force_gae(rollout: dict[str, torch.Tensor], gamma: float, lam: float) -> torch.Tensor:
    """§4.2 Â_t = Σ_l (γλ)^l δ_{t+l} as an explicit sum that stops at the episode's end, with
    δ_k = r_k + γ (1 - terminated_k) V(s_{k+1}) - V(s_k)."""
    r, v, nv, term = (rollout[k] for k in ("rewards", "values", "next_values", "terminations"))
    advantages = torch.zeros_like(r)
    for t in range(r.shape[0]):
        for i in range(r.shape[1]):
            for k in range(t, episode_end(rollout, t, i) + 1):
                delta = r[k, i] + gamma * (1 - term[k, i]) * nv[k, i] - v[k, i]
                advantages[t, i] += (gamma * lam) ** (k - t) * delta
    return advantages


def gae(module, rollout: dict[str, torch.Tensor], gamma: float, lam: float) -> torch.Tensor:
    """The script's compute_gae, which takes and returns the rollout's numpy arrays."""
    arrays = {key: value.numpy() for key, value in rollout.items()}
    return torch.from_numpy(module.compute_gae(**arrays, gamma=gamma, gae_lambda=lam))


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_gae_matches_explicit_sums(module, lam, seed):
    rollout = random_rollout(num_steps=16, num_envs=3, seed=seed)
    expected = brute_force_gae(rollout, gamma=0.9, lam=lam)
    torch.testing.assert_close(gae(module, rollout, 0.9, lam), expected)


@pytest.mark.parametrize("module", MODULES)
def test_gae_lambda_zero_is_one_step_td(module):
    rollout = random_rollout(num_steps=10, num_envs=4, seed=2)
    r, v, nv, term = (rollout[k] for k in ("rewards", "values", "next_values", "terminations"))
    torch.testing.assert_close(gae(module, rollout, 0.99, 0.0), r + 0.99 * (1 - term) * nv - v)


@pytest.mark.parametrize("module", MODULES)
def test_gae_lambda_one_is_monte_carlo(module):
    """§4.1 λ = 1: the discounted rewards to the episode's end, plus the discounted value of the
    state after it unless it was terminal, minus V(s_t)."""
    gamma = 0.9
    rollout = random_rollout(num_steps=12, num_envs=3, seed=3)
    r, v, nv, term = (rollout[k] for k in ("rewards", "values", "next_values", "terminations"))
    expected = torch.zeros_like(r)
    for t in range(r.shape[0]):
        for i in range(r.shape[1]):
            end = episode_end(rollout, t, i)
            discounted = sum(gamma ** (k - t) * r[k, i] for k in range(t, end + 1))
            bootstrap = gamma ** (end - t + 1) * (1 - term[end, i]) * nv[end, i]
            expected[t, i] = discounted + bootstrap - v[t, i]
    torch.testing.assert_close(gae(module, rollout, gamma, 1.0), expected)


@pytest.mark.parametrize("module", MODULES)
def test_truncation_bootstraps_and_termination_does_not(module):
    """One env, one step that ends the episode: truncated, Â = r + γ V(final) - V; terminated,
    Â = r - V. And the next episode's advantage never leaks into this one."""
    later_step = {"rewards": [5.0], "values": [0.0], "next_values": [0.0]}
    base = {
        "rewards": torch.tensor([[1.0], later_step["rewards"]]),
        "values": torch.tensor([[0.5], later_step["values"]]),
        "next_values": torch.tensor([[3.0], later_step["next_values"]]),
    }
    no_end = torch.tensor([[0.0], [0.0]])
    end = torch.tensor([[1.0], [0.0]])
    truncated = gae(module, {**base, "terminations": no_end, "truncations": end}, 0.9, 0.95)
    terminated = gae(module, {**base, "terminations": end, "truncations": no_end}, 0.9, 0.95)
    assert truncated[0, 0].item() == pytest.approx(1.0 + 0.9 * 3.0 - 0.5)
    assert terminated[0, 0].item() == pytest.approx(1.0 - 0.5)


EPS = 0.2


def surrogate_case(ratio: float, advantage: float) -> float:
    """§3.2, case by case (the cases the table leaves out follow from min(r Â, clip(r) Â))."""
    if advantage > 0:
        return (1 + EPS) * advantage if ratio >= 1 + EPS else ratio * advantage
    if advantage < 0:
        return (1 - EPS) * advantage if ratio <= 1 - EPS else ratio * advantage
    return 0.0


CASES = [
    (1.1, 2.0),  # Â > 0, r < 1+ε: r Â
    (1.5, 2.0),  # Â > 0, r >= 1+ε: (1+ε) Â, clipped
    (0.5, 2.0),  # Â > 0, r far below 1: r Â (min keeps the worse, unclipped term)
    (0.9, -2.0),  # Â < 0, r > 1-ε: r Â
    (0.5, -2.0),  # Â < 0, r <= 1-ε: (1-ε) Â, clipped
    (1.7, -2.0),  # Â < 0, r far above 1: r Â
    (1.3, 0.0),  # Â = 0: no signal at all
]


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize(("ratio", "advantage"), CASES)
def test_clipped_surrogate_case_by_case(module, ratio, advantage):
    r = torch.tensor([ratio], requires_grad=True)
    loss = module.clipped_surrogate_loss(r, torch.tensor([advantage]), EPS)
    assert loss.item() == pytest.approx(-surrogate_case(ratio, advantage))
    loss.backward()
    clipped = surrogate_case(ratio, advantage) != ratio * advantage or advantage == 0
    # A clipped sample gives no gradient; an unclipped one gives d(-r Â)/dr = -Â.
    assert r.grad.item() == pytest.approx(0.0 if clipped else -advantage)


@pytest.mark.parametrize("module", MODULES)
def test_clipped_surrogate_is_the_mean_over_samples(module):
    ratios, advantages = zip(*CASES)
    loss = module.clipped_surrogate_loss(torch.tensor(ratios), torch.tensor(advantages), EPS)
    expected = -np.mean([surrogate_case(r, a) for r, a in CASES])
    assert loss.item() == pytest.approx(expected)


VALUE_CASES = [  # (new V, old V, return R̂)
    (1.1, 1.0, 3.0),  # moved less than ε: clipping changes nothing
    (2.0, 1.0, 3.0),  # moved past ε towards R̂: the clipped value, further from R̂, counts
    (0.0, 1.0, 3.0),  # moved past ε away from R̂: the unclipped error is the larger
    (1.5, 1.0, 1.4),  # overshot R̂ by more than ε: the clipped error is smaller, unclipped counts
]


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize(("new", "old", "ret"), VALUE_CASES)
def test_value_loss_case_by_case(module, new, old, ret):
    new_t, old_t, ret_t = (torch.tensor([x]) for x in (new, old, ret))
    assert module.value_loss(new_t, old_t, ret_t, None).item() == pytest.approx((new - ret) ** 2)
    clipped_v = old + min(max(new - old, -EPS), EPS)
    expected = max((new - ret) ** 2, (clipped_v - ret) ** 2)  # §5.2
    assert module.value_loss(new_t, old_t, ret_t, EPS).item() == pytest.approx(expected)


@pytest.mark.parametrize("module", MODULES)
def test_running_statistics_survive_a_checkpoint_exactly(module):
    """§8.5 statistics_state and load_states: a count past float32's exact integers (2^24), and
    the mean and variance, come back bit for bit."""
    rms = RunningMeanStd(shape=(2,))
    rms.update_from_moments(np.array([1.0, 2.0]), np.array([3.0, 4.0]), 2**24 + 1)
    restored = RunningMeanStd(shape=(2,))
    module.load_states({"obs_rms": module.statistics_state(rms)}, {"obs_rms": restored})
    assert restored.count == rms.count
    np.testing.assert_array_equal(restored.mean, rms.mean)
    np.testing.assert_array_equal(restored.var, rms.var)
    assert module.statistics_state(None) is None


@pytest.mark.parametrize("module", MODULES)
def test_normalize_obs_standardizes_and_clips(module):
    rms = RunningMeanStd(epsilon=1e-12, shape=(2,))  # (a count of 1e-12 before the data)
    rms.update(np.array([[0.0, 10.0], [2.0, 30.0]]))  # mean (1, 20), std (1, 10)
    obs = np.array([[2.0, 0.0], [1.0, 1e6]])
    expected = torch.tensor([[1.0, -2.0], [0.0, module.NORM_CLIP]])
    cpu = torch.device("cpu")
    torch.testing.assert_close(module.normalize_obs(obs, rms, cpu), expected)
    torch.testing.assert_close(module.normalize_obs(obs, None, cpu), torch.tensor(obs).float())


def agent_for(module, observation_space, action_space, **args) -> torch.nn.Module:
    """A fresh Agent for these spaces (the Agent reads only the vector env's single_*_space) and
    these Args fields."""
    envs = SimpleNamespace(
        single_observation_space=observation_space, single_action_space=action_space
    )
    return module.Agent(envs, module.Args(**args))


@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_normal_policy_matches_torch_distributions(state_dependent_std):
    """§8.3 the written-out Normal log-density and entropy, summed over 3 action dimensions, and
    its samples, against torch.distributions.Normal."""
    torch.manual_seed(0)
    agent = agent_for(
        MODULES[0], BOX_4, gym.spaces.Box(-1, 1, (3,)), state_dependent_std=state_dependent_std
    )
    with torch.no_grad():  # means and stds far from 0 and 1, and different in each dimension
        agent.actor[-1].bias.uniform_(-1, 1)
        if not state_dependent_std:
            agent.actor_logstd.uniform_(-1, 1)
    obs, actions = torch.randn(50, 4), torch.randn(50, 3) * 2
    _, log_prob, entropy, value = agent.get_action_and_value(obs, actions)
    mean, log_std = agent.get_mean_and_logstd(obs)
    reference = Normal(mean, log_std.exp())
    torch.testing.assert_close(log_prob, reference.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, reference.entropy().sum(-1))
    torch.testing.assert_close(value, agent.critic(obs)[:, 0])  # (batch,)

    # Many samples for one observation: their mean and std are the policy's.
    samples, *_ = agent.get_action_and_value(obs[:1].expand(40_000, 4))
    std = log_std[0].exp()
    torch.testing.assert_close(samples.mean(0), mean[0], atol=0.03 * std.max().item(), rtol=0)
    torch.testing.assert_close(samples.std(0), std, rtol=0.03, atol=0)


def test_categorical_policy_matches_torch_distributions():
    """§8.3 the written-out Categorical log-prob and entropy, and its samples."""
    torch.manual_seed(0)
    agent = agent_for(MODULES[1], BOX_4, gym.spaces.Discrete(5))
    with torch.no_grad():  # probabilities far from uniform
        agent.actor[-1].bias.copy_(torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5]))
    obs, actions = torch.randn(50, 4), torch.randint(0, 5, (50,)).float()
    _, log_prob, entropy, value = agent.get_action_and_value(obs, actions)
    reference = Categorical(logits=agent.actor(obs))
    torch.testing.assert_close(log_prob, reference.log_prob(actions))
    torch.testing.assert_close(entropy, reference.entropy())
    torch.testing.assert_close(value, agent.critic(obs)[:, 0])  # (batch,)

    samples, *_ = agent.get_action_and_value(obs[:1].expand(40_000, 4))
    frequencies = torch.bincount(samples, minlength=5) / 40_000
    torch.testing.assert_close(frequencies, reference.probs[0], atol=0.01, rtol=0)


@pytest.mark.parametrize("module", MODULES)
def test_the_gradient_is_clipped_to_max_grad_norm_before_each_step(module, tmp_path, monkeypatch):
    """§8.4: a gradient clipped to norm 1e-9 is far below Adam's eps (1e-5), so the one step
    moves each weight by about lr · 1e-4 at most; at 0.5 Adam's first step moves weights by the
    learning rate. Both runs start from the same weights (the seed)."""
    monkeypatch.chdir(tmp_path)  # (train() alone writes runs/ here)
    start, moved = {}, {}

    def keep_start(trained: dict) -> tuple[int, int]:  # on_start: the weights before any step
        start.update({k: v.clone() for k, v in trained["model"].state_dict().items()})
        return 0, 0

    for max_grad_norm in (0.5, 1e-9):
        args = module.Args(num_envs=2, num_steps=32, total_timesteps=64, num_minibatches=1)
        args.update_epochs, args.eval_episodes, args.max_grad_norm = 1, 0, max_grad_norm
        agent = module.train(args, on_start=keep_start)
        moved[max_grad_norm] = max(
            (agent.state_dict()[name] - value).abs().max().item() for name, value in start.items()
        )
    assert moved[0.5] > 0.5 * module.Args().learning_rate  # (annealing starts at the full rate)
    assert moved[1e-9] < moved[0.5] / 100
