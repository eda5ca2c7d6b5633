"""Images: the CNN encoder's shapes, uint8/bool storage, Atari's whole games and lives, MinAtar,
CarRacing, and resume, --eval-only and GIFs on image runs. The Atari, MinAtar and CarRacing tests
need their packages (tests/requirements.txt installs them) and are skipped, saying why, without."""

import importlib.util
import re
import runpy
import shlex
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from conftest import (
    ACTION_KIND,
    ROOT,
    SCRIPTS,
    import_script,
    readme_code,
    run_in,
    scalars,
    stdout_of,
)

needs = {  # a test of an optional env family runs where its package is installed
    package: pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"needs {package} (pip install {package})"
    )
    for package, module in (
        ("ale-py", "ale_py"),
        ("minatar", "minatar"),
        ("box2d", "Box2D"),
        ("opencv-python-headless", "cv2"),
    )
}
SMALL = ["--num-minibatches", "2", "--update-epochs", "1"]


def image_space(shape: tuple[int, ...], dtype: type) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255 if dtype == np.uint8 else 1, shape=shape, dtype=dtype)


@pytest.mark.parametrize(
    ("shape", "dtype", "channels", "features"),
    [
        ((4, 84, 84), np.uint8, 4, 512),  # Atari: channels first, the Nature CNN
        ((96, 96, 3), np.uint8, 3, 512),  # CarRacing: channels last
        ((10, 10, 4), np.bool_, 4, 128),  # MinAtar: channels last, the MinAtar CNN
        ((10, 10, 10), np.bool_, 10, 128),  # MinAtar's Seaquest: equal axes read as last
        ((3, 20, 30), np.uint8, 3, 128),  # small frames, channels first
    ],
)
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_encoder_fits_the_image(script, shape, dtype, channels, features):
    encoder = import_script(script).CNN(image_space(shape, dtype))
    first_conv = next(layer for layer in encoder.net if isinstance(layer, torch.nn.Conv2d))
    assert first_conv.in_channels == channels and encoder.features == features
    batch = torch.randint(0, 2, (5, *shape)).to(torch.uint8 if dtype == np.uint8 else torch.bool)
    assert encoder(batch).shape == (5, features)


@pytest.mark.parametrize("script", SCRIPTS)
def test_uint8_is_scaled_once_and_channels_last_is_channels_first_transposed(script):
    """The same weights on an image given channels last, and given channels first with every
    value scaled by hand (x / 255): the same features. A second /255, or a transpose where a
    permute belongs, changes them."""
    module = import_script(script)
    torch.manual_seed(0)
    last = module.CNN(image_space((40, 36, 3), np.uint8))
    first = module.CNN(image_space((3, 40, 36), np.bool_))  # (bool: no scaling)
    first.load_state_dict(last.state_dict())
    images = torch.randint(0, 256, (2, 40, 36, 3), dtype=torch.uint8)  # (batch, H, W, C)
    by_hand = images.permute(0, 3, 1, 2).double() / 255  # (batch, C, H, W) in [0, 1]
    expected = first.net.double()(by_hand)  # (its layers, without the scaling and permute)
    assert torch.allclose(last(images).double(), expected, atol=1e-5)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_vector_agent_has_no_encoder_and_an_image_agents_mlps_share_one(script):
    """Vectors: no encoder. Images: one CNN (128 features for small frames) under the actor's and
    the critic's MLPs, whose hidden layers are the flags' (--hidden-sizes alone: a linear layer
    each), with the flags' activation."""
    module, kind = import_script(script), ACTION_KIND[script]

    def agent(name: str, flags: list[str]) -> torch.nn.Module:
        envs = gym.vector.SyncVectorEnv([lambda: gym.make(f"toy_envs:{name}{kind}-v0")])
        return module.Agent(envs, tyro.cli(module.Args, args=flags))

    assert isinstance(agent("ConstantReward", []).encoder, torch.nn.Identity)
    for hidden_sizes in ((), (32, 16)):
        flags = ["--hidden-sizes", *map(str, hidden_sizes), "--activation", "relu"]
        image_agent = agent("UintImage", flags)
        assert isinstance(image_agent.encoder, module.CNN)
        for net in (image_agent.actor, image_agent.critic):
            weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
            assert [weight.shape[1] for weight in weights] == [128, *hidden_sizes]
            activations = [type(layer) for layer in net if not isinstance(layer, torch.nn.Linear)]
            assert activations == [torch.nn.ReLU] * len(hidden_sizes)


