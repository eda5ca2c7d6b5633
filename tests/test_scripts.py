"""Each script end to end on tiny budgets: logs, saved model, GIF, determinism, learned values."""

import re
import runpy
import subprocess
import sys
import time

import gymnasium as gym
import pytest
import torch
from conftest import ROOT, SCRIPTS, import_script, readme_code, scalars, stdout_of
from gymnasium.wrappers.utils import RunningMeanStd
from PIL import Image

# Two iterations of 2 envs x 128 steps: a Pendulum episode (200 steps) ends in the second one.
TINY = ["--total-timesteps", "512", "--num-envs", "2", "--num-steps", "128"]
TINY += ["--num-minibatches", "4", "--update-epochs", "2", "--eval-episodes", "2"]
REQUIRED_TAGS = {
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/learning_rate",
    "charts/SPS",
    "losses/value_loss",
    "losses/policy_loss",
    "losses/entropy",
    "losses/old_approx_kl",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
    "eval/episodic_return",
}
DEFAULT_ENV = {"ppo_continuous.py": "Pendulum-v1", "ppo_discrete.py": "CartPole-v1"}
TOY_ENV = {
    "ppo_continuous.py": "ConstantRewardBox-v0",
    "ppo_discrete.py": "ConstantRewardDiscrete-v0",
}


def load_agent(script: str, env_id: str, checkpoint: dict) -> torch.nn.Module:
    """A fresh Agent of the script, built for env_id with the checkpoint's arguments, with its
    weights loaded strictly."""
    module = import_script(script)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)])
    agent = module.Agent(envs, module.RunArgs(**checkpoint["args"]))
    agent.load_state_dict(checkpoint["model"])
    return agent


@pytest.mark.parametrize("script", SCRIPTS)
def test_tiny_run_logs_saves_and_records(run_script, capsys, script):
    # Observations normalized on request: the statistics must travel with the model.
    run_dir = run_script(script, *TINY, "--norm-obs", "--save-model", "--capture-gif")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run runs/{run_dir.name}: 2 iterations x 256 steps = 512 steps"
    gif = f"gif saved to runs/{run_dir.name}/episode.gif ("  # (its frames: the episode's steps)
    assert any(line.startswith(gif) and line.endswith(" frames)") for line in lines)
    files = "TensorBoard logs, checkpoint.pt, agent.pt"  # the last line: the files and what next
    evaluate = f"training is complete; evaluate with: python {ROOT / script} --eval-only runs/{run_dir.name}"
    assert lines[-1] == f"runs/{run_dir.name}: {files}; {evaluate}"

    logged = scalars(run_dir)
    assert REQUIRED_TAGS <= logged.keys()
    assert len(logged["losses/policy_loss"]) == 2  # one point per iteration

    checkpoint = torch.load(run_dir / "agent.pt", weights_only=True)
    assert checkpoint["args"]["env_id"] == DEFAULT_ENV[script]
    agent = load_agent(script, DEFAULT_ENV[script], checkpoint)
    module = import_script(script)
    obs_dim = {"ppo_continuous.py": 3, "ppo_discrete.py": 4}[script]  # Pendulum's, CartPole's
    assert checkpoint["obs_rms"]["mean"].shape == (obs_dim,)
    assert checkpoint["obs_rms"]["count"] > 512  # every observation of the run
    obs_rms = RunningMeanStd(shape=(obs_dim,))
    module.load_states(checkpoint, {"obs_rms": obs_rms})
    # The saved agent, with its saved normalization, evaluates exactly as it did after training.
    args = module.RunArgs(**checkpoint["args"])
    eval_returns = module.evaluate(agent, args, obs_rms)
    eval_return = sum(eval_returns) / 2
    assert eval_return == pytest.approx(logged["eval/episodic_return"][0], rel=1e-5)

    gif = Image.open(run_dir / "episode.gif")
    assert gif.n_frames > 5
    assert not (run_dir.parent.parent / "gifs").exists()  # never over the showcase GIFs


