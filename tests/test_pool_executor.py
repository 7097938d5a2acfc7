"""The PoolExecutor every multi-threaded twinloop node spins (twinloop_ros.node_runner): over real DDS,
a callback queued behind a busy worker is handed to the pool once (rclpy 9.1's own executor hands it
again on every pass of its wait loop), every message still arrives, and a coroutine callback that
awaits a future is resumed to its end."""

import collections
import threading
import time

import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future
from std_msgs.msg import Float64

from twinloop_ros.node_runner import PoolExecutor


def _spin(executor):
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    return thread


def _wait_for_subscriber(publisher, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not publisher.get_subscription_count():
        time.sleep(0.05)


def test_a_queued_callback_is_submitted_once_and_every_message_arrives(ros_context):
    node = rclpy.create_node('pool_executor_test', context=ros_context)
    publisher_node = rclpy.create_node('pool_executor_publisher', context=ros_context)
    publisher = publisher_node.create_publisher(Float64, '/pool_executor_test', 100)
    received = []
    node.create_subscription(Float64, '/pool_executor_test', lambda m: received.append(m.data), 100)
    node.create_timer(0.5, lambda: time.sleep(0.3))  # keeps the only worker busy 60 % of the time

    executor = PoolExecutor(num_threads=1, context=ros_context)
    submissions, handed = collections.Counter(), []
    submit = executor._executor.submit

    def counting_submit(fn, *args):
        handed.append(args[0])  # the task handed to the pool, kept alive so that ids stay unique
        submissions[id(args[0])] += 1
        return submit(fn, *args)

    executor._executor.submit = counting_submit
    executor.add_node(node)
    _spin(executor)
    try:
        _wait_for_subscriber(publisher)
        for i in range(100):
            publisher.publish(Float64(data=float(i)))
            time.sleep(0.01)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and len(received) < 100:
            time.sleep(0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        publisher_node.destroy_node()
    assert sorted(received) == [float(i) for i in range(100)]
    assert len(submissions) > 50 and max(submissions.values()) == 1, submissions.most_common(3)


def test_a_coroutine_callback_that_awaits_is_resumed(ros_context):
    node = rclpy.create_node('pool_executor_async', context=ros_context)
    publisher = node.create_publisher(Float64, '/pool_executor_async', 10)
    future, waiting, finished = Future(), threading.Event(), threading.Event()

    async def on_message(msg):
        waiting.set()
        value = await future  # completed by the timer below once this callback waits
        finished.set() if value == msg.data else None

    node.create_subscription(Float64, '/pool_executor_async', on_message, 10, callback_group=ReentrantCallbackGroup())
    node.create_timer(0.2, lambda: waiting.is_set() and not future.done() and future.set_result(7.0))
    executor = PoolExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    _spin(executor)
    try:
        _wait_for_subscriber(publisher)
        publisher.publish(Float64(data=7.0))
        assert finished.wait(10.0), 'the awaiting callback was never resumed'
    finally:
        executor.shutdown()
        node.destroy_node()