@pytest.mark.parametrize("script", SCRIPTS)
def test_images_are_stored_and_updated_in_their_own_dtype(tmp_path, monkeypatch, script):
    """The rollout keeps uint8 observations: the agent gets uint8 batches while collecting and in
    every minibatch (its encoder makes them float), never float32 ones."""
    module = import_script(script)
    seen = set()

    class RecordingAgent(module.Agent):
        def get_action_and_value(self, x, action=None):
            seen.add((x.dtype, action is None))  # (action None: collecting; given: updating)
            return super().get_action_and_value(x, action)

    monkeypatch.setattr(module, "Agent", RecordingAgent)
    env_id = f"toy_envs:UintImage{ACTION_KIND[script]}-v0"
    args = module.Args(env_id, total_timesteps=128, num_envs=2, num_steps=32, eval_episodes=1)
    monkeypatch.chdir(tmp_path)
    module.train(args)
    assert seen == {(torch.uint8, True), (torch.uint8, False)}


@needs["ale-py"]
@needs["opencv-python-headless"]
def test_atari_logs_raw_scores_of_whole_games(tmp_path):
    """Two iterations of 4 envs x 512 steps of Space Invaders (a random game: about 700 steps, 3
    lives, a few hundred points), a whole-game evaluation and its GIF. Training's clipped rewards
    (at most 1 a step) and per-life episodes would log returns of a few points over a few hundred
    steps; whole games' raw scores are hundreds over 500+ steps."""
    flags = ["--env-id", "ALE/SpaceInvaders-v5", "--num-envs", "4", "--num-steps", "512", *SMALL]
    flags += ["--total-timesteps", "4096", "--eval-episodes", "1", "--capture-gif"]
    run_dir = run_in(tmp_path, "ppo_discrete.py", *flags)
    logged = scalars(run_dir)
    returns, lengths = logged["charts/episodic_return"], logged["charts/episodic_length"]
    assert returns and max(returns) > 50 and min(lengths) > 300
    assert all(score % 5 == 0 for score in returns)  # (Space Invaders scores 5 to 200 a hit)
    assert logged["eval/episodic_return"][0] % 5 == 0
    assert (run_dir / "episode.gif").exists()


@needs["ale-py"]
def test_atari_training_envs_end_bootstrap_at_a_lost_life_and_record_whole_games():
    """Against ale-py's vector env without our wrappers (same seed, same actions): training sees
    rewards clipped to [-1, 1] and a termination at each lost life, the game going on; the
    statistics are the raw sums over whole games."""
    import ale_py.vector_env

    module = import_script("ppo_discrete.py")
    envs = module.make_envs("ALE/SpaceInvaders-v5", 2)
    reference = ale_py.vector_env.AtariVectorEnv(
        "space_invaders",
        2,
        repeat_action_probability=0.25,  # (v5's)
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        reward_clipping=False,
        use_fire_reset=False,
    )
    envs.reset(seed=3)
    _, infos = reference.reset(seed=3)
    rng, raw_sums, lives, lost, games = np.random.default_rng(0), np.zeros(2), infos["lives"], 0, []
    for _ in range(2000):
        actions = rng.integers(0, 6, size=2)
        _, rewards, terminations, _, infos = envs.step(actions)
        _, raw, raw_terminations, _, raw_infos = reference.step(actions)
        raw_sums += raw
        life_lost = raw_infos["lives"] < lives
        lost += life_lost.sum()
        assert np.array_equal(rewards, np.clip(raw, -1, 1))
        assert np.array_equal(terminations, raw_terminations | life_lost)
        for i in np.flatnonzero(raw_terminations):  # a game over: its whole score
            assert infos["_episode"][i] and infos["episode"]["r"][i] == raw_sums[i]
            games.append(raw_sums[i])
            raw_sums[i] = 0
        assert not np.any(infos.get("_episode", np.zeros(2, bool)) & ~raw_terminations)
        lives = raw_infos["lives"]
    assert len(games) >= 2 and lost > len(games)  # lives lost within games, not only at their ends
    envs.close()
    reference.close()


