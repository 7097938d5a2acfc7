"""A LIBERO-Spatial task as a world behind world_sim's ROS interface: its cameras are published
(colour, metric depth, CameraInfo, extrinsics), a joint trajectory moves its arm, and the judge
answers with the task's own BDDL goal."""

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, JointState
from rclpy.qos import qos_profile_sensor_data
from std_srvs.srv import Trigger
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from twinloop_bringup.client import call_service, spin_until
from twinloop_twin import scene
from twinloop_ros import conversions as ros_conversions
from twinloop_ros.topics import camera_topic


def test_libero_task_through_ros(spawn, ros_node):
    spawn('-m', 'twinloop_twin.libero_world_node', '--ros-args', '-p', 'suite:=libero_spatial', '-p', 'task_id:=0')
    node, executor = ros_node
    got = {}
    for kind, msg_type in (('color', Image), ('depth', Image), ('color_info', CameraInfo)):
        node.create_subscription(
            msg_type, camera_topic('agentview', kind), lambda m, k=kind: got.__setitem__(k, m), qos_profile_sensor_data
        )
    states = []
    node.create_subscription(JointState, '/joint_states', states.append, 50)
    spin_until(executor, lambda: len(got) == 3 and states, 240, 'LIBERO images and joint states')
    rgb, depth = ros_conversions.image_array(got['color']), ros_conversions.image_array(got['depth'])
    assert rgb.shape == (128, 128, 3) and rgb.std() > 10  # a real picture, not a blank
    valid = depth[np.isfinite(depth)]
    assert 0.3 < np.median(valid) < 3.0  # metres, a table in front of the camera
    start = np.array(states[-1].position[:7])
    assert list(states[-1].name[:7]) == list(scene.ARM_JOINTS)

    goal = start.copy()
    goal[0] += 0.3
    publisher = node.create_publisher(JointTrajectory, '/panda_arm_controller/joint_trajectory', 10)
    spin_until(executor, lambda: publisher.get_subscription_count() > 0, 30, 'the trajectory subscriber')
    publisher.publish(
        JointTrajectory(
            joint_names=list(scene.ARM_JOINTS),
            points=[JointTrajectoryPoint(positions=[float(v) for v in goal], time_from_start=Duration(sec=1))],
        )
    )
    spin_until(
        executor, lambda: abs(states[-1].position[0] - goal[0]) < 0.05, 120, 'the arm to reach the commanded joints'
    )

    judge = node.create_client(Trigger, '/libero_world/judge')
    verdict = call_service(executor, judge, Trigger.Request(), 30, 'the judge')
    assert verdict.success is False and 'black bowl' in verdict.message
