"""The main() every twinloop node shares: init, spin until SIGINT or shutdown, clean up.

A callback cut short by the shutdown (publishing on a context that just went invalid) is part
of stopping, not a failure: the process still exits 0.
"""

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor


def run(node_class, args=None, threads=1):
    """Init rclpy, spin node_class() (a multi-threaded executor if threads > 1) until shutdown, clean up."""
    try:
        with rclpy.init(args=args):
            node = node_class()
            executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
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
