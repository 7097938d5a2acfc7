"""execution: the ExecuteMotion action server. Plans (IK + ruckig), passes every trajectory
through the safety gate, sends it to the joint trajectory controller, and watches /joint_states:
tracking error beyond tolerance, no progress, or stale states stop the arm (hold position); a motion
stopped just short of its end by a contact the gate allowed (fingers on an object) holds there and
goes on to its gripper event.
Cancel holds at once. One goal at a time: a goal arriving while another runs is rejected.
"""

import threading
import time

from twinloop_interfaces.action import ExecuteMotion
from twinloop_interfaces.msg import DetectedObjectArray

import numpy as np
from builtin_interfaces.msg import Duration
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from twinloop_execution import planning, trajectory
from twinloop_execution.kinematics import ArmKinematics, PandaIk
from twinloop_execution.safety import JointLimits, SafetyConfig, SafetyGate
from twinloop_twin import scene
from twinloop_ros import conversions as ros_conversions, node_runner, topics
from twinloop_twin import messages
from twinloop_twin.twin import MeshLibrary, SimTwin

Goal, Result = ExecuteMotion.Goal, ExecuteMotion.Result
GRIPPER_OPEN = 0.08  # [m]


def _doc(text):
    return ParameterDescriptor(description=text)


def _stamp_seconds(msg):
    return ros_conversions.seconds(msg.header.stamp)


