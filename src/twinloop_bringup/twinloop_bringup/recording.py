"""Recording a run to a rosbag2 folder with MCAP storage (rosbags), readable by `ros2 bag play`
and Foxglove. Messages are stored exactly as DDS delivered them (rclpy raw subscriptions, CDR);
twinloop's own message definitions are registered from the installed interface package so
the bag carries their definitions."""

import threading
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from twinloop_ros.topics import SENSOR_QOS, STATE_QOS


def typestore():
    """The Kilted typestore plus twinloop_interfaces' messages."""
    store = get_typestore(Stores.ROS2_KILTED)
    share = Path(get_package_share_directory('twinloop_interfaces')) / 'msg'
    types = {}
    for path in sorted(share.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'twinloop_interfaces/msg/{path.stem}'))
    store.register(types)
    return store


def type_name(msg_class):
    """'sensor_msgs/msg/Image' for sensor_msgs.msg.Image."""
    return f'{msg_class.__module__.split(".")[0]}/msg/{msg_class.__name__}'


class BagRecorder:
    """Subscribes to {topic: message class} on a node and writes every message to an MCAP bag."""

    def __init__(self, node, folder, topics, sensor_topics=()):
        self.writer = Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.lock = threading.Lock()
        self.counts = {}
        store = typestore()
        self.folder = Path(folder)
        for topic, msg_class in topics.items():
            connection = self.writer.add_connection(topic, type_name(msg_class), typestore=store)
            qos = SENSOR_QOS if topic in sensor_topics else STATE_QOS
            node.create_subscription(
                msg_class, topic, lambda data, c=connection, t=topic: self._write(c, t, node, data), qos, raw=True
            )

    def _write(self, connection, topic, node, data):
        with self.lock:
            if self.writer is None:
                return
            self.writer.write(connection, node.get_clock().now().nanoseconds, bytes(data))
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self):
        """Close the bag (later messages are dropped); {topic: messages written}."""
        with self.lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        return self.counts
