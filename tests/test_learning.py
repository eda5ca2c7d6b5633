"""Learning end to end with each script's defaults, on budgets that fit CI (a minute or so each).
A random policy scores about -1200 on Pendulum-v1 and about 20 on CartPole-v1."""

from conftest import scalars


def test_cartpole_defaults_learn_to_balance(run_script):
    run_dir = run_script("ppo_discrete.py", "--env-id", "CartPole-v1", "--total-timesteps", "30000")
    assert scalars(run_dir)["eval/episodic_return"][0] >= 475


def test_pendulum_defaults_learn_to_swing_up(run_script):
    run_dir = run_script(
        "ppo_continuous.py", "--env-id", "Pendulum-v1", "--total-timesteps", "50000"
    )
    assert scalars(run_dir)["eval/episodic_return"][0] >= -300
