"""Start and stop ROS 2 child processes the way rclpy likes it."""

import os
import signal
import subprocess
import sys


def start_python(args, env_overrides=None, **popen_kwargs):
    """Start `python args...` with the current environment plus overrides, in its own process group."""
    env = dict(os.environ)
    env.update(env_overrides or {})
    return subprocess.Popen([sys.executable, *args], env=env, start_new_session=True, **popen_kwargs)


def stop(process, timeout=10.0):
    """SIGINT, wait, then SIGKILL (SIGTERM sometimes leaves a spinning rclpy process hung).

    Returns the exit code, or None if the process had to be killed.
    """
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
        return None
