"""world_sim over DDS: camera topics are consistent with each other and with the world, and
the arm follows JointTrajectory commands like a ros2_control controller."""

import os
import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from twinloop_interfaces.msg import DetectedObject, DetectedObjectArray

from twinloop_twin import scene
from twinloop_ros import conversions as ros_conversions
from twinloop_ros.topics import GROUND_TRUTH_OBJECTS, camera_topic

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')


def start_world_sim(spawn, *params):
    args = ['-m', 'twinloop_twin.world_sim_node', '--ros-args', '-p', f'scene:={SCENE}']
    for p in params:
        args += ['-p', p]
    return spawn(*args)


class Collector:
    """Subscribes to topics and keeps the latest message of each."""

    def __init__(self, context, topics):
        self.node = rclpy.create_node('world_sim_test', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.latest = {}
        for topic, msg_type, qos in topics:
            self.node.create_subscription(msg_type, topic, lambda m, t=topic: self.latest.__setitem__(t, m), qos)

    def wait_for(self, condition, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return True
        return False

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def collector(ros_context):
    created = []

    def _make(topics):
        created.append(Collector(ros_context, topics))
        return created[-1]

    yield _make
    for c in created:
        c.close()


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1'])
def test_camera_topics_match_the_world(spawn, collector, encoding):
    start_world_sim(spawn, 'depth_noise_std:=0.0', f'depth_encoding:={encoding}')
    topics = [
        (camera_topic('front', k), t, qos_profile_sensor_data)
        for k, t in (('color', Image), ('depth', Image), ('color_info', CameraInfo))
    ]
    topics += [(camera_topic('front', 'pose'), PoseStamped, 10), (GROUND_TRUTH_OBJECTS, DetectedObjectArray, 10)]
    unwatched = (camera_topic('left', 'pose'), PoseStamped, 10)  # nobody subscribes to the left camera's images
    c = collector(topics + [unwatched])

    def same_frame():
        if len(set(c.latest) & {t for t, _, _ in topics}) < len(topics):
            return False
        stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for t, m in c.latest.items() if t != unwatched[0]}
        return len(stamps) == 1

    assert c.wait_for(same_frame), f'no consistent frame set; got {sorted(c.latest)}'
    assert unwatched[0] not in c.latest, 'a camera whose images nobody subscribes to is rendered all the same'

    color, depth = c.latest[camera_topic('front', 'color')], c.latest[camera_topic('front', 'depth')]
    info, pose = c.latest[camera_topic('front', 'color_info')], c.latest[camera_topic('front', 'pose')]
    cfg = next(cam for cam in scene.SceneConfig.from_yaml(SCENE).cameras if cam.name == 'front')
    assert (color.encoding, color.width, color.height) == ('rgb8', cfg.width, cfg.height)
    assert (depth.encoding, depth.width, depth.height) == (encoding, cfg.width, cfg.height)
    assert (info.width, info.height) == (cfg.width, cfg.height)

    truth = {o.id: o for o in c.latest[GROUND_TRUTH_OBJECTS].objects}
    cube = truth['red_cube']
    assert cube.source == DetectedObject.SOURCE_GROUND_TRUTH and cube.label == 'red cube'
    top = np.array([cube.pose.position.x, cube.pose.position.y, cube.pose.position.z + cube.size.z])
    q = pose.pose.orientation
    x, y, z, w = q.x, q.y, q.z, q.w
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    origin = np.array([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z])
    point = rotation.T @ (top - origin)
    k = np.array(info.k).reshape(3, 3)
    u, v = np.round((k @ point)[:2] / point[2]).astype(int)
    rgb = ros_conversions.image_array(color)
    assert rgb[v, u, 0] > 150 and rgb[v, u, 1] < 80, 'the projected top of the red cube lands on a red pixel'
    depth_m = ros_conversions.image_array(depth).astype(float) / (1000.0 if encoding == '16UC1' else 1.0)
    assert abs(depth_m[v, u] - point[2]) < 0.005


def test_arm_follows_joint_trajectory(spawn, collector, ros_context):
    start_world_sim(spawn, 'camera_rate:=1.0')
    c = collector([('/joint_states', JointState, 10)])
    assert c.wait_for(lambda: '/joint_states' in c.latest)
    names = list(c.latest['/joint_states'].name)
    assert names[:7] == list(scene.ARM_JOINTS)
    start = np.array(c.latest['/joint_states'].position[:7])
    goal = start + np.array([0.4, 0.1, 0.0, 0.2, 0.0, -0.1, 0.3])

    pub = c.node.create_publisher(JointTrajectory, '/panda_arm_controller/joint_trajectory', 10)
    assert c.wait_for(lambda: pub.get_subscription_count() > 0)
    # joint order shuffled on purpose: the controller maps by name
    order = [6, 0, 5, 1, 4, 2, 3]
    pub.publish(
        JointTrajectory(
            joint_names=[scene.ARM_JOINTS[i] for i in order],
            points=[JointTrajectoryPoint(positions=[float(goal[i]) for i in order], time_from_start=Duration(sec=1))],
        )
    )
    assert c.wait_for(lambda: np.abs(np.array(c.latest['/joint_states'].position[:7]) - goal).max() < 0.01, timeout=30)
