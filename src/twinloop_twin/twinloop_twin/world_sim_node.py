"""world_sim: the simulated arm, gripper and cameras, standing in for real hardware.

Publishes /joint_states, /clock (simulated time), per camera colour + aligned depth +
CameraInfo + the camera's optical pose, and evaluation-only ground truth. Takes arm commands
the way ros2_control's joint trajectory controller does and gripper width commands.

Malformed commands (joint names, sizes, NaN/inf, times, positions outside the joint limits) are
rejected with a throttled error and change nothing; ~/reset answers every seed (a layout that does
not fit fails with the reason), reusing the current model when the layout seed is unchanged;
~/move_object puts a movable object at a pose at once (disturbance tests and demos).
"""

import time
import traceback

from twinloop_interfaces.msg import DetectedObject, DetectedObjectArray
from twinloop_interfaces.srv import MoveObject, ResetWorld

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Header
from trajectory_msgs.msg import JointTrajectory

from twinloop_twin import cameras, objects, scene, world
from twinloop_twin.camera_frames import camera_publishers, publish_frame
from twinloop_ros import conversions as ros_conversions, node_runner, topics

MAX_START_DELAY = 5.0  # [s] a trajectory may start this far in the future (header.stamp)
MAX_POINTS = 10_000  # points of one JointTrajectory


