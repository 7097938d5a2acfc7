"""execution: the ExecuteMotion action server and the ~/stream service (StreamChunk).

ExecuteMotion plans (IK + ruckig, or MoveIt for target poses where moveit_py exists), passes
every trajectory through the safety gate, sends it to the joint trajectory controller and
watches /joint_states: tracking error beyond tolerance, no progress or stale states stop the arm
(hold position); a motion stopped just short of its end by a contact the gate allowed (fingers
on an object) holds there and goes on to its gripper event. Gripper-only goals pass the state
watchdog. The gate's verdict is taken again after gripper_before, so what is published is what
was just checked. Cancel is honoured in every phase and holds at once; gripper_after never runs
after a cancel. The arm holds when the node stops.

~/stream takes short joint chunks that continue the commanded motion without stopping (policies
at 10-20 Hz), each with an optional gripper opening commanded once the chunk is accepted (not
waited for); each chunk is gated with its braking tail (streaming.JointStream); a refused chunk,
a stale joint state or a tracking error brakes the arm to rest and ends the stream.

One motion at a time: a goal arriving while another runs (or while a stream moves the arm) is
rejected, and so are chunks while a goal runs.
"""

import collections
import threading
import time

from twinloop_interfaces.action import ExecuteMotion
from twinloop_interfaces.msg import DetectedObjectArray
from twinloop_interfaces.srv import StreamChunk

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from twinloop_core.gripper import OPEN_WIDTH
from twinloop_execution import planning, streaming, trajectory
from twinloop_execution.kinematics import ArmKinematics, PandaIk
from twinloop_execution.safety import JointLimits, SafetyConfig, SafetyGate, Verdict
from twinloop_ros import conversions as ros_conversions
from twinloop_ros import node_runner, topics
from twinloop_twin import messages, scene
from twinloop_twin.twin import MeshLibrary, SimTwin

Goal, Result = ExecuteMotion.Goal, ExecuteMotion.Result
POLL = 0.02  # [s] how often waits look at the joint states and the cancel request
STALL_GRACE = 0.25  # [s] a joint state found too old gets this long to arrive (it may be queued behind a stall of ours)


class Canceled(Exception):
    """The goal was canceled while waiting."""


def _doc(text):
    return ParameterDescriptor(description=text)


def _trajectory_msg(times, positions, velocities=None, start=None):
    """JointTrajectory of the arm joints: times [s] from start (header.stamp, joint-state clock; None: on receipt)."""
    msg = JointTrajectory(joint_names=list(scene.ARM_JOINTS))
    if start is not None:
        msg.header.stamp = ros_conversions.stamp(start)
    velocities = velocities if velocities is not None else [None] * len(times)
    for t, q, v in zip(times, positions, velocities):
        point = JointTrajectoryPoint(positions=[float(x) for x in q], time_from_start=ros_conversions.duration(t))
        if v is not None:
            point.velocities = [float(x) for x in v]
        msg.points.append(point)
    return msg


