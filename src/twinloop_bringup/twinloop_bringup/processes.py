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
    return stop_all([process], timeout)[0]


def stop_all(processes, timeout=10.0):
    """stop() for several processes at once: all are signalled first, then each waited for (the
    shutdowns overlap); their exit codes, None for those killed."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGINT)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
            codes.append(None)
    return codes