@needs["ale-py"]
@needs["opencv-python-headless"]
def test_atari_evaluation_env_sees_what_training_sees():
    """Evaluation's env (gymnasium's AtariPreprocessing and FrameStackObservation over one AtariEnv)
    gives ale-py's vector env's observations bit for bit, where both are deterministic (no no-ops,
    no sticky actions): the agent is evaluated on the inputs it learned from."""
    import ale_py.vector_env

    training = ale_py.vector_env.AtariVectorEnv(
        "breakout", 1, noop_max=0, repeat_action_probability=0.0, use_fire_reset=False
    )
    env = import_script("ppo_discrete.py").make_env("ALE/Breakout-v5", render=False)
    assert env.spec.max_episode_steps == 108_000  # frames, ALE's own limit in training
    env.unwrapped.ale.setFloat("repeat_action_probability", 0.0)  # (applied at a seeded reset)
    env.env.noop_max = 0  # (FrameStackObservation's inner env: AtariPreprocessing)
    obs, _ = env.reset(seed=0)
    training_obs, _ = training.reset(seed=0)
    assert np.array_equal(obs, training_obs[0])
    for action in np.random.default_rng(0).integers(0, 4, size=150):
        obs, *_ = env.step(action)
        training_obs, *_ = training.step(np.array([action]))
        assert np.array_equal(obs, training_obs[0])
    training.close()


def two_iterations(tmp_path, capsys, script: str, env_id: str, eval_episodes: str) -> tuple:
    """Two iterations of 2 envs x 64 steps of env_id: the run directory and what it printed."""
    flags = ["--env-id", env_id, "--num-envs", "2", "--num-steps", "64", *SMALL]
    flags += ["--total-timesteps", "256", "--eval-episodes", eval_episodes]
    run_dir = run_in(tmp_path, script, *flags)
    assert len(scalars(run_dir)["losses/policy_loss"]) == 2
    return run_dir, capsys.readouterr().out


@needs["minatar"]
def test_minatar_learns_end_to_end_resumes_and_evaluates_with_a_gif(tmp_path, capsys):
    run_dir, out = two_iterations(tmp_path, capsys, "ppo_discrete.py", "MinAtar/Breakout-v1", "1")
    assert "images (10, 10, 4) bool, channels last" in out
    run_in(tmp_path, "ppo_discrete.py", "--resume", str(run_dir), "--total-timesteps", "512")
    assert len(scalars(run_dir)["losses/policy_loss"]) == 4  # resumed: two more iterations
    with pytest.raises(SystemExit) as exit_info:
        run_in(tmp_path / "eval", "ppo_discrete.py", "--eval-only", str(run_dir), "--capture-gif")
    assert exit_info.value.code == 0
    assert re.search(r"eval: mean return \S+ ± \S+ over 1 episodes", capsys.readouterr().out)
    assert (run_dir / "episode.gif").exists()


