"""§13.2 the design's extensions: the KL-penalty and Truly PPO objectives against values and
gradients derived by hand, the PPO paper's rule for β, and PPO-EWMA: off, it is the PPO from
before the extensions, bit for bit; on, the checkpoint holds it, a resume continues it, and
evaluation ignores it."""

import importlib.util
import itertools
import math
import runpy
import shlex
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SCRIPTS, import_script, run_in, scalars, stdout_of
from test_long_runs import ALIGNED, BATCH, load, resume_toy_run, toy_env
from test_scripts import TINY

MODULES = [import_script(script) for script in SCRIPTS]
BEFORE_EXTENSIONS = "1371a4b"  # the last commit without §13.2: its train() is the reference PPO

# (log r, Â) per sample; with δ = 0.02, k = r - 1 - log r: rolled back only where k >= δ and
# r Â > Â, which takes r > 1 with Â > 0, or r < 1 with Â < 0
SAMPLES = [
    (0.3, 1.0),  # k = 0.050 >= δ, r > 1, Â > 0: rolled back
    (-0.3, -2.0),  # k = 0.041 >= δ, r < 1, Â < 0: rolled back
    (0.3, -1.0),  # k >= δ but r Â < Â: the policy moved against Â, no rollback
    (-0.3, 0.5),  # k >= δ, r Â < Â: no rollback
    (0.1, 1.0),  # k = 0.005 < δ: inside the trust region
    (0.0, 3.0),  # r = 1: k = 0
]


def per_sample(log_r: float, advantage: float) -> tuple[float, float, float]:
    """r, k = r - 1 - log r (§10.1's estimate of the KL) and dk/d(log r) = r - 1, by hand."""
    r = math.exp(log_r)
    return r, r - 1 - log_r, r - 1


def objective_and_gradient(loss_fn, samples: list) -> tuple[float, list[float]]:
    """loss_fn(ratio, advantages, kl) and its gradient with respect to each log r."""
    log_ratio = torch.tensor([s[0] for s in samples], dtype=torch.float64, requires_grad=True)
    ratio = log_ratio.exp()
    kl = (ratio - 1) - log_ratio
    loss = loss_fn(ratio, torch.tensor([s[1] for s in samples], dtype=torch.float64), kl)
    loss.backward()
    return loss.item(), log_ratio.grad.tolist()


@pytest.mark.parametrize("module", MODULES)
def test_kl_penalty_loss_is_minus_the_mean_of_r_a_less_beta_kl(module):
    """PPO paper Eq. 8, sample by sample: -(r Â - β k) / n, and its derivative in log r,
    -(r Â - β (r - 1)) / n."""
    beta, n = 3.0, len(SAMPLES)
    value, gradient = objective_and_gradient(
        lambda r, a, kl: module.kl_penalty_loss(r, a, kl, beta), SAMPLES
    )
    expected_value, expected_gradient = 0.0, []
    for log_r, advantage in SAMPLES:
        r, k, dk = per_sample(log_r, advantage)
        expected_value -= (r * advantage - beta * k) / n
        expected_gradient.append(-(r * advantage - beta * dk) / n)
    assert value == pytest.approx(expected_value)
    assert gradient == pytest.approx(expected_gradient)