OPTIONAL_FLAGS = {
    "ppo_continuous.py": ["--clip-vloss", "--norm-obs", "--no-norm-reward", "--no-anneal-lr"],
    "ppo_discrete.py": ["--clip-vloss", "--no-norm-adv", "--no-anneal-lr", "--norm-reward"],
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_target_kl_stops_the_update_early(run_script, script):
    """The KL is exactly 0 before the first optimizer step, so a tiny --target-kl lets one step
    through and stops at the next minibatch. The first iteration's mean KL then covers two
    minibatches after at most one step, far below that of all 8 minibatches without the stop."""
    flags = [*TINY, *OPTIONAL_FLAGS[script]]
    full = scalars(run_script(script, *flags))
    stopped = scalars(run_script(script, *flags, "--target-kl", "1e-9"))
    assert REQUIRED_TAGS <= full.keys() and REQUIRED_TAGS <= stopped.keys()
    assert 0 < stopped["losses/approx_kl"][0] < full["losses/approx_kl"][0] / 4


def test_state_dependent_std_trains_and_reloads(run_script):
    run_dir = run_script("ppo_continuous.py", *TINY, "--state-dependent-std", "--save-model")
    checkpoint = torch.load(run_dir / "agent.pt", weights_only=True)
    assert checkpoint["args"]["state_dependent_std"]
    agent = load_agent("ppo_continuous.py", "Pendulum-v1", checkpoint)
    std = agent.get_mean_and_logstd(torch.randn(5, 3))[1].exp()  # (5, 1), one per observation
    assert std.shape == (5, 1) and std.unique().numel() == 5


@pytest.mark.parametrize("script", SCRIPTS)
def test_same_seed_gives_identical_returns(run_script, script):
    returns = [scalars(run_script(script, *TINY))["charts/episodic_return"] for _ in range(2)]
    assert returns[0] and returns[0] == returns[1]
    other_seed = scalars(run_script(script, *TINY, "--seed", "2"))["charts/episodic_return"]
    assert other_seed != returns[0]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("vector_mode", ["sync", "async"])
def test_learned_value_of_a_time_limited_env_is_the_infinite_horizon_value(
    run_script, script, vector_mode
):
    """Reward 1 each step, one constant observation, episodes cut only by a TimeLimit: the true
    value is 1 / (1 - γ) = 20. Treating the time limit as termination would teach a value near 12
    (the average over the episode of the return left before the cut). Envs stepped in their own
    processes (async) must hand over final observations just as in-process ones (sync) do."""
    env_id = f"toy_envs:{TOY_ENV[script]}"  # gymnasium's module:EnvId form imports toy_envs
    flags = ["--gamma", "0.95", "--total-timesteps", "20000", "--eval-episodes", "0"]
    flags += ["--vector-mode", vector_mode]
    if script == "ppo_continuous.py":
        flags.append("--no-norm-reward")  # learn V on the raw reward scale
    run_dir = run_script(script, "--env-id", env_id, *flags, "--save-model")

    checkpoint = torch.load(run_dir / "agent.pt", weights_only=True)
    agent = load_agent(script, TOY_ENV[script], checkpoint)
    # The observation is always zeros, so its running mean is zero and it normalizes to zeros.
    value = agent.get_value(torch.zeros(1, 2)).item()
    assert value == pytest.approx(1 / (1 - 0.95), rel=0.10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("script", SCRIPTS)
def test_cuda_run_logs_and_saves_an_agent_that_loads_on_the_cpu(run_script, script):
    run_dir = run_script(script, *TINY, "--norm-obs", "--cuda", "--save-model")
    assert REQUIRED_TAGS <= scalars(run_dir).keys()
    checkpoint = torch.load(run_dir / "agent.pt", map_location="cpu", weights_only=True)
    agent = load_agent(script, DEFAULT_ENV[script], checkpoint)
    assert all(parameter.device.type == "cpu" for parameter in agent.parameters())


@pytest.mark.parametrize("script", SCRIPTS)
def test_part_1_alone_is_a_whole_ppo(tmp_path, script):
    """The script cut just above the Part 2 banner, with `train(tyro.cli(Args))` under
    `if __name__ == "__main__":`, trains, logs to TensorBoard and evaluates; its command line has
    no flag of Part 2's (whose are the files beside the logs: agent, checkpoint, GIF)."""
    lines = (ROOT / script).read_text().splitlines()
    banner = next(i for i, line in enumerate(lines) if line.startswith("# Part 2"))
    part_1 = "\n".join(lines[: banner - 1])  # (the line above the banner's text is dashes)
    cut = tmp_path / script
    cut.write_text(f'{part_1}\n\n\nif __name__ == "__main__":\n    train(tyro.cli(Args))\n')
    run = [sys.executable, str(cut), *TINY]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "eval: mean return" in done.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert REQUIRED_TAGS <= scalars(run_dir).keys()
    usage = subprocess.run(
        [sys.executable, str(cut), "--help"], check=True, capture_output=True, text=True
    )
    assert "--learning-rate" in usage.stdout
    part_2 = {"--resume", "--eval-only", "--checkpoint-every", "--save-model", "--capture-gif"}
    assert not part_2 & set(usage.stdout.split())


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_network_flags_shape_both_networks_and_survive_resume(run_script, script):
    """--hidden-sizes and --activation build actor and critic alike; --init-logstd is the
    log-std's start; a resumed run builds the same networks from its saved arguments."""
    flags = ["--hidden-sizes", "32", "16", "--activation", "relu"]
    if script == "ppo_continuous.py":
        flags += ["--init-logstd", "-1.5"]
    module = import_script(script)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(DEFAULT_ENV[script])])
    agent = module.Agent(envs, module.tyro.cli(module.RunArgs, args=flags))
    for network in (agent.actor, agent.critic):
        linears = [layer for layer in network if isinstance(layer, torch.nn.Linear)]
        assert [layer.out_features for layer in linears[:-1]] == [32, 16]
        assert [type(layer) for layer in network[1:-1:2]] == [torch.nn.ReLU, torch.nn.ReLU]
    if script == "ppo_continuous.py":
        assert torch.equal(agent.actor_logstd.data, torch.full((1, 1), -1.5))
    run_dir = run_script(script, *flags, *TINY, "--total-timesteps", "256")
    resume = ["--resume", str(run_dir), "--total-timesteps", "512"]
    subprocess.run([sys.executable, str(ROOT / script), *resume], capture_output=True, check=True)
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert resumed["iteration"] == 2 and resumed["model"]["critic.2.weight"].shape == (16, 32)


