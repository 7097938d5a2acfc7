"""Every topic rviz/twinloop.rviz displays is published by the demo graph with the type the
display expects (dry-run instructions make the planner publish its candidates and IKER its keypoints)."""

import os

import pytest
import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from twinloop_bringup import graphs, processes
from twinloop_bringup.client import InstructionClient

ROOT = os.environ['TWINLOOP_ROOT']
DISPLAY_TYPES = {
    'rviz_default_plugins/Image': 'sensor_msgs/msg/Image',
    'rviz_default_plugins/MarkerArray': 'visualization_msgs/msg/MarkerArray',
    'rviz_default_plugins/Marker': 'visualization_msgs/msg/Marker',
    'rviz_default_plugins/RobotModel': 'std_msgs/msg/String',
}

MESSAGES = {
    'sensor_msgs/msg/Image': Image,
    'visualization_msgs/msg/MarkerArray': MarkerArray,
    'visualization_msgs/msg/Marker': Marker,
    'std_msgs/msg/String': String,
}


def displayed_topics():
    with open(os.path.join(ROOT, 'rviz', 'twinloop.rviz')) as f:
        displays = yaml.safe_load(f)['Visualization Manager']['Displays']
    out = {}
    for d in displays:
        topic = (d.get('Topic') or d.get('Description Topic') or {}).get('Value')
        if topic:
            out[topic] = DISPLAY_TYPES[d['Class']]
    return out


@pytest.fixture(scope='module')
def demo_graph():
    specs = graphs.load('sim_demo', {'scene': os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')})
    started = [processes.start_python(spec.arguments()) for spec in specs]
    yield
    for process in started:
        processes.stop(process)


def test_every_displayed_topic_is_published_with_its_type(demo_graph, ros_node):
    node, executor = ros_node
    expected = displayed_topics()
    assert {
        '/robot_description',
        '/pose_estimation/markers',
        '/sim_twin/markers',
        '/planner/candidates',
        '/planner/chosen',
        '/iker/keypoints',
    } <= set(expected)
    received = {}
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    for topic, type_name in expected.items():
        qos = (
            qos_profile_sensor_data
            if type_name == 'sensor_msgs/msg/Image'
            else latched
            if topic == '/robot_description'
            else 10
        )
        node.create_subscription(MESSAGES[type_name], topic, lambda m, t=topic: received.setdefault(t, type(m)), qos)
    client = InstructionClient(node, executor=executor)
    client.wait_for_server(120)
    client.send('pick up the red cube', num_candidates=4, dry_run=True)
    result = client.wait(180)
    assert result.success, result.reason
    client.send('pick up the red cube', strategy='iker', dry_run=True)  # numbers keypoints, moves nothing
    result = client.wait(120)
    assert result.success, result.reason
    client.spin_until(
        lambda: set(received) == set(expected), 30, f'messages on {sorted(set(expected) - set(received))}'
    )
    published = dict(node.get_topic_names_and_types())
    for topic, type_name in expected.items():
        assert published[topic] == [type_name], topic
