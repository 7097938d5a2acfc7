"""Session-wide setup for every test: the DDS rule and a ROS domain of this session's own.

rclpy is imported first on purpose: importing pyrealsense2 before rclpy segfaults the process
at exit (both carry Fast DDS singletons).
"""

import os

import rclpy  # noqa: F401  (must precede pyrealsense2 everywhere)
import pytest

from twinloop_bringup import graphs, processes, ros_env

SESSION_DOMAIN_ID = ros_env.apply_session_environment()
os.environ.setdefault('MUJOCO_GL', 'egl')
NODES_DIR = os.path.join(os.path.dirname(__file__), 'nodes')


def pytest_report_header(config):
    return (
        f'ROS_DOMAIN_ID={SESSION_DOMAIN_ID} '
        f'ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]} '
        f'FASTDDS_DEFAULT_PROFILES_FILE={os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]}'
    )


@pytest.fixture
def ros_context():
    """An initialised rclpy context of the test's own, shut down afterwards."""
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture
def ros_node(ros_context):
    """A test node with its own single-threaded executor: (node, executor)."""
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node('twinloop_test', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()


@pytest.fixture
def spawn():
    """Start child Python processes (ROS nodes); each is stopped with SIGINT at the end of the test."""
    started = []

    def _spawn(*args, **kwargs):
        process = processes.start_python(list(args), **kwargs)
        started.append(process)
        return process

    yield _spawn
    for process in started:
        processes.stop(process)


@pytest.fixture
def sim_arm(spawn):
    """Start config/graphs.yaml's sim_arm graph (world_sim + the execution node on ground-truth objects);
    extra: {node name: {parameter: value}} added on top of the graph's parameters. Returns {node name: process}."""

    def _start(scene, extra=None):
        started = {}
        for spec in graphs.load('sim_arm', {'scene': scene}):
            overrides = [f'{k}:={v}' for k, v in (extra or {}).get(spec.name, {}).items()]
            started[spec.name] = spawn(*spec.arguments(), *[arg for override in overrides for arg in ('-p', override)])
        return started

    return _start