def test_a_clock_that_does_not_move_gives_rates_not_a_division_by_zero(run_script, monkeypatch):
    """Where the clock ticks coarsely (Windows: every 15.6 ms) an iteration can take 0 s by it:
    the rates and the ETA survive that, and the lock file the run holds is not executable."""
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    run_dir = run_script("ppo_discrete.py", *TINY)
    assert len(scalars(run_dir)["charts/SPS"]) == 2
    assert (run_dir / "lock").stat().st_mode & 0o111 == 0  # (0o644: a lock is no program)


def test_the_readmes_code_evaluates_a_saved_agent(run_script, capsys):
    """README's "What you get" example, run as written on a real agent.pt: it loads and evaluates
    the agent as the run did."""
    run_dir = run_script("ppo_continuous.py", *TINY, "--norm-obs", "--save-model")
    run_evaluation = scalars(run_dir)["eval/episodic_return"][0]
    code = readme_code("agent.pt").replace("runs/.../agent.pt", str(run_dir / "agent.pt"))
    capsys.readouterr()
    exec(code, {})  # noqa: S102 (the README's own code)
    assert f"eval: mean return {run_evaluation:.1f} ±" in capsys.readouterr().out


def test_the_breakdown_benchmark_prints_each_part_of_a_run(tmp_path):
    """benchmarks/breakdown.py: the floor, the run's wall and each part of a tiny run, the
    script's train() holding the passes and steps it makes."""
    tiny = ["--total-timesteps", "512", "--num-envs", "2", "--num-steps", "128"]
    command = [sys.executable, str(ROOT / "benchmarks" / "breakdown.py"), "--", *tiny]
    printed = stdout_of(command, tmp_path)
    seconds = dict(re.findall(r"^\s+(.+?): (\d+\.\d+) s", printed, re.MULTILINE))
    seconds = {part: float(value) for part, value in seconds.items()}
    assert {"import torch, gymnasium", "imports", "forward passes", "train()"} <= seconds.keys()
    inside = ("forward passes", "backward passes", "optimizer steps", "env steps (vector env)")
    assert all(0 < seconds[part] < seconds["train()"] for part in inside)


def test_the_launch_benchmark_stops_at_the_line_before_the_loop():
    """benchmarks/speed.py's launch(): the seconds from the command to the budget line a run
    prints just before its loop, the process killed there, not waited for."""
    launch = runpy.run_path(str(ROOT / "benchmarks" / "speed.py"))["launch"]
    sleeper = "import time; print('run x: 1 iterations', flush=True); time.sleep(120)"
    endless = ["--total-timesteps", str(10**9), "--num-envs", "2", "--num-steps", "128"]
    discrete = str(ROOT / "ppo_discrete.py")
    for command in ([sys.executable, "-c", sleeper], [sys.executable, discrete, *endless]):
        start = time.monotonic()
        assert launch(command) < 60 and time.monotonic() - start < 60  # (killed, not waited for)