@pytest.mark.parametrize("module", MODULES)
def test_truly_loss_rolls_back_only_outside_the_trust_region_in_the_advantages_favour(module):
    """TR-PPO-RB, sample by sample: -(r Â - α k) / n where rolled back, else -r Â / n, and the
    derivatives in log r: -(r Â - α (r - 1)) / n, or -r Â / n."""
    delta, alpha, n = 0.02, 5.0, len(SAMPLES)
    value, gradient = objective_and_gradient(
        lambda r, a, kl: module.truly_loss(r, a, kl, delta, alpha), SAMPLES
    )
    expected_value, expected_gradient = 0.0, []
    for log_r, advantage in SAMPLES:
        r, k, dk = per_sample(log_r, advantage)
        rolled_back = k >= delta and r * advantage > advantage
        expected_value -= (r * advantage - (alpha * k if rolled_back else 0.0)) / n
        expected_gradient.append(-(r * advantage - (alpha * dk if rolled_back else 0.0)) / n)
    assert value == pytest.approx(expected_value)
    assert gradient == pytest.approx(expected_gradient)
    # the first sample's rollback outweighs its surrogate: a gradient step moves log r back to 0
    assert gradient[0] > 0


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("kl", [0.0, 0.001, 0.0066, 0.0067, 0.01, 0.0149, 0.0151, 0.05])
def test_the_kl_coefficient_follows_the_papers_rule(module, kl):
    """PPO paper §4: d < d_targ / 1.5 halves β, d > 1.5 d_targ doubles it, else β stays."""
    target, beta = 0.01, 0.7
    expected = beta / 2 if kl < target / 1.5 else beta * 2 if kl > target * 1.5 else beta
    assert module.adapted_kl_coef(beta, kl, target) == expected


class Quiet:
    """A writer that logs nothing (both scripts' train() take any)."""

    add_scalar = add_text = flush = close = staticmethod(lambda *args: None)


def trained_parameters(module, env_id: str, on_start=None, **flags) -> dict[str, torch.Tensor]:
    """The agent after a small in-process train() of `module` (its Args, with flags)."""
    args = module.Args(env_id=env_id, total_timesteps=1024, num_envs=2, num_steps=128)
    for name, value in {"num_minibatches": 4, "eval_episodes": 0, **flags}.items():
        setattr(args, name, value)
    threads = torch.get_num_threads()
    try:
        return module.train(args, writer=Quiet(), on_start=on_start).state_dict()
    finally:
        torch.set_num_threads(threads)


