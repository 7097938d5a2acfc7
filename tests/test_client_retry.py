"""The action clients send a goal once more when its request goes unanswered (a request or answer can
be lost while DDS discovery settles): against a real RunPolicy server over DDS whose first answer
comes too late, the client's second request is accepted and the goal runs to its result."""

import threading
import time

import rclpy
from rclpy.action import ActionServer, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from twinloop_interfaces.action import RunPolicy

from twinloop_bringup import client as clients


def test_an_unanswered_goal_is_sent_once_more(ros_context, ros_node, monkeypatch):
    monkeypatch.setattr(clients, 'ANSWER_TIMEOUT', 1.0)
    server_node = rclpy.create_node('slow_policy_server', context=ros_context)
    requests = []

    def on_goal(goal):
        requests.append(time.monotonic())
        if len(requests) == 1:
            time.sleep(2.5)  # the first answer arrives after the client gave up on it
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def execute(handle):
        handle.succeed()
        return RunPolicy.Result(success=True, reason=f'ran {handle.request.instruction}')

    ActionServer(
        server_node, RunPolicy, 'retry_test', execute, goal_callback=on_goal, callback_group=ReentrantCallbackGroup()
    )
    executor = MultiThreadedExecutor(num_threads=3, context=ros_context)
    executor.add_node(server_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        node, node_executor = ros_node
        policy = clients.PolicyClient(node, 'retry_test', executor=node_executor)
        policy.wait_for_server(30.0)
        policy.send('wave')
        result = policy.wait(30.0)
        assert result.success and result.reason == 'ran wave'
        assert len(requests) == 2 and requests[1] - requests[0] >= 0.9  # sent again after the timeout
    finally:
        executor.shutdown()
        server_node.destroy_node()