class WorldSimNode(Node):
    """The world_sim node: the simulated arm, gripper and cameras on the real hardware's topics."""

    def __init__(self):
        super().__init__('world_sim')
        p = self.declare_parameter
        scene_path = p('scene', '', descriptor=_doc('scene YAML (objects, cameras)')).value
        self.real_time_factor = p('real_time_factor', 1.0, descriptor=_doc('simulated seconds per wall second')).value
        self.camera_rate = p('camera_rate', 5.0, descriptor=_doc('camera frames per simulated second [Hz]')).value
        self.joint_state_rate = p('joint_state_rate', 50.0, descriptor=_doc('joint state rate [Hz]')).value
        self.depth_encoding = p(
            'depth_encoding', '32FC1', descriptor=_doc('32FC1 (metres) or 16UC1 (millimetres)')
        ).value
        self.depth_noise = p(
            'depth_noise_std', 0.001, descriptor=_doc('depth noise standard deviation at 1 m [m], grows with z^2')
        ).value
        self.dropout = p('depth_dropout', 0.0, descriptor=_doc('fraction of depth pixels dropped to 0')).value
        controller = p(
            'arm_controller', topics.ARM_CONTROLLER, descriptor=_doc('joint trajectory controller name')
        ).value
        seed = p('seed', 0, descriptor=_doc('noise seed')).value
        self.object_friction = _range(
            p(
                'object_friction',
                [0.0, 0.0],
                descriptor=_doc("[low, high] friction per random layout; [0, 0]: the scene's"),
            ),
            'object_friction',
        )
        self.object_mass_scale = _range(
            p('object_mass_scale', [1.0, 1.0], descriptor=_doc('[low, high] scene mass factor per random layout')),
            'object_mass_scale',
        )
        self.cameras_on = p(
            'cameras_on', True, descriptor=_doc('publish camera frames; false: the cameras stop (settable at run time)')
        ).value
        self.add_on_set_parameters_callback(self.on_parameters)
        if not scene_path:
            raise ValueError('parameter "scene" (a scene YAML) is required')
        ros_conversions.depth_for_encoding(np.zeros((1, 1)), self.depth_encoding)  # validates the encoding

        self.scene_config = scene.SceneConfig.from_yaml(scene_path)
        self.world = world.SimWorld(self.scene_config)
        self.layout_seed = 0  # the ~/reset seed of the world's layout (0: the scene file's)
        self.rng = np.random.default_rng(seed)
        self.camera_configs = {c.name: c for c in self.world.config.cameras}
        self.shapes = {o.id: objects.make_shape(o.kind, **o.params) for o in self.world.config.objects}

        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
        self.clock_pub = self.create_publisher(Clock, topics.CLOCK, topics.STATE_QOS)
        self.truth_pub = self.create_publisher(DetectedObjectArray, topics.GROUND_TRUTH_OBJECTS, topics.STATE_QOS)
        self.camera_pubs = {name: camera_publishers(self, name) for name in self.camera_configs}
        self.create_subscription(
            JointTrajectory, topics.arm_trajectory(controller), self.on_trajectory, topics.STATE_QOS
        )
        self.create_subscription(Float64, topics.GRIPPER_COMMAND, self.on_gripper, topics.STATE_QOS)
        self.create_service(ResetWorld, '~/reset', self.on_reset)
        self.create_service(MoveObject, '~/move_object', self.on_move_object)

        self.tick = 0.01
        self.last_wall = time.monotonic()
        self.next_joint_state = self.next_camera = 0.0
        self.create_timer(self.tick, self.on_tick)
        self.get_logger().info(
            f'world_sim: {len(self.world.object_ids)} objects, cameras {list(self.camera_configs)}, '
            f'arm commands on {topics.arm_trajectory(controller)}'
        )

    def on_trajectory(self, msg):
        """Follow a JointTrajectory like ros2_control's JTC; an empty one stops the arm, a malformed one is rejected."""
        if not msg.points:
            self.world.hold()
            self.get_logger().info('empty trajectory: holding position', throttle_duration_sec=1.0)
            return
        try:
            times, positions = self._trajectory(msg)
            start = ros_conversions.seconds(msg.header.stamp)  # as a JTC: time 0 of the points; 0: now
            if start > self.world.time + MAX_START_DELAY:
                raise ValueError(f'header.stamp {start:.3f} s is more than {MAX_START_DELAY} s ahead of now')
            self.world.follow_trajectory(times, positions, start if start > 0 else None)
        except ValueError as exc:
            self.get_logger().error(f'trajectory rejected: {exc}', throttle_duration_sec=1.0)

    def _trajectory(self, msg):
        """(times [s], positions in ARM_JOINTS order) of a JointTrajectory; ValueError says what is wrong."""
        names = list(msg.joint_names)
        if any(j not in names for j in scene.ARM_JOINTS):
            shown = names if len(names) <= 10 else [*names[:10], '...']
            raise ValueError(f'joint_names {str(shown)[:300]} must name {list(scene.ARM_JOINTS)}')
        if len(msg.points) > MAX_POINTS:
            raise ValueError(f'{len(msg.points)} points, at most {MAX_POINTS}')
        if any(len(pt.positions) != len(names) for pt in msg.points):
            raise ValueError(f'every point needs {len(names)} positions, one per joint name')
        order = [names.index(j) for j in scene.ARM_JOINTS]
        times = [ros_conversions.seconds(pt.time_from_start) for pt in msg.points]
        positions = ros_conversions.check_finite([[pt.positions[i] for i in order] for pt in msg.points], 'positions')
        limits = self.world.arm_limits
        if np.any(positions < limits[:, 0] - 1e-6) or np.any(positions > limits[:, 1] + 1e-6):
            raise ValueError('positions outside the joint limits')
        return times, positions

    def on_reset(self, request, response):
        """A new episode: arm at home, objects as in the scene or at a seeded random layout; time runs on."""
        try:
            now = self.world.time
            if request.seed == self.layout_seed:  # the same layout: reset in place, keeping model and renderers
                self.world.reset()
            else:
                config = self.scene_config if request.seed == 0 else self._layout(request.seed)
                new_world = world.SimWorld(config)
                self.world.close()
                self.world, self.layout_seed = new_world, request.seed
        except ValueError as exc:  # the objects do not fit on the table
            response.message = str(exc)
            return response
        except Exception as exc:  # a bug, not the request: answered and logged, the node keeps running
            self.get_logger().error(f'reset failed unexpectedly:\n{traceback.format_exc()}')
            response.message = f'internal error: {type(exc).__name__}: {exc}'[:500]
            return response
        self.world.data.time = now + self.tick
        self.next_joint_state = self.next_camera = 0.0
        response.success, response.message = True, f'reset with seed {request.seed}: {self.physics}'
        self.get_logger().info(response.message, throttle_duration_sec=1.0)
        return response

    def _layout(self, seed):
        """The scene at the seed's random layout, its objects' friction and mass drawn in the parameters' ranges."""
        return scene.seeded_layout(
            self.scene_config,
            seed,
            self.object_friction if any(self.object_friction) else None,
            self.object_mass_scale if self.object_mass_scale != (1.0, 1.0) else None,
        )

    @property
    def physics(self):
        """The movable objects' friction and mass now, in words."""
        return scene.physics_summary(self.world.config)

    def on_move_object(self, request, response):
        """A disturbance: put an object at a pose at once (MoveObject.srv); a bad request is answered why."""
        p, o = request.pose.position, request.pose.orientation
        quat = [o.w, o.x, o.y, o.z]
        try:
            self.world.move_object(request.object_id, [p.x, p.y, p.z], quat if any(quat) else None)
        except ValueError as exc:
            response.message = str(exc)
            return response
        response.success, response.message = True, f'moved {request.object_id} to ({p.x:.3f}, {p.y:.3f}, {p.z:.3f})'
        self.get_logger().info(response.message)
        return response

    def on_gripper(self, msg):
        """Command the gripper opening width [m], clipped to what the hand opens; a non-finite command is rejected."""
        if not np.isfinite(msg.data):
            self.get_logger().error('gripper command rejected: not finite', throttle_duration_sec=1.0)
            return
        self.world.set_gripper(msg.data)

    def on_parameters(self, parameters):
        """Run-time parameters: only cameras_on may change (a camera that stops, for fault tests)."""
        for parameter in parameters:
            if parameter.name != 'cameras_on' or not isinstance(parameter.value, bool):
                return SetParametersResult(successful=False, reason='only cameras_on (bool) can change at run time')
        for parameter in parameters:
            self.cameras_on = parameter.value
            self.get_logger().warning(f'cameras {"on" if parameter.value else "off"}')
        return SetParametersResult(successful=True)

    def on_tick(self):
        """Advance the simulation to wall time x real_time_factor and publish what is due."""
        now = time.monotonic()
        target = self.world.time + (now - self.last_wall) * self.real_time_factor
        self.last_wall = now
        steps = int(max(0.0, target - self.world.time) / self.world.model.opt.timestep)
        self.world.step(min(steps, 500))  # never block the executor for long
        t = self.world.time
        self.clock_pub.publish(Clock(clock=ros_conversions.stamp(t)))
        if t >= self.next_joint_state:
            self.next_joint_state = t + 1.0 / self.joint_state_rate
            self.publish_joint_state(t)
        if t >= self.next_camera:
            self.next_camera = t + 1.0 / self.camera_rate
            if self.cameras_on:
                self.publish_cameras(t)
            self.publish_ground_truth(t)

    def publish_joint_state(self, t):
        """Publish arm and finger joint positions (fingers positive when open) and arm velocities."""
        q = self.world.data.qpos
        names = list(scene.ARM_JOINTS) + list(scene.FINGER_JOINTS)
        positions = list(self.world.arm_positions()) + [
            float(q[self.world.finger_qpos[0]]),
            float(-q[self.world.finger_qpos[1]]),
        ]
        velocities = list(self.world.arm_velocities()) + [0.0, 0.0]
        self.joint_pub.publish(
            JointState(
                header=Header(stamp=ros_conversions.stamp(t), frame_id=''),
                name=names,
                position=positions,
                velocity=velocities,
            )
        )

    def publish_cameras(self, t):
        """Render every camera whose images someone subscribes to and publish colour, noisy depth,
        CameraInfo and pose stamped t (rendering is most of world_sim's CPU; unwatched cameras cost none)."""
        for name, cfg in self.camera_configs.items():
            pubs = self.camera_pubs[name]
            if not (pubs['color'].get_subscription_count() or pubs['depth'].get_subscription_count()):
                continue
            frame = self.world.render(name, cfg.width, cfg.height)
            header = Header(stamp=ros_conversions.stamp(t), frame_id=f'{name}_optical_frame')
            depth = self.noisy(frame.depth)
            publish_frame(
                pubs,
                frame,
                header,
                ros_conversions.image_msg(
                    ros_conversions.depth_for_encoding(depth, self.depth_encoding), self.depth_encoding, header
                ),
            )

    def noisy(self, depth):
        """Depth with the configured RealSense-like noise and dropout."""
        return cameras.realsense_noise(depth, self.rng, self.depth_noise, self.dropout)

    def publish_ground_truth(self, t):
        """Publish every object's true pose, size and symmetry (SOURCE_GROUND_TRUTH)."""
        msg = DetectedObjectArray(header=Header(stamp=ros_conversions.stamp(t), frame_id='world'))
        for obj in self.world.config.objects:
            position, quat = self.world.object_pose(obj.id)
            shape = self.shapes[obj.id]
            detected = DetectedObject(
                header=msg.header,
                id=obj.id,
                label=obj.label,
                mesh_id=obj.mesh_id,
                pose=ros_conversions.pose_msg(position, quat),
                confidence=1.0,
                symmetry=shape.symmetry,
                source=DetectedObject.SOURCE_GROUND_TRUTH,
            )
            detected.size.x, detected.size.y, detected.size.z = shape.extents
            msg.objects.append(detected)
        self.truth_pub.publish(msg)

    def destroy_node(self):
        """Close the renderers, then the node."""
        self.world.close()
        super().destroy_node()


def _range(parameter, name):
    """(low, high) of a two-number parameter; ValueError unless 0 <= low <= high."""
    value = tuple(float(v) for v in parameter.value)
    if len(value) != 2 or not 0.0 <= value[0] <= value[1]:
        raise ValueError(f'parameter {name!r} must be [low, high] with 0 <= low <= high, got {list(value)}')
    return value


def _doc(text):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=text)


def main(args=None):
    """Run the world_sim node."""
    node_runner.run(WorldSimNode, args)


if __name__ == '__main__':
    main()
