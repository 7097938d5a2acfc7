"""vla_policy through ROS (config/graphs.yaml's sim_vla graph: world_sim, execution, vla_policy)
driven by PolicyClient from another node. The policies are the test's own (tests/vla_test_policies.py,
none learned): deliberately bad ones (NaN, a 1 rad jump, a smooth dive out of the workspace) never
move the arm and end the goal with the execution node's reason; a scripted joint-space sweep runs
chunk after chunk with feedback, and a cancel brings the arm to rest at once."""

import os
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState

from twinloop_bringup import graphs
from twinloop_bringup.client import PolicyClient
from twinloop_ros.conversions import seconds
from vla_test_policies import DT

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')
TESTS = os.path.dirname(os.path.abspath(__file__))
EXTRA = {
    'world_sim': {'camera_rate': 5.0},
    'vla_policy': {
        'policy_modules': "['twinloop_vla.policies', 'vla_test_policies']",
        'cameras': "['front']",
        'default_policy': 'test_joint_sweep',
        'control_period': DT,  # the test policies' rate (the default is the recorded datasets' 10 Hz)
    },
}


@pytest.fixture
def graph(spawn, ros_context):
    env = {'PYTHONPATH': os.pathsep.join([TESTS, os.environ.get('PYTHONPATH', '')])}
    for spec in graphs.load('sim_vla', {'scene': SCENE}):
        overrides = [arg for k, v in EXTRA.get(spec.name, {}).items() for arg in ('-p', f'{k}:={v}')]
        spawn(*spec.arguments(), *overrides, env_overrides=env)
    node = rclpy.create_node('vla_policy_test', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    states = []
    node.create_subscription(JointState, '/joint_states', states.append, 100)
    client = PolicyClient(node, executor=executor)
    client.wait_for_server(90.0)
    client.spin_until(lambda: len(states) > 10, 30.0, 'joint states')
    _spin(executor, 1.0)  # let the execution node receive ground-truth objects
    yield client, executor, states
    executor.shutdown()
    node.destroy_node()


def _spin(executor, duration):
    end = time.monotonic() + duration
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)


@pytest.mark.parametrize(
    'policy, expected',
    [('test_nan', 'NaN'), ('test_jump', 'safety gate'), ('test_out_of_workspace', 'workspace')],
)
def test_a_bad_policy_never_moves_the_arm_and_ends_with_the_gates_reason(graph, policy, expected):
    client, executor, states = graph
    q0, first = np.array(states[-1].position[:7]), len(states)
    client.send('wave', policy=policy, max_chunks=3, timeout=30.0)
    result = client.wait(60.0)
    _spin(executor, 1.0)
    assert not result.success and result.chunks_executed == 0, result.reason
    assert 'refused by the execution node' in result.reason and expected in result.reason, result.reason
    assert policy in result.reason
    moved = max(np.abs(np.array(s.position[:7]) - q0).max() for s in states[first:])
    assert moved < 2e-3, f'the arm moved {moved:.4f} rad'


def test_run_policy_from_another_node_then_cancel_stops_at_once(graph):
    client, executor, states = graph
    q0 = np.array(states[-1].position[:7])
    feedback = []
    client.send('turn', max_chunks=60, timeout=60.0, on_feedback=feedback.append)  # the default policy
    client.spin_until(lambda: len(feedback) >= 6, 60.0, 'six executed chunks')
    canceled_at = seconds(states[-1].header.stamp)
    sent = time.monotonic()
    client.cancel()
    print(f'\ncancel at robot time {canceled_at:.3f} s acknowledged after {time.monotonic() - sent:.3f} s (wall)')
    result = client.wait(30.0)
    client.spin_until(lambda: seconds(states[-1].header.stamp) > canceled_at + 1.6, 30.0, 'joint states')
    assert not result.success and 'canceled' in result.reason and 'test_joint_sweep' in result.reason
    assert result.chunks_executed >= 6
    # The stop leaves vla_policy at the cancel's robot time (its log says so) and the execution node
    # serves it at once, also while a chunk is being gated (that chunk is then refused, not sent):
    # the arm's 0.3 rad/s collapses within 0.5 s (simulated) of the cancel. Afterwards the arm stays
    # within a few mrad (world_sim's servos ring briefly after the hard brake, below 0.01 rad/s
    # within about a second).
    since = lambda t: [s for s in states if seconds(s.header.stamp) > canceled_at + t]  # noqa: E731
    profile = [(round(seconds(s.header.stamp) - canceled_at, 2), round(s.velocity[0], 3)) for s in since(-0.3)]
    stopped = next(seconds(s.header.stamp) - canceled_at for s in since(0.0) if abs(s.velocity[0]) < 0.1)
    assert stopped < 0.5, profile
    spread = np.ptp([s.position[0] for s in since(1.0)])
    assert spread < 0.01, f'joint 1 moved {spread:.4f} rad later than 1 s after the cancel: {profile}'
    assert max(abs(s.velocity[0]) for s in since(1.5)) < 0.01, profile
    assert states[-1].position[0] - q0[0] > 0.1  # the sweep did turn joint 1
    latencies = [f.latency for f in feedback]
    assert all(0 <= latency < 2.0 for latency in latencies)  # robot clock: 20 ms joint-state ticks
    assert [f.chunk_index for f in feedback] == list(range(len(feedback)))
    depths = [(f.queue_depth, f.chunk_size, f.actions_skipped, round(f.latency, 3)) for f in feedback]
    assert max(f.queue_depth for f in feedback[1:]) >= 1, depths  # chunks were queued behind running ones
    print(
        f'\nstopped {stopped:.2f} s after the cancel (simulated), {spread * 1000:.1f} mrad after 1 s; '
        f'chunk latency (newest frame -> chunk ready) p50 {np.percentile(latencies, 50):.3f} s, '
        f'p90 {np.percentile(latencies, 90):.3f} s; inference '
        f'{np.median([f.inference_time for f in feedback]):.4f} s; queue depths {[f.queue_depth for f in feedback]}'
    )
    client.send('turn', max_chunks=4, timeout=30.0)  # a second goal after the cancel runs to its end
    result = client.wait(60.0)
    assert result.success and result.chunks_executed == 4, result.reason
