"""libero_world: a LIBERO task behind world_sim's ROS interface.

Publishes /joint_states (panda_joint1..7, panda_finger_joint1..2), /clock, the cameras
'agentview' and 'wrist' (LIBERO's robot0_eye_in_hand) on /cameras/<cam>/{color,
aligned_depth_to_color}/{image_raw,camera_info} and /cameras/<cam>/pose, and the objects'
simulator poses on ~/ground_truth/objects (SOURCE_PRIVILEGED: no LIBERO mesh is in the mesh
library yet). Follows /panda_arm_controller/joint_trajectory and /panda_gripper/width_command.
Services: ~/reset (ResetWorld: seed = LIBERO init-state index) and ~/judge (std_srvs/Trigger:
success is the task's own BDDL goal; the message carries the instruction). One environment step
per timer tick at the task's control frequency.
"""

from twinloop_interfaces.msg import DetectedObject, DetectedObjectArray
from twinloop_interfaces.srv import ResetWorld

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from twinloop_twin import scene
from twinloop_ros import conversions as ros_conversions, node_runner, topics
from twinloop_twin.camera_frames import camera_publishers, publish_frame
from twinloop_twin.libero_world import CAMERAS, LiberoWorld
from twinloop_twin.world import JointTrajectoryFollower


class LiberoWorldNode(Node):
    """The libero_world node: a LIBERO task behind world_sim's topics and services."""

    def __init__(self):
        super().__init__('libero_world')
        p = lambda name, default, doc: self.declare_parameter(name, default, ParameterDescriptor(description=doc)).value  # noqa: E731
        suite = p(
            'suite', 'libero_spatial', 'LIBERO suite: libero_spatial, libero_object, libero_goal, libero_10, libero_90'
        )
        task_id = p('task_id', 0, 'task number within the suite')
        init_index = p('init_index', 0, "LIBERO's initial state number")
        size = p('image_size', 128, 'camera images are size x size [px]')
        self.camera_every = p('camera_every', 2, 'publish camera frames every this many control steps')
        controller = p('arm_controller', topics.ARM_CONTROLLER, 'joint trajectory controller name')
        self.get_logger().info(f'loading LIBERO {suite} task {task_id} (takes a while) ...')
        self.world = LiberoWorld(suite, task_id, init_index, size)
        self.follower = None
        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
        self.clock_pub = self.create_publisher(Clock, topics.CLOCK, topics.STATE_QOS)
        self.truth_pub = self.create_publisher(DetectedObjectArray, '~/ground_truth/objects', topics.STATE_QOS)
        self.camera_pubs = {name: camera_publishers(self, name) for name in CAMERAS}
        self.create_subscription(
            JointTrajectory, topics.arm_trajectory(controller), self.on_trajectory, topics.STATE_QOS
        )
        self.create_subscription(Float64, topics.GRIPPER_COMMAND, self.on_gripper, topics.STATE_QOS)
        self.create_service(ResetWorld, '~/reset', self.on_reset)
        self.create_service(Trigger, '~/judge', self.on_judge)
        self.create_timer(1.0 / self.world.control_freq, self.on_tick)
        self.get_logger().info(f'libero_world ready: "{self.world.instruction}"')

    def on_trajectory(self, msg):
        """Follow a JointTrajectory from the current target; an empty one stops the arm where it is."""
        if not msg.points:
            self.follower = None
            self.world.target = self.world.arm_positions()
            return
        try:
            order = [list(msg.joint_names).index(j) for j in scene.ARM_JOINTS]
            times = [pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9 for pt in msg.points]
            positions = [[pt.positions[i] for i in order] for pt in msg.points]
            self.follower = (JointTrajectoryFollower(self.world.target, times, positions), self.world.time)
        except (IndexError, ValueError) as exc:
            self.get_logger().error(f'trajectory rejected: {exc}')

    def on_gripper(self, msg):
        """Close the gripper for a width command below 0.04 m, open it otherwise."""
        if not np.isfinite(msg.data):
            self.get_logger().error('gripper command rejected: not finite')
            return
        self.world.gripper_closed = msg.data < 0.04  # robosuite's gripper is open or closed

    def on_reset(self, request, response):
        """Reset to LIBERO init state number request.seed."""
        self.world.reset(int(request.seed))
        self.follower = None
        response.success, response.message = True, f'LIBERO init state {request.seed}'
        return response

    def on_judge(self, _request, response):
        """Report whether the task's BDDL goal holds now."""
        response.success = self.world.success()
        response.message = (
            f'"{self.world.instruction}": {"done" if response.success else "not done"} (LIBERO BDDL goal)'
        )
        return response

    def on_tick(self):
        """One environment step; publishes /clock, joint states and, every camera_every steps, cameras and objects."""
        target = None
        if self.follower is not None:
            follower, started = self.follower
            target = follower.sample(self.world.time - started)
        self.world.step(target)
        t = self.world.time
        self.clock_pub.publish(Clock(clock=ros_conversions.stamp(t)))
        fingers = self.world.finger_positions()
        self.joint_pub.publish(
            JointState(
                header=Header(stamp=ros_conversions.stamp(t)),
                name=list(scene.ARM_JOINTS) + list(scene.FINGER_JOINTS),
                position=list(self.world.arm_positions()) + [float(fingers[0]), float(-fingers[1])],
            )
        )
        if self.world.steps % self.camera_every == 0:
            self.publish_cameras(t)
            self.publish_objects(t)

    def publish_cameras(self, t):
        """Render and publish both cameras (colour, depth, CameraInfo, pose) stamped t."""
        for name, pubs in self.camera_pubs.items():
            frame = self.world.camera(name)
            header = Header(stamp=ros_conversions.stamp(t), frame_id=f'{name}_optical_frame')
            publish_frame(pubs, frame, header, ros_conversions.image_msg(frame.depth, '32FC1', header))

    def publish_objects(self, t):
        """Publish the task's objects and fixtures at their simulator poses (SOURCE_PRIVILEGED)."""
        msg = DetectedObjectArray(header=Header(stamp=ros_conversions.stamp(t), frame_id='world'))
        for name, label, position, quat in self.world.objects():
            msg.objects.append(
                DetectedObject(
                    header=msg.header,
                    id=name,
                    label=label,
                    mesh_id=f'libero/{label}',
                    pose=ros_conversions.pose_msg(position, quat),
                    confidence=1.0,
                    source=DetectedObject.SOURCE_PRIVILEGED,
                )
            )
        self.truth_pub.publish(msg)

    def destroy_node(self):
        """Close the LIBERO environment, then the node."""
        self.world.close()
        super().destroy_node()


def main(args=None):
    """Run the libero_world node."""
    node_runner.run(LiberoWorldNode, args)


if __name__ == '__main__':
    main()
