"""`twinloop doctor` reports on this machine and fails when a required piece is broken."""

import subprocess
import sys


def _doctor(env_overrides=None):
    import os

    env = dict(os.environ, **(env_overrides or {}))
    return subprocess.run(
        [sys.executable, '-m', 'twinloop_bringup.cli', 'doctor'], capture_output=True, text=True, env=env, timeout=180
    )


def test_doctor_passes_in_the_project_environment():
    result = _doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        'rclpy + RMW',
        'DDS discovery range',
        'twinloop_interfaces',
        'MuJoCo rendering',
        'moveit_py',
        'ROS 2 launch',
    ):
        assert name in result.stdout
    engines = next(line for line in result.stdout.splitlines() if 'decision engines' in line)
    assert 'served: anti_grounding, iker, scripted_pick_place, vla' in engines and 'not built yet' not in engines
    assert 'RunPolicy is served by vla_policy' in result.stdout


def test_doctor_fails_without_the_dds_rule():
    result = _doctor({'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'})
    assert result.returncode == 1
    assert 'source twinloop_env.sh' in result.stdout