@needs["minatar"]
def test_the_readmes_flat_minatar_module_gives_the_mlps_400_numbers(tmp_path, capsys, monkeypatch):
    """README's flat_minatar.py as written (gymnax-blines' way into MinAtar: flattened frames, MLPs):
    `--env-id flat_minatar:FlatBreakout-v1` trains and evaluates on vectors, without the CNN."""
    for env_id in [env_id for env_id in gym.registry if env_id.startswith(("MinAtar/", "Flat"))]:
        monkeypatch.delitem(gym.registry, env_id)  # (as in a fresh process: the module registers)
    monkeypatch.delitem(sys.modules, "flat_minatar", raising=False)
    (tmp_path / "flat_minatar.py").write_text(readme_code("FlatBreakout"))
    monkeypatch.syspath_prepend(str(tmp_path))  # (beside the scripts, for a user)
    env_id = "flat_minatar:FlatBreakout-v1"
    run_dir, out = two_iterations(tmp_path, capsys, "ppo_discrete.py", env_id, "1")
    assert "images" not in out and "eval: mean return" in out
    model = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert model["actor.0.weight"].shape[1] == 400 == model["critic.0.weight"].shape[1]


@needs["box2d"]
def test_car_racing_trains_through_the_encoder(tmp_path, capsys):
    _, out = two_iterations(tmp_path, capsys, "ppo_continuous.py", "CarRacing-v3", "0")
    assert "images (96, 96, 3) uint8, channels last" in out


@needs["minatar"]
def test_the_pixels_benchmark_prints_commands_a_table_and_curves(tmp_path):
    """benchmarks/pixels.py: an id's family gives its setting (MinAtar's linear heads at γ 0.99,
    but Breakout's 64-64 heads at γ 0.999); --print-command prints one run's command alone, the
    README's commands among them; a short MinAtar run prints the env's row with each seed's
    evaluation (the printed command reproduces it) and --plot draws the curves; other ids are
    refused."""
    module = runpy.run_path(str(ROOT / "benchmarks" / "pixels.py"))  # (not run as __main__)
    benchmark = [sys.executable, str(ROOT / "benchmarks" / "pixels.py")]

    def print_command(env_id: str, seed: str) -> str:
        return stdout_of([*benchmark, "--print-command", "--envs", env_id, "--seeds", seed], ROOT)

    for env_id, setting in (
        ("ALE/Breakout-v5", module["ATARI"]),
        ("MinAtar/Freeway-v1", [*module["MINATAR"], "--gamma", "0.99", "--hidden-sizes"]),
        (
            "MinAtar/Breakout-v1",
            [*module["MINATAR"], "--gamma", "0.999", "--hidden-sizes", "64", "64"],
        ),
    ):
        printed = print_command(env_id, "7")
        assert printed.count("\n") == 1
        command = ["python", "ppo_discrete.py", "--env-id", env_id, "--seed", "7"]
        assert shlex.split(printed) == [*command, *setting, "--save-model"]
    readme = (ROOT / "README.md").read_text().splitlines()
    for env_id in ("MinAtar/SpaceInvaders-v1", "ALE/Breakout-v5"):  # the README's two commands
        assert print_command(env_id, "201").strip() in readme
    small = "--num-envs 4 --num-steps 128 --num-minibatches 2 --update-epochs 1 --eval-episodes 2"
    short = ["--envs", "MinAtar/Breakout-v1", "--total-timesteps", "1024", "--flags", small]
    printed = stdout_of([*benchmark, *short, "--seeds", "3", "--print-command"], ROOT)
    command = shlex.split(printed)
    plot, workdir = tmp_path / "curves.png", ["--workdir", str(tmp_path / "bench")]
    table = stdout_of(
        [*benchmark, *short, "--seeds", "3", "4", *workdir, "--plot", str(plot)], ROOT
    )
    (row,) = [line for line in table.splitlines() if line.startswith("| MinAtar/Breakout-v1 |")]
    evaluations = row.split("|")[3].split("(")[1].rstrip(") ").split(", ")  # each seed's
    assert len(evaluations) == 2 and plot.stat().st_size > 0
    rerun = stdout_of([sys.executable, str(ROOT / command[1]), *command[2:]], cwd=tmp_path)
    rerun_evaluation = float(re.search(r"eval: mean return (\S+) ±", rerun)[1])
    assert f"{rerun_evaluation:.1f}" == evaluations[0]
    refused = [*benchmark, "--envs", "CartPole-v1"]
    refused = subprocess.run(refused, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error: CartPole-v1 is neither")
