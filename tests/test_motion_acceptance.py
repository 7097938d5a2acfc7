"""An ExecuteMotion goal whose acceptance is lost on the way back (seen once in a fresh clone's CI: the
execution node ran the goal, the orchestrator waited for its acceptance until it gave up): RosPorts
asks the server for the result by the goal's id. A real action server and client over DDS in this
process; only the acceptance is dropped, on the client's side."""

import threading

import pytest
from rclpy.action import ActionClient, ActionServer
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future
from trajectory_msgs.msg import JointTrajectoryPoint
from twinloop_interfaces.action import ExecuteMotion

from twinloop_core.outcomes import GoalEnded
from twinloop_core.ports import CancelToken
from twinloop_planning.ports.ros import LatestState, RosClients, RosPorts


def _motion_server(node, received):
    def execute(handle):
        received.append(bytes(handle.goal_id.uuid))
        handle.succeed()
        return ExecuteMotion.Result(success=True, reason=f'ran {handle.request.joint_path.points[0].positions[0]}')

    return ActionServer(node, ExecuteMotion, 'execute_motion_under_test', execute)


def _drop_acceptances(client):
    """The goal still goes out; the future its acceptance would complete is not the one returned."""
    send = client.send_goal_async

    def send_and_lose(goal, **kwargs):
        send(goal, **kwargs)
        return Future()

    client.send_goal_async = send_and_lose


@pytest.fixture
def motion(ros_context):
    node = Node('motion_acceptance_test', context=ros_context)
    received = []
    server = _motion_server(node, received)
    client = ActionClient(node, ExecuteMotion, 'execute_motion_under_test')
    executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    assert client.wait_for_server(timeout_sec=10.0)
    clients = RosClients(LatestState(), None, None, None, None, client)
    yield RosPorts(clients, CancelToken(), accept_timeout=1.0), client, received
    executor.shutdown()
    server.destroy()
    client.destroy()
    node.destroy_node()


def _goal(x):
    goal = ExecuteMotion.Goal(mode=ExecuteMotion.Goal.MODE_JOINT_PATH)
    goal.joint_path.points.append(JointTrajectoryPoint(positions=[x] * 7))
    return goal


def test_a_goal_whose_acceptance_is_lost_gets_its_result_by_id(motion):
    ports, client, received = motion
    assert ports.execute_motion(_goal(0.5), 'acknowledged').reason == 'ran 0.5'
    _drop_acceptances(client)
    result = ports.execute_motion(_goal(0.25), 'acceptance lost')
    assert result.success and result.reason == 'ran 0.25' and len(received) == 2


def test_a_goal_the_server_never_got_ends_with_no_answer(motion):
    ports, client, received = motion
    client.send_goal_async = lambda goal, **kwargs: Future()  # neither sent nor acknowledged
    with pytest.raises(GoalEnded, match='the goal was not received'):
        ports.execute_motion(_goal(0.25), 'never sent')
    assert received == []