class ExecutionNode(Node):
    def __init__(self):
        super().__init__('execution')
        p = lambda name, default, doc: self.declare_parameter(name, default, _doc(doc)).value  # noqa: E731
        urdf = p('robot_description_file', '', 'URDF of the arm (urdf/panda.urdf)')
        limits_yaml = p('joint_limits_file', '', 'MoveIt-style joint_limits.yaml with accelerations and jerks')
        safety_yaml = p('safety_file', '', 'safety gate configuration (config/safety.yaml)')
        scene_path = p('scene', '', 'scene YAML: the known objects for the collision check')
        objects_topic = p('objects_topic', topics.OBJECTS, 'DetectedObjectArray used for the collision check')
        controller = p('arm_controller', topics.ARM_CONTROLLER, 'joint trajectory controller name')
        self.velocity_scale = p('velocity_scale', 0.5, 'default fraction of the velocity/acceleration/jerk limits')
        self.tracking_tolerance = p('tracking_tolerance', 0.1, 'largest distance from the path before aborting [rad]')
        self.tracking_lag = p('tracking_lag', 0.3, 'how far ahead of the expected time a joint may be [s]')
        self.tracking_window = p('tracking_window', 1.0, 'how far behind the expected time a joint may lag [s]')
        self.settle_timeout = p('settle_timeout', 3.0, 'time allowed after the trajectory to reach its end [s]')
        self.goal_tolerance = p('goal_tolerance', 0.002, 'largest joint error at the end of a motion [rad]')
        self.contact_tolerance = p(
            'contact_tolerance',
            0.05,
            'a motion stopped short by at most this much (in contact, '
            'e.g. fingers on an object) holds there and goes on [rad]',
        )
        self.gripper_time = p('gripper_time', 1.0, 'time given to a gripper command [s]')
        self.state_wait = p('state_wait', 3.0, 'how long a goal waits for fresh joint states and object poses [s]')
        backend = p('backend', 'embedded', 'embedded (IK + ruckig) or moveit (needs moveit_py)')
        for name, value in (
            ('robot_description_file', urdf),
            ('joint_limits_file', limits_yaml),
            ('safety_file', safety_yaml),
            ('scene', scene_path),
        ):
            if not value:
                raise ValueError(f'parameter {name!r} is required')
        self.moveit = None
        if backend == 'moveit':
            from twinloop_execution import moveit_backend

            if moveit_backend.available():
                self.moveit = moveit_backend.MoveItExecutor(p('moveit_group', 'panda_arm', 'MoveIt planning group'))
            else:
                self.get_logger().warning(
                    f'backend "moveit" requested but {moveit_backend.why_unavailable()}; using the embedded backend'
                )
        elif backend != 'embedded':
            raise ValueError(f'backend must be "embedded" or "moveit", not {backend!r}')
        joints = list(scene.ARM_JOINTS)
        self.description_pub = self.create_publisher(
            String, topics.ROBOT_DESCRIPTION, topics.LATCHED_QOS
        )  # for RViz's RobotModel
        with open(urdf) as f:
            self.description_pub.publish(String(data=f.read()))
        self.limits = JointLimits.from_description(urdf, limits_yaml, joints)
        self.jerk = trajectory.jerk_limits(limits_yaml, joints)
        config = scene.SceneConfig.from_yaml(scene_path)
        self.twin = SimTwin(MeshLibrary.from_scene(config), [])
        self.twin.sync([], config.home)
        self.safety = SafetyConfig.from_yaml(safety_yaml)
        self.ik = PandaIk(self.twin.model)
        self.lock = threading.Lock()
        self.busy = False
        self.joints = self.joint_state = self.joints_received = self.objects = self.objects_received = None

        state_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(
            JointState, topics.JOINT_STATES, self.on_joints, topics.STATE_QOS, callback_group=state_group
        )
        self.create_subscription(
            DetectedObjectArray, objects_topic, self.on_objects, topics.STATE_QOS, callback_group=state_group
        )
        self.trajectory_pub = self.create_publisher(
            JointTrajectory, topics.arm_trajectory(controller), topics.STATE_QOS
        )
        self.gripper_pub = self.create_publisher(Float64, topics.GRIPPER_COMMAND, topics.STATE_QOS)
        self.server = ActionServer(
            self,
            ExecuteMotion,
            topics.EXECUTE_MOTION,
            self.execute,
            goal_callback=self.on_goal,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )
        self.get_logger().info('execution ready (embedded backend: mink IK + ruckig, safety gate on every trajectory)')

    # --- state ---------------------------------------------------------------------------------
    def on_joints(self, msg):
        try:
            state = ros_conversions.arm_state(msg)
        except ValueError as exc:
            self.get_logger().warning(f'joint state ignored: {exc}', throttle_duration_sec=5.0)
            return
        self.joints, self.joint_state, self.joints_received = msg, state, time.monotonic()

    def on_objects(self, msg):
        self.objects, self.objects_received = msg, time.monotonic()

    def arm_positions(self):
        return self.joint_state[0].copy()

    def gripper_width(self):
        return self.joint_state[1]

    def state_age(self):
        return None if self.joints_received is None else time.monotonic() - self.joints_received

    def perception_age(self):
        return None if self.objects_received is None else time.monotonic() - self.objects_received

    # --- goals ---------------------------------------------------------------------------------
    def on_goal(self, goal):
        with self.lock:
            if self.busy:
                self.get_logger().warning('goal rejected: another motion is running (one goal at a time)')
                return GoalResponse.REJECT
            self.busy = True
        return GoalResponse.ACCEPT

    def execute(self, handle):
        try:
            return self._execute(handle)
        except Exception as exc:  # a bug must not leave the arm moving or the server wedged
            self.hold()
            self.get_logger().error(f'execution failed: {exc!r}')
            handle.abort()
            return Result(success=False, code=Result.CODE_ABORTED, reason=f'internal error: {exc}')
        finally:
            with self.lock:
                self.busy = False

    def _await_fresh_state(self):
        """Give joint states and object poses up to `state_wait` seconds to arrive (just after start-up);
        the gate's watchdog then judges whatever is there."""
        deadline = time.monotonic() + self.state_wait
        while time.monotonic() < deadline:
            state, perception = self.state_age(), self.perception_age()
            if (
                state is not None
                and state <= self.safety.state_timeout
                and perception is not None
                and perception <= self.safety.perception_timeout
            ):
                return
            time.sleep(0.05)

    def _refuse(self, handle, reason):
        self.get_logger().warning(f'refused: {reason}')
        handle.abort()
        return Result(success=False, code=Result.CODE_REJECTED, reason=reason, final_position_error=-1.0)

    def _execute(self, handle):
        goal = handle.request
        self._await_fresh_state()
        if self.joints is None:
            return self._refuse(handle, 'no /joint_states received yet')
        scale = goal.velocity_scale if goal.velocity_scale > 0 else self.velocity_scale
        if not 0 < scale <= 1:
            return self._refuse(handle, f'velocity_scale must be in (0, 1], got {goal.velocity_scale}')
        kinematics = self._synced_kinematics()
        if self.moveit is not None and goal.mode == Goal.MODE_TARGET_POSE:
            return self._execute_moveit(handle, goal, kinematics)
        try:
            waypoints, target = self._waypoints(goal)
            path = (
                planning.plan(
                    self.arm_positions(), waypoints, self.limits.velocity, self.limits.acceleration, self.jerk, scale
                )
                if waypoints
                else None
            )
        except planning.PlanningError as exc:
            return self._refuse(handle, str(exc))
        if path is not None:
            gate = SafetyGate(self.limits, self.safety, kinematics.grip_positions, kinematics.collisions)
            verdict = gate.check(
                list(scene.ARM_JOINTS),
                path.times,
                path.positions,
                current=self.arm_positions(),
                state_age=self.state_age(),
                perception_age=self.perception_age(),
            )
            if not verdict:
                return self._refuse(handle, f'safety gate ({verdict.check}): {verdict.reason}')
        if goal.gripper_before >= 0:
            self.gripper(goal.gripper_before)
        if path is not None:
            outcome = self._follow(handle, path)
            if outcome is not None:
                return outcome
        if goal.gripper_after >= 0:
            self.gripper(goal.gripper_after)
        final = self.arm_positions()
        error = -1.0
        if target is not None:
            error = float(np.linalg.norm(kinematics.grip_positions([final])[0] - target))
        handle.succeed()
        return Result(
            success=True,
            code=Result.CODE_SUCCEEDED,
            reason='done',
            final_positions=list(final),
            final_position_error=error,
        )

    def _execute_moveit(self, handle, goal, kinematics):
        """Plan with MoveIt, check the exact planned trajectory with the safety gate, execute with MoveIt."""
        planned = self.moveit.plan_to_pose(goal.target_pose)
        if planned is None:
            return self._refuse(handle, 'MoveIt found no plan to the target pose')
        names, times, positions = self.moveit.joint_trajectory(planned)
        arm = [names.index(j) for j in scene.ARM_JOINTS if j in names]
        gate = SafetyGate(self.limits, self.safety, kinematics.grip_positions, kinematics.collisions)
        verdict = gate.check(
            [names[i] for i in arm],
            times,
            [[q[i] for i in arm] for q in positions],
            current=self.arm_positions(),
            state_age=self.state_age(),
            perception_age=self.perception_age(),
        )
        if not verdict:
            return self._refuse(handle, f'safety gate ({verdict.check}): {verdict.reason}')
        if goal.gripper_before >= 0:
            self.gripper(goal.gripper_before)
        self.moveit.execute(planned)
        if goal.gripper_after >= 0:
            self.gripper(goal.gripper_after)
        handle.succeed()
        return Result(
            success=True,
            code=Result.CODE_SUCCEEDED,
            reason='done (MoveIt)',
            final_positions=list(self.arm_positions()),
            final_position_error=-1.0,
        )

    def _synced_kinematics(self):
        """Arm kinematics in the twin with the latest perceived objects (none if never received)."""
        detections = messages.detections(self.objects) if self.objects is not None else []
        self.twin.sync(detections, self.arm_positions(), self.gripper_width())
        self.ik = PandaIk(self.twin.model) if self.ik.model is not self.twin.model else self.ik
        return ArmKinematics(self.twin.model, self.twin.data)

    def _waypoints(self, goal):
        """(arm joint waypoints, grip point target or None) for the goal's mode."""
        if goal.mode == Goal.MODE_GRIPPER_ONLY:
            return [], None
        if goal.mode == Goal.MODE_JOINT_PATH:
            traj = goal.joint_path
            names = list(traj.joint_names)
            if sorted(names) != sorted(scene.ARM_JOINTS) or not traj.points:
                raise planning.PlanningError(f'joint_path needs points over exactly {list(scene.ARM_JOINTS)}')
            order = [names.index(j) for j in scene.ARM_JOINTS]
            points = []
            for i, pt in enumerate(traj.points):
                if len(pt.positions) != len(names) or not np.all(np.isfinite(pt.positions)):
                    raise planning.PlanningError(f'joint_path point {i} is malformed')
                q = np.array(pt.positions)[order]
                if np.any(q < self.limits.lower) or np.any(q > self.limits.upper):
                    raise planning.PlanningError(f'joint_path point {i} is outside the joint limits')
                points.append(q)
            return points, None
        poses = {Goal.MODE_CARTESIAN_PATH: list(goal.cartesian_path), Goal.MODE_TARGET_POSE: [goal.target_pose]}.get(
            goal.mode
        )
        if poses is None:
            raise planning.PlanningError(f'unknown mode {goal.mode}')
        if not poses:
            raise planning.PlanningError('cartesian_path is empty')
        for pose in poses:
            if pose.header.frame_id not in ('', 'world', 'panda_base', 'panda_link0'):
                raise planning.PlanningError(f'poses must be in the world frame, not {pose.header.frame_id!r}')
        targets = [
            (
                (p.pose.position.x, p.pose.position.y, p.pose.position.z),
                (p.pose.orientation.w, p.pose.orientation.x, p.pose.orientation.y, p.pose.orientation.z),
            )
            for p in poses
        ]
        q_full = self.twin.data.qpos.copy()
        return planning.joint_waypoints_for_poses(self.ik, q_full, targets), np.array(targets[-1][0])

    # --- motion --------------------------------------------------------------------------------
    def _follow(self, handle, path):
        """Send the path and watch it; None when it completed, else the Result that ended it."""
        msg = JointTrajectory(joint_names=list(scene.ARM_JOINTS))
        for t, q, v in zip(path.times, path.positions, path.velocities):
            msg.points.append(
                JointTrajectoryPoint(
                    positions=list(q),
                    velocities=list(v),
                    time_from_start=Duration(sec=int(t), nanosec=int((t % 1) * 1e9)),
                )
            )
        start_q = self.arm_positions()
        self.trajectory_pub.publish(msg)
        sent_at = _stamp_seconds(self.joints)
        feedback = ExecuteMotion.Feedback()
        while True:
            time.sleep(0.02)
            if handle.is_cancel_requested:
                self.hold()
                handle.canceled()
                return Result(
                    success=False,
                    code=Result.CODE_CANCELED,
                    reason='canceled: holding position',
                    final_positions=list(self.arm_positions()),
                    final_position_error=-1.0,
                )
            age = self.state_age()
            if age is None or age > self.safety.state_timeout:
                return self._abort(handle, f'watchdog: no fresh joint state for {age:.2f} s')
            elapsed = _stamp_seconds(self.joints) - sent_at
            q = self.arm_positions()
            # per joint, the distance to the range the reference swept over the last `tracking_window`
            # seconds (up to `tracking_lag` ahead): joints lagging by different amounts (servo
            # dynamics, a loaded machine, latency) are not errors, a joint leaving its path is
            window = np.vstack(
                [start_q] * (elapsed < self.tracking_window)
                + [
                    path.sample(t)
                    for t in np.linspace(elapsed - self.tracking_window, elapsed + self.tracking_lag, 12)
                    if t > 0
                ]
            )
            error = float(np.max(np.maximum(window.min(axis=0) - q, 0) + np.maximum(q - window.max(axis=0), 0)))
            feedback.progress = float(np.clip(elapsed / path.duration, 0.0, 1.0))
            feedback.tracking_error = error
            handle.publish_feedback(feedback)
            if error > self.tracking_tolerance:
                return self._abort(handle, f'tracking error {error:.3f} rad exceeds {self.tracking_tolerance} rad')
            if elapsed >= path.duration and np.abs(q - path.positions[-1]).max() < self.goal_tolerance:
                return None
            if elapsed > path.duration + self.settle_timeout:
                short = float(np.abs(q - path.positions[-1]).max())
                if short < self.contact_tolerance:  # blocked by a contact the gate allowed: stop pushing, go on
                    self.hold()
                    self.get_logger().warning(f'stopped {short:.3f} rad short of the end (in contact): holding there')
                    return None
                return self._abort(
                    handle, f'no progress: the arm stopped {short:.3f} rad short of the end of the trajectory'
                )

    def _abort(self, handle, reason):
        self.hold()
        self.get_logger().error(f'aborted: {reason}')
        handle.abort()
        return Result(
            success=False,
            code=Result.CODE_ABORTED,
            reason=reason,
            final_positions=list(self.arm_positions()),
            final_position_error=-1.0,
        )

    def hold(self):
        """Stop now: an empty trajectory makes the controller hold its current position."""
        self.trajectory_pub.publish(JointTrajectory(joint_names=list(scene.ARM_JOINTS)))

    def destroy_node(self):
        self.twin.close()
        super().destroy_node()

    def gripper(self, width):
        """Command the gripper and wait until the fingers reach the width or stop (holding an object).

        Settling is judged on /joint_states time (simulated time in simulation), so a loaded
        machine only makes it slower, never wrong."""
        target = float(np.clip(width, 0.0, GRIPPER_OPEN))
        self.gripper_pub.publish(Float64(data=target))
        commanded = _stamp_seconds(self.joints)
        deadline = time.monotonic() + 10 * self.gripper_time
        last_width, still_since = self.gripper_width(), commanded
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now, current = _stamp_seconds(self.joints), self.gripper_width()
            if abs(current - target) < 0.003:
                return
            if abs(current - last_width) > 1e-4:
                last_width, still_since = current, now
            elif now - commanded > 0.3 and now - still_since > self.gripper_time / 2:
                return  # stopped short of the target: the fingers hold something
        self.get_logger().warning(f'gripper did not settle at {target:.3f} m (at {self.gripper_width():.3f} m)')


def main(args=None):
    node_runner.run(ExecutionNode, args, threads=3)


if __name__ == '__main__':
    main()