class ExecutionNode(Node):
    """The execution node: gated motions and streams on the arm."""

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
            'a motion stopped short by at most this much (in contact, e.g. fingers on an object) holds there '
            'and goes on [rad]',
        )
        self.gripper_time = p('gripper_time', 1.0, 'time given to a gripper command [s]')
        self.state_wait = p('state_wait', 3.0, 'how long a goal waits for fresh joint states and object poses [s]')
        self.stream_config = streaming.StreamConfig(
            min_chunk=p('stream_min_chunk', 0.1, 'shortest streamed chunk [s]'),
            max_chunk=p('stream_max_chunk', 1.0, 'longest streamed chunk [s]'),
            position_tolerance=p('stream_position_tolerance', 0.02, 'chunk start vs commanded position [rad]'),
            velocity_tolerance=p('stream_velocity_tolerance', 0.15, 'chunk start vs commanded velocity [rad/s]'),
        )
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
                self.moveit = moveit_backend.MoveItPlanner(p('moveit_group', 'panda_arm', 'MoveIt planning group'))
            else:
                self.get_logger().warning(
                    f'backend "moveit" requested but {moveit_backend.why_unavailable()}; using the embedded backend'
                )
        elif backend != 'embedded':
            raise ValueError(f'backend must be "embedded" or "moveit", not {backend!r}')
        joints = list(scene.ARM_JOINTS)
        self.description_pub = self.create_publisher(String, topics.ROBOT_DESCRIPTION, topics.LATCHED_QOS)  # for RViz
        with open(urdf) as f:
            self.description_pub.publish(String(data=f.read()))
        self.limits = JointLimits.from_description(urdf, limits_yaml, joints)
        config = scene.SceneConfig.from_yaml(scene_path)
        self.twin = SimTwin(MeshLibrary.from_scene(config), [])
        self.twin.sync([], config.home)
        self.safety = SafetyConfig.from_yaml(safety_yaml)
        self.ik = PandaIk(self.twin.model)
        self.lock = threading.RLock()  # one motion at a time: busy (a goal) or a moving stream
        self.chunk_lock = threading.Lock()  # one stream chunk checked at a time (a stop never waits for it)
        self.twin_lock = threading.Lock()  # the collision twin is synced and queried by one caller at a time
        self.busy = False
        self.stream = None  # the active streaming.JointStream
        self.stream_started = 0.0  # joint-state time at the stream's time 0
        self.stream_ended = ''  # why the last stream was ended by the node
        self.stopped_streams = collections.deque(maxlen=64)  # ids stopped by their clients: never restarted
        self.joints = self.joint_state = self.joints_received = self.objects = self.objects_received = None
        self.joints_arrived = threading.Condition()

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
        # reentrant: a stop is served while a chunk is being gated (chunk_lock keeps chunks one at a time)
        self.create_service(StreamChunk, '~/stream', self.on_stream_chunk, callback_group=ReentrantCallbackGroup())
        self.create_timer(0.05, self.watch_stream, callback_group=MutuallyExclusiveCallbackGroup())
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
        """Keep the newest well-formed joint state (malformed ones are logged and ignored)."""
        try:
            state = ros_conversions.arm_state(msg)
            if not (np.all(np.isfinite(state[0])) and np.isfinite(state[1])):
                raise ValueError('non-finite joint positions')
        except ValueError as exc:
            self.get_logger().warning(f'joint state ignored: {exc}', throttle_duration_sec=5.0)
            return
        with self.joints_arrived:
            self.joints, self.joint_state, self.joints_received = msg, state, time.monotonic()
            self.joints_arrived.notify_all()
        with self.lock:  # a streamed chunk's gripper opening whose point the stream has reached
            due = None if self.stream is None else self.stream.gripper_due(self.state_time() - self.stream_started)
            if due is not None:
                self.gripper_pub.publish(Float64(data=float(due)))

    def on_objects(self, msg):
        """Keep the newest perceived objects (for the collision check)."""
        self.objects, self.objects_received = msg, time.monotonic()

    def arm_positions(self):
        """Measured arm joints [rad]."""
        return self.joint_state[0].copy()

    def gripper_width(self):
        """Measured gripper opening [m]."""
        return self.joint_state[1]

    def state_time(self):
        """Stamp of the newest joint state [s] (simulated time in simulation)."""
        return ros_conversions.seconds(self.joints.header.stamp)

    def state_age(self):
        """Seconds since the newest joint state arrived (None: never). One older than the limit gets
        STALL_GRACE to arrive first: after this process stalled (a GC pause, a loaded host) the executor
        may serve a timer or request before the joint states queued meanwhile."""
        if self.joints_received is None:
            return None
        with self.joints_arrived:
            self.joints_arrived.wait_for(self._state_fresh, STALL_GRACE)
        return time.monotonic() - self.joints_received

    def _state_fresh(self):
        return time.monotonic() - self.joints_received <= self.safety.state_timeout

    def perception_age(self):
        """Seconds since the newest perceived objects arrived (None: never)."""
        return None if self.objects_received is None else time.monotonic() - self.objects_received

    def _gate(self, kinematics):
        return SafetyGate(self.limits, self.safety, kinematics.link_points, kinematics.collisions)

    def _state_verdict(self):
        """The watchdog part of the gate, for goals that move only the fingers."""
        age = self.state_age()
        if age is None or not 0 <= age <= self.safety.state_timeout:
            return Verdict(
                False, f'joint state is stale ({age} s old, limit {self.safety.state_timeout} s)', 'watchdog'
            )
        return Verdict(True)

    # --- goals ---------------------------------------------------------------------------------
    def on_goal(self, goal):
        """Accept one motion at a time (none while a stream moves the arm)."""
        with self.lock:
            if self.busy or self.stream is not None:
                self.get_logger().warning('goal rejected: another motion or a stream is running (one at a time)')
                return GoalResponse.REJECT
            self.busy = True
        return GoalResponse.ACCEPT

    def execute(self, handle):
        """Run one ExecuteMotion goal; a bug holds the arm and ends the goal with the reason."""
        try:
            return self._execute(handle)
        except Canceled:
            return self._canceled(handle)
        except Exception as exc:  # a bug must not leave the arm moving or the server wedged
            self.hold()
            self.get_logger().error(f'execution failed: {exc!r}')
            handle.abort()
            return Result(success=False, code=Result.CODE_ABORTED, reason=f'internal error: {exc}')
        finally:
            with self.lock:
                self.busy = False

    def _await_fresh_state(self, handle):
        """Give joint states and object poses up to `state_wait` seconds to arrive (just after start-up);
        the gate's watchdog then judges whatever is there."""
        deadline = time.monotonic() + self.state_wait
        while time.monotonic() < deadline:
            self._check_cancel(handle)
            state, perception = self.state_age(), self.perception_age()
            if (
                state is not None
                and state <= self.safety.state_timeout
                and perception is not None
                and perception <= self.safety.perception_timeout
            ):
                return
            time.sleep(POLL)

    @staticmethod
    def _check_cancel(handle):
        if handle.is_cancel_requested:
            raise Canceled()

    def _refuse(self, handle, reason):
        self.get_logger().warning(f'refused: {reason}')
        handle.abort()
        return Result(success=False, code=Result.CODE_REJECTED, reason=reason, final_position_error=-1.0)

    def _canceled(self, handle):
        self.hold()
        handle.canceled()
        final = list(self.arm_positions()) if self.joint_state is not None else []
        return Result(
            success=False,
            code=Result.CODE_CANCELED,
            reason='canceled: holding position',
            final_positions=final,
            final_position_error=-1.0,
        )

    def _execute(self, handle):
        goal = handle.request
        self._await_fresh_state(handle)
        if self.joints is None:
            return self._refuse(handle, 'no /joint_states received yet')
        scale = goal.velocity_scale if goal.velocity_scale > 0 else self.velocity_scale
        if not 0 < scale <= 1:
            return self._refuse(handle, f'velocity_scale must be in (0, 1], got {goal.velocity_scale}')
        for name, width in (('gripper_before', goal.gripper_before), ('gripper_after', goal.gripper_after)):
            if not np.isfinite(width) or (width >= 0 and width > OPEN_WIDTH + 1e-6):
                return self._refuse(handle, f'{name} must be negative (keep) or in [0, {OPEN_WIDTH}] m, got {width}')
        try:
            path, target, verdict = self._planned_and_gated(goal, scale)
        except planning.PlanningError as exc:
            return self._refuse(handle, str(exc))
        if not verdict:
            return self._refuse(handle, f'safety gate ({verdict.check}): {verdict.reason}')
        self._check_cancel(handle)
        if goal.gripper_before >= 0:
            stale = self.gripper(goal.gripper_before, handle)
            if stale:
                return self._abort(handle, stale)
            if path is not None:  # the fingers took time: plan and gate again from where the arm is now
                try:
                    path, target, verdict = self._planned_and_gated(goal, scale)
                except planning.PlanningError as exc:
                    return self._refuse(handle, str(exc))
                if not verdict:
                    return self._refuse(handle, f'safety gate ({verdict.check}) after gripper_before: {verdict.reason}')
        self._check_cancel(handle)
        if path is not None:
            outcome = self._follow(handle, path)
            if outcome is not None:
                return outcome
        if goal.gripper_after >= 0:
            self._check_cancel(handle)
            stale = self.gripper(goal.gripper_after, handle)
            if stale:
                return self._abort(handle, stale)
        final = self.arm_positions()
        error = -1.0
        if target is not None:
            error = float(np.linalg.norm(self._synced_kinematics().grip_positions([final])[0] - target))
        handle.succeed()
        return Result(
            success=True,
            code=Result.CODE_SUCCEEDED,
            reason='done',
            final_positions=list(final),
            final_position_error=error,
        )

    def _planned_and_gated(self, goal, scale):
        """(timed path or None for gripper-only goals, grip target or None, verdict), from the current state."""
        if goal.mode == Goal.MODE_GRIPPER_ONLY:
            return None, None, self._state_verdict()
        gate = self._gate(self._synced_kinematics())
        if self.moveit is not None and goal.mode == Goal.MODE_TARGET_POSE:
            names, times, positions = self.moveit.plan_to_pose(goal.target_pose)
            verdict = gate.check(
                names,
                times,
                positions,
                current=self.arm_positions(),
                state_age=self.state_age(),
                perception_age=self.perception_age(),
            )
            order = [names.index(j) for j in scene.ARM_JOINTS] if verdict else []
            positions = np.asarray(positions, float)[:, order] if verdict else None
            path = (
                trajectory.TimedPath(np.asarray(times, float), positions, np.gradient(positions, times, axis=0))
                if verdict
                else None
            )
            return path, None, verdict
        waypoints, target = self._waypoints(goal)
        path = planning.plan(
            self.arm_positions(), waypoints, self.limits.velocity, self.limits.acceleration, self.limits.jerk, scale
        )
        verdict = gate.check(
            list(scene.ARM_JOINTS),
            path.times,
            path.positions,
            current=self.arm_positions(),
            state_age=self.state_age(),
            perception_age=self.perception_age(),
        )
        return path, target, verdict

    def _synced_kinematics(self):
        """Arm kinematics in the twin with the latest perceived objects (none if never received)."""
        with self.twin_lock:
            detections = messages.detections(self.objects) if self.objects is not None else []
            self.twin.sync(detections, self.arm_positions(), self.gripper_width())
            self.ik = PandaIk(self.twin.model) if self.ik.model is not self.twin.model else self.ik
            return ArmKinematics(self.twin.model, self.twin.data)

    def _waypoints(self, goal):
        """(arm joint waypoints, grip point target or None) for the goal's mode."""
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
        targets = [(ros_conversions.pose_position(p.pose), ros_conversions.pose_quat(p.pose)) for p in poses]
        q_full = self.twin.data.qpos.copy()
        return planning.joint_waypoints_for_poses(self.ik, q_full, targets), np.array(targets[-1][0])

    # --- motion --------------------------------------------------------------------------------
    def _follow(self, handle, path):
        """Send the path and watch it; None when it completed, else the Result that ended it."""
        start_q = self.arm_positions()
        self.trajectory_pub.publish(_trajectory_msg(path.times, path.positions, path.velocities))
        sent_at = self.state_time()
        feedback = ExecuteMotion.Feedback()
        while True:
            time.sleep(POLL)
            self._check_cancel(handle)
            age = self.state_age()
            if age is None or age > self.safety.state_timeout:
                return self._abort(handle, f'watchdog: no fresh joint state for {age:.2f} s')
            elapsed = self.state_time() - sent_at
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

    def gripper(self, width, handle=None):
        """Command the gripper and wait until the fingers reach the width or stop (holding an object);
        a cancel of the goal ends the wait (raises Canceled). Returns None, or the watchdog's reason when
        joint states go stale (which ends the wait at once).

        Settling is judged on /joint_states time (simulated time in simulation), so a loaded
        machine only makes it slower, never wrong."""
        target = float(np.clip(width, 0.0, OPEN_WIDTH))
        self.gripper_pub.publish(Float64(data=target))
        commanded = self.state_time()
        deadline = time.monotonic() + 10 * self.gripper_time
        last_width, still_since = self.gripper_width(), commanded
        while time.monotonic() < deadline:
            time.sleep(POLL)
            if handle is not None:
                self._check_cancel(handle)
            age = self.state_age()
            if age is None or age > self.safety.state_timeout:
                return f'watchdog: no fresh joint state for {age or 0.0:.2f} s while the gripper moved'
            now, current = self.state_time(), self.gripper_width()
            if abs(current - target) < 0.003:
                return None
            if abs(current - last_width) > 1e-4:
                last_width, still_since = current, now
            elif now - commanded > 0.3 and now - still_since > self.gripper_time / 2:
                return None  # stopped short of the target: the fingers hold something
        self.get_logger().warning(f'gripper did not settle at {target:.3f} m (at {self.gripper_width():.3f} m)')
        return None

    # --- streaming -------------------------------------------------------------------------------
    def on_stream_chunk(self, request, response):
        """~/stream: gate and commit one chunk, or stop the stream at once (even while a chunk is gated)."""
        if request.stop:
            with self.lock:
                self.stopped_streams.append(request.stream_id)
                if self.stream is not None and self.stream.stream_id == request.stream_id:
                    self._end_stream('stopped by the client')
            response.accepted, response.reason = True, 'braking to rest'
            return response
        if not self.chunk_lock.acquire(blocking=False):
            response.accepted, response.check = False, 'busy'
            response.reason = 'another chunk is being checked: send the next one after its reply'
            return response
        try:
            self._stream_chunk(request, response)
        except streaming.ChunkRefused as refused:
            response.accepted, response.check, response.reason = False, refused.check, str(refused)
            with self.lock:
                if self.stream is not None:
                    response.stream_time = self.state_time() - self.stream_started
                if self.stream is not None and refused.check not in ('busy', 'stream'):
                    self._end_stream(f'chunk refused ({refused.check}): {refused}')
                    response.reason += '; the arm brakes to rest and the stream ends'
        except Exception as exc:  # a bug brakes the arm and answers, never kills the node
            self.get_logger().error(f'stream chunk failed: {exc!r}')
            with self.lock:
                if self.stream is not None:
                    self._end_stream(f'internal error: {exc!r}')
            response.accepted, response.check, response.reason = False, 'internal', f'internal error: {exc!r}'
        finally:
            self.chunk_lock.release()
        return response

    def _stream_chunk(self, request, response):
        if self.joint_state is None:
            raise streaming.ChunkRefused('watchdog', 'no /joint_states received yet')
        age = self.state_age()
        with self.lock:
            if self.busy:
                raise streaming.ChunkRefused('busy', 'an ExecuteMotion goal is running')
            if request.stream_id in self.stopped_streams:
                raise streaming.ChunkRefused('stream', f'stream {request.stream_id!r} was stopped by its client')
            if self.stream is not None and request.stream_id != self.stream.stream_id:
                if not self._stream_at_rest():
                    raise streaming.ChunkRefused('busy', f'stream {self.stream.stream_id!r} is moving the arm')
                self.stream = None
            if age is None or not age <= self.safety.state_timeout:
                raise streaming.ChunkRefused('watchdog', f'joint state is stale ({age} s old)')
            if self.stream is None:
                self.stream = streaming.JointStream(
                    request.stream_id,
                    self.arm_positions(),
                    self.limits.acceleration,
                    self.limits.jerk,
                    self._stream_gate(),
                    self.stream_config,
                )
                self.stream_started, self.stream_ended = self.state_time(), ''
            stream = self.stream
        gripper, widths = request.gripper_width, np.asarray(request.gripper_widths, float)
        if not (np.isfinite(gripper) and gripper <= OPEN_WIDTH + 1e-9 and np.all(widths <= OPEN_WIDTH + 1e-9)):
            raise streaming.ChunkRefused(
                'structure',
                f'gripper_width {gripper} and gripper_widths must be finite and <= {OPEN_WIDTH} m (negative: keep)',
            )
        names = list(request.chunk.joint_names)
        if sorted(names) != sorted(scene.ARM_JOINTS):
            raise streaming.ChunkRefused('structure', f'chunk joint_names must be exactly {list(scene.ARM_JOINTS)}')
        order = [names.index(j) for j in scene.ARM_JOINTS]
        points = request.chunk.points
        if len(points) > self.stream_config.max_points:
            raise streaming.ChunkRefused('structure', f'{len(points)} points (limit {self.stream_config.max_points})')
        if any(len(pt.positions) != len(names) or len(pt.velocities) not in (0, len(names)) for pt in points):
            raise streaming.ChunkRefused(
                'structure', 'every point needs one position (and none or one velocity) per joint'
            )
        times = [ros_conversions.seconds(pt.time_from_start) for pt in points]
        positions = [[pt.positions[i] for i in order] for pt in points]
        velocities = (
            [[pt.velocities[i] for i in order] for pt in points] if all(pt.velocities for pt in points) else None
        )
        if stream.chunks == 0:
            self._synced_kinematics()  # a first sync may rebuild the twin (~0.3 s): not inside the chunk's lead
        started = self.stream_started
        clock = lambda: self.state_time() - started  # noqa: E731
        now = clock()
        splice = request.splice_time if np.isfinite(request.splice_time) else 0.0
        stream_times, q, v = stream.splice(now, splice, times, positions, velocities, clock, widths)
        with self.lock:  # a stop (or the watchdog) may have ended the stream while the chunk was gated
            if self.stream is not stream:
                raise streaming.ChunkRefused(
                    'stream', f'the stream ended while the chunk was checked: {self.stream_ended}'
                )
            self.trajectory_pub.publish(_trajectory_msg(stream_times, q, v, started))
            if gripper >= 0:
                self.gripper_pub.publish(Float64(data=float(gripper)))
                stream.gripper_commanded = gripper
        end = stream.last_chunk_end
        commanded_q, commanded_v = stream.commanded(end)
        response.accepted, response.stream_time, response.committed_until = True, now, end
        response.commanded_positions, response.commanded_velocities = list(commanded_q), list(commanded_v)

    def _stream_gate(self):
        """The gate check a stream's chunks pass (state freshness and the twin's collisions included)."""

        def check(times, positions, current, start_velocity):
            gate = self._gate(self._synced_kinematics())
            return gate.check(
                list(scene.ARM_JOINTS),
                times,
                positions,
                current=current,
                state_age=self.state_age(),
                perception_age=self.perception_age(),
                start_velocity=start_velocity,
            )

        return check

    def _stream_at_rest(self):
        return self.stream is None or self.state_time() - self.stream_started > self.stream.path.end

    def _end_stream(self, reason):
        """Brake to rest from the commanded state now and end the stream (the reason is kept for its client)."""
        with self.lock:
            now = self.state_time() - self.stream_started
            times, q, v = self.stream.brake(now)
            self.trajectory_pub.publish(_trajectory_msg(times, q, v, self.stream_started))
            self.get_logger().warning(f'stream {self.stream.stream_id!r} ended: {reason}')
            self.stream, self.stream_ended = None, reason

    def watch_stream(self):
        """Watchdog of a moving stream: stale joint states or the arm leaving the commanded path brake it."""
        age = self.state_age()  # outside the lock: a stop never waits for a late joint state's grace
        with self.lock:
            self._watch_stream(age)

    def _watch_stream(self, age):
        if self.stream is None or self.joint_state is None:
            return
        if self._stream_at_rest():
            return
        if age is None or age > self.safety.state_timeout:
            self.hold()  # no state to brake from: hold where the controller is
            self.get_logger().error(f'stream {self.stream.stream_id!r} ended: no fresh joint state for {age:.2f} s')
            self.stream, self.stream_ended = None, f'watchdog: no fresh joint state for {age:.2f} s'
            return
        now = self.state_time() - self.stream_started
        reference = np.array([self.stream.commanded(t)[0] for t in np.linspace(now - self.tracking_window, now, 12)])
        q = self.arm_positions()
        error = float(np.max(np.maximum(reference.min(axis=0) - q, 0) + np.maximum(q - reference.max(axis=0), 0)))
        if error > self.tracking_tolerance:
            self._end_stream(f'tracking error {error:.3f} rad exceeds {self.tracking_tolerance} rad')

    def destroy_node(self):
        """Hold the arm before going away (the controller would otherwise finish what it was sent)."""
        try:
            if self.context.ok():
                self.hold()
        except Exception:  # noqa: BLE001 - stopping must not fail
            pass
        self.twin.close()
        super().destroy_node()


def main(args=None):
    """Run the node."""
    node_runner.run(ExecutionNode, args, threads=4)


if __name__ == '__main__':
    main()
