"""Learning end to end with each script's defaults, whose budgets fit CI (seconds each).
A random policy scores about -1200 on Pendulum-v1 and about 20 on CartPole-v1."""

from conftest import scalars


def test_cartpole_defaults_balance_it(run_script):
    run_dir = run_script("ppo_discrete.py")
    assert scalars(run_dir)["eval/episodic_return"][0] >= 475  # solved


def test_pendulum_defaults_swing_it_up(run_script):
    run_dir = run_script("ppo_continuous.py")
    assert scalars(run_dir)["eval/episodic_return"][0] >= -250
