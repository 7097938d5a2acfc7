"""The main() every twinloop node shares: init, spin until SIGINT or shutdown, clean up.

A callback cut short by the shutdown (publishing on a context that just went invalid) is part
of stopping, not a failure: the process still exits 0. Nodes that need callbacks to run
concurrently spin a PoolExecutor (rclpy's MultiThreadedExecutor less its resubmission storm).
"""

import time

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    SingleThreadedExecutor,
    TimeoutException,
)


class PoolExecutor(MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor, each ready callback handed to the thread pool once.

    rclpy 9.1 keeps every callback's task in the list it re-yields on each pass of its wait loop
    (that is how it resumes coroutines), so a callback queued behind busy workers is submitted
    again on every pass: measured in the execution node under load, 5000-8000 passes/s on a
    full core, thousands of duplicates queued and callbacks (joint states, ~/stream requests)
    starting 1-2 s late. Here a callback's task leaves that list once it is handed to the pool
    and comes back only if it awaits something (a coroutine callback, resumed by the base loop).

    Passes of the wait loop are also kept MIN_PASS apart: the execution node's wait set was seen
    waking with nothing ready ~25000 times a second (a full core while idle; its two state
    subscriptions on world_sim's topics, cause not found), and a pass costs only that much latency.
    """

    MIN_PASS = 0.001  # [s]

    def __init__(self, num_threads=None, *, context=None):
        super().__init__(num_threads, context=context)
        self._last_pass = 0.0
        self._wait_condition = lambda: False

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False):
        self._wait_condition = wait_condition
        try:
            handler, entity, node = self.wait_for_ready_callbacks(timeout_sec, None, self._paced_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        self._forget(handler)  # handed over: not re-yielded while it waits in the pool
        self._executor.submit(self._run, handler, entity, node)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exceptions

    def _run(self, handler, entity, node):
        """Run one task in a worker; one left waiting on a future goes back to the resumable list."""
        handler()
        if not handler.done():
            with self._tasks_lock:
                self._tasks.append((handler, entity, node))
            self.wake()

    def _paced_condition(self):
        """The spin's wait condition, asked once per pass: first sleeps out the rest of MIN_PASS."""
        rest = self._last_pass + self.MIN_PASS - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        self._last_pass = time.monotonic()
        return self._wait_condition()

    def _forget(self, task):
        with self._tasks_lock:
            self._tasks = [entry for entry in self._tasks if entry[0] is not task]


def run(node_class, args=None, threads=1):
    """Init rclpy, spin node_class() (a PoolExecutor if threads > 1) until shutdown, clean up."""
    try:
        with rclpy.init(args=args):
            node = node_class()
            executor = PoolExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
            executor.add_node(node)
            try:
                executor.spin()
            except RCLError:
                if rclpy.ok(context=node.context):
                    raise
            finally:
                executor.shutdown()
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