ENVS = {"ppo_continuous.py": "Pendulum-v1", "ppo_discrete.py": "CartPole-v1"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_ewma_off_is_the_ppo_before_the_extensions_bit_for_bit(tmp_path, script):
    """--ewma-decay None (and --policy-loss clip, the defaults) trains exactly the parameters the
    script trained before §13.2 was added, read from the repository's history."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_EXTENSIONS}:{script}"], cwd=ROOT, capture_output=True, check=False
    )
    if source.returncode != 0:
        pytest.skip(f"this clone has no commit {BEFORE_EXTENSIONS} (a shallow clone?)")
    path = tmp_path / f"before_{script}"
    path.write_bytes(source.stdout)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    before = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(before)
    module = import_script(script)
    now = {"learning_rate": module.Args().learning_rate}  # (a default changed since: Pendulum's)
    expected = trained_parameters(before, ENVS[script], **now)
    trained = trained_parameters(module, ENVS[script], **now)
    assert expected.keys() == trained.keys()
    assert all(torch.equal(expected[key], trained[key]) for key in expected)


@pytest.mark.parametrize("script", SCRIPTS)
def test_ewma_of_decay_zero_with_one_step_per_update_is_ppo(script):
    """With one minibatch and one epoch, decay 0 keeps the proximal policy at the behaviour one:
    PPO-EWMA's decoupled objective is then PPO's, up to the rounding of recomputed log-probs."""
    module = import_script(script)
    one_step = {"num_minibatches": 1, "update_epochs": 1}
    ppo = trained_parameters(module, ENVS[script], **one_step)
    ewma = trained_parameters(module, ENVS[script], **one_step, ewma_decay=0.0)
    for key in ppo:
        torch.testing.assert_close(ewma[key], ppo[key], rtol=1e-4, atol=1e-5)
    # (the check can fail: over many steps an update's ratios against the current policy never
    # reach the clip, while PPO's, against the behaviour policy, do)
    ppo, ewma = (trained_parameters(module, ENVS[script], ewma_decay=d) for d in (None, 0.0))
    assert not all(torch.allclose(ewma[key], ppo[key], atol=1e-5) for key in ppo)


@pytest.mark.parametrize("script", SCRIPTS)
def test_unclipped_the_decoupled_objective_is_ppos_whatever_the_proximal_policy(script):
    """(π_prox / π_old) (π_θ / π_prox) = π_θ / π_old: where clipping is never active (ε = 100),
    PPO-EWMA's objective is PPO's, its proximal policy cancelling, step after step. (A weight of
    π_old / π_prox, or a ratio against another policy, would not cancel.)"""
    module = import_script(script)
    ppo = trained_parameters(module, ENVS[script], clip_coef=100.0)
    ewma = trained_parameters(module, ENVS[script], clip_coef=100.0, ewma_decay=0.5)
    for key in ppo:
        torch.testing.assert_close(ewma[key], ppo[key], rtol=1e-3, atol=1e-3)  # (inverted: 0.3)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_ewma_averages_the_agents_weights_after_each_step(script):
    """θ_prox ← β θ_prox + (1 - β) θ after each optimizer step (the first step copies θ, as torch's
    AveragedModel does): checked against the agent's weights recorded after each step."""
    module, decay, recorded = import_script(script), 0.5, {}

    def on_start(trained: dict) -> tuple[int, int]:
        model, recorded["ewma"], recorded["steps"] = trained["model"], trained["ewma"], []

        def after_step(*args: object) -> None:
            recorded["steps"].append({k: v.clone() for k, v in model.state_dict().items()})

        trained["optimizer"].register_step_post_hook(after_step)
        return 0, 0

    one_update = {"total_timesteps": 256, "num_minibatches": 1, "update_epochs": 3}
    trained_parameters(module, ENVS[script], on_start, **one_update, ewma_decay=decay)
    expected, *later = recorded["steps"]
    for weights in later:
        expected = {key: decay * expected[key] + (1 - decay) * weights[key] for key in expected}
    averaged = recorded["ewma"].module.state_dict()
    assert len(later) == 2
    for key in expected:
        torch.testing.assert_close(averaged[key], expected[key])


@pytest.mark.parametrize("script", SCRIPTS)
def test_kl_penalty_measures_its_kl_after_the_update(monkeypatch, script):
    """One gradient step an update: the KL it makes, measured after it, exceeds a tiny d_targ, and
    β doubles each iteration (measured before the steps, it would be 0, and β would halve)."""
    betas = []
    record = staticmethod(
        lambda tag, value, step: betas.append(value) if tag == "charts/kl_coef" else None
    )
    monkeypatch.setattr(Quiet, "add_scalar", record)
    one_step = {"num_minibatches": 1, "update_epochs": 1, "trust_region_kl": 1e-9}
    trained_parameters(import_script(script), ENVS[script], **one_step, policy_loss="kl_penalty")
    assert betas == [2.0, 4.0, 8.0, 16.0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_resumed_ewma_run_is_the_uninterrupted_one(tmp_path, script):
    """The checkpoint holds the EWMA (its weights and its count) and the KL penalty's β: a run
    extended by --resume ends with the same agent, EWMA and β as one run straight through."""
    flags = [*toy_env("ConstantReward", script), *ALIGNED, "--no-anneal-lr", "--ewma-decay", "0.8"]
    flags += ["--policy-loss", "kl_penalty"]
    straight = run_in(tmp_path / "straight", script, *flags, "--total-timesteps", str(4 * BATCH))
    stopped = run_in(tmp_path / "stopped", script, *flags, "--total-timesteps", str(2 * BATCH))
    halfway = load(stopped / "checkpoint.pt")
    resume = resume_toy_run(stopped, script)
    run_in(tmp_path / "stopped", script, *resume, "--total-timesteps", str(4 * BATCH))
    expected, resumed = load(straight / "checkpoint.pt"), load(stopped / "checkpoint.pt")
    steps = 2 * 2 * 2  # iterations x update epochs x minibatches, to the halfway checkpoint
    assert halfway["ewma"]["n_averaged"] == steps and resumed["ewma"]["n_averaged"] == 2 * steps
    for name in ("model", "ewma"):
        assert all(torch.equal(expected[name][k], resumed[name][k]) for k in expected[name])
    betas = [run["optimizer"]["param_groups"][0]["kl_coef"] for run in (halfway, resumed, expected)]
    assert betas[0] != 1.0 and betas[1] == betas[2]


@pytest.mark.parametrize("script", SCRIPTS)
def test_eval_only_evaluates_the_trained_policy_not_the_ewma(tmp_path, capsys, script):
    """--eval-only of a PPO-EWMA run evaluates its agent (the training run's final evaluation, to
    the printed digit), although the checkpoint's EWMA weights differ from it."""
    run_dir = run_in(tmp_path, script, "--env-id", ENVS[script], *TINY, "--ewma-decay", "0.9")
    checkpoint = load(run_dir / "checkpoint.pt")
    ewma = {key.removeprefix("module."): value for key, value in checkpoint["ewma"].items()}
    assert not all(torch.equal(ewma[key], value) for key, value in checkpoint["model"].items())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path, script, "--eval-only", str(run_dir))
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out.splitlines()[-1]  # eval: mean return X ± Y over N episodes
    trained_eval = scalars(run_dir)["eval/episodic_return"][-1]
    assert float(printed.split()[3]) == pytest.approx(trained_eval, abs=0.051)  # (printed: .1f)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("objective", ["kl_penalty", "truly"])
def test_each_objective_trains_and_kl_penalty_logs_its_coefficient(tmp_path, script, objective):
    flags = [*toy_env("ConstantReward", script), *ALIGNED, "--total-timesteps", str(6 * BATCH)]
    run_dir = run_in(tmp_path, script, *flags, "--policy-loss", objective)
    logged = scalars(run_dir)
    assert len(logged["losses/policy_loss"]) == 6
    assert ("charts/kl_coef" in logged) == (objective == "kl_penalty")
    if objective == "kl_penalty":  # β starts at 1 and each update doubles, halves or keeps it
        betas = [1.0, *logged["charts/kl_coef"]]
        assert all(b / a in (0.5, 1.0, 2.0) for a, b in itertools.pairwise(betas))


def test_the_objectives_benchmark_runs_mujocos_setting_with_each_variant_and_the_papers_rule():
    """benchmarks/objectives.py: --print-command prints each variant's command, mujoco.py's with
    the variant's flags last; the EWMA is as old as PPO's proximal policy on average (half an
    update); minibatches 4 times smaller get the learning rate / 4 and an EWMA 4 times as many
    steps old (its centre of mass, β / (1 - β))."""
    benchmarks = ROOT / "benchmarks"
    module = runpy.run_path(str(benchmarks / "objectives.py"))  # (not run as __main__)
    case = ["--envs", "Hopper-v5", "--seeds", "201", "--print-command"]
    setting = shlex.split(stdout_of([sys.executable, str(benchmarks / "mujoco.py"), *case], ROOT))
    printed = stdout_of([sys.executable, str(benchmarks / "objectives.py"), "mujoco", *case], ROOT)
    variants = module["variants"](8, 10)  # (the setting's 10 epochs of 8 minibatches)
    assert [shlex.split(line) for line in printed.splitlines()] == [
        [*setting, *flags] for flags in variants.values()
    ]
    decay = float(variants["clip+ewma"][1])
    assert decay / (1 - decay) == pytest.approx(10 * 8 / 2, rel=1e-5)
    defaults = import_script("ppo_continuous.py").Args()
    smaller = module["smaller_minibatches"](defaults, 4)
    lr, minibatches = defaults.learning_rate, defaults.num_minibatches
    assert smaller[:4] == [
        "--num-minibatches",
        str(4 * minibatches),
        "--learning-rate",
        f"{lr / 4:g}",
    ]
    default_decay = float(module["variants"](minibatches, defaults.update_epochs)["clip+ewma"][1])
    small_decay = float(smaller[5])
    expected = 4 * default_decay / (1 - default_decay)
    assert small_decay / (1 - small_decay) == pytest.approx(expected, rel=1e-5)
