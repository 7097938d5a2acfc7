"""vla_policy: the RunPolicy action server (a thin node over twinloop_vla.runner).

Inactive until a goal arrives: the camera and joint-state callbacks drop messages while no goal
runs, and no policy runs. A goal names a registered policy (empty: `default_policy`); it is
loaded once from `checkpoints_dir/<name>` (Policy.save's layout) and kept; a policy with weights
but no checkpoint runs only with `allow_untrained` (random init, labelled so in the result).
Observations are synchronised by stamp (twinloop_vla.sync); chunks go to the execution node's
~/stream, where each passes the safety gate with its braking tail (twinloop_vla.runner); before
that, targets a little below the grip floor are raised to it (twinloop_vla.floor) and the chunk is
shaped to the arm's limits (twinloop_vla.blending.RateLimit). One goal
at a time: a goal arriving while another runs is rejected. Cancel stops the stream from the
cancel callback at once. An action's entry after the arm joints is the gripper opening [m]: each
chunk carries one per point to the execution node, which commands each when the arm's stream reaches
it (`command_gripper`).
"""

import importlib
import threading
import time
from pathlib import Path

from twinloop_interfaces.action import RunPolicy
from twinloop_interfaces.srv import StreamChunk

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from twinloop_core.ports import StreamReply
from twinloop_core.robot import ARM_JOINTS
from twinloop_data.world_sim_expert import FPS, policy_state
from twinloop_execution.safety import JointLimits
from twinloop_ros import conversions as ros_conversions
from twinloop_ros import node_runner, topics
from twinloop_vla.blending import BlendConfig, RateLimit
from twinloop_vla.floor import GripFloor
from twinloop_vla.policies import load_policy, make_policy, policy_class
from twinloop_vla.runner import run_policy
from twinloop_vla.sync import ObservationSync
from twinloop_vla.trace import ChunkTrace

STREAM_CALL_TIMEOUT = 10.0  # [s] an unanswered stream call counts as a refusal


def _doc(text):
    return ParameterDescriptor(description=text)


class NodeIO:
    """The runner's RunIO on this node: synchronised observations, the stream service, feedback."""

    def __init__(self, node, handle):
        self.node, self.handle = node, handle
        self.stream_id = ''
        self.canceled = False  # set by the node's cancel callback, under node.cancel_lock

    def observation(self):
        """The newest synchronised fresh observation, or why there is none."""
        with self.node.sync_lock:
            return self.node.sync.latest()

    def clock(self):
        """The newest joint-state stamp [s]."""
        with self.node.sync_lock:
            return self.node.sync.now()

    def arm(self):
        """Measured arm positions and velocities."""
        return self.node.arm_state

    def send(self, stream_id, times, positions, velocities, splice_time, gripper_widths):
        """One chunk (and a gripper opening per point, < 0: keep) through ~/stream; refusals and timeouts as
        a StreamReply."""
        self.stream_id = stream_id
        points = [
            JointTrajectoryPoint(
                positions=[float(x) for x in q],
                velocities=[float(x) for x in v],
                time_from_start=ros_conversions.duration(float(t)),
            )
            for t, q, v in zip(times, np.asarray(positions), np.asarray(velocities))
        ]
        chunk = JointTrajectory(joint_names=list(ARM_JOINTS), points=points)
        request = StreamChunk.Request(
            stream_id=stream_id,
            chunk=chunk,
            splice_time=splice_time,
            gripper_widths=[float(w) for w in gripper_widths],
        )
        return self.node.stream_call(request, unless_canceled=self)

    def stop(self, stream_id):
        """Brake to rest and end the stream (when one was started)."""
        if self.stream_id:
            self.node.stream_call(StreamChunk.Request(stream_id=stream_id, stop=True))

    def cancelled(self):
        """The goal's cancel was requested."""
        return self.canceled or self.handle.is_cancel_requested

    def feedback(self, report):
        """RunPolicy feedback for one chunk."""
        self.handle.publish_feedback(
            RunPolicy.Feedback(
                chunk_index=report.index,
                chunk_size=report.size,
                actions_executed=report.actions_executed,
                inference_time=float(report.inference_time),
                last_action=[float(x) for x in report.last_action],
                latency=float(report.latency),
                queue_depth=report.queue_depth,
                actions_skipped=report.skipped,
            )
        )


class VlaPolicyNode(Node):
    """Serves RunPolicy: learned policies closed loop on the arm through the execution node's stream."""

    def __init__(self):
        super().__init__('vla_policy')
        p = lambda name, default, doc: self.declare_parameter(name, default, _doc(doc)).value  # noqa: E731
        cameras = p('cameras', ['front', 'wrist'], 'cameras whose colour frames the policy sees, in its view order')
        use_depth = p('use_depth', False, 'also synchronise aligned depth frames (for policies that use depth)')
        self.sync = ObservationSync(
            cameras,
            slop=p('sync_slop', 0.02, 'frames and the joint state of one observation lie this close in stamp [s]'),
            max_age=p('max_observation_age', 0.5, 'newest frame vs newest joint state: older is stale [s]'),
            use_depth=use_depth,
        )
        self.observation_timeout = p('observation_timeout', 3.0, 'a goal fails after this long without one [s]')
        d = BlendConfig()  # the defaults, one place with the in-process evaluation's
        self.blend = BlendConfig(
            blending=p('blending', d.blending, 'receding_horizon, temporal_ensembling or rtc (real-time chunking)'),
            control_period=p('control_period', 1.0 / FPS, "time between a chunk's actions [s] (the training data's)"),
            execute_steps=p(
                'execute_steps', d.execute_steps, 'actions of a chunk executed before the next one takes over'
            ),
            blend_steps=p('blend_steps', d.blend_steps, 'rtc: actions over which the seam between chunks is blended'),
            blend_gripper=p(
                'blend_gripper',
                d.blend_gripper,
                'rtc: blend the gripper opening over the seam too, before open or shut is decided',
            ),
            converge_steps=p(
                'converge_steps',
                d.converge_steps,
                "actions over which a re-anchored chunk's shift fades to the policy's own targets (0: kept)",
            ),
            ensemble_decay=p(
                'ensemble_decay', d.ensemble_decay, "temporal ensembling: ACT's m in the weights exp(-m i)"
            ),
            lead=p('lead', d.lead, 'chunks are spliced this far ahead of now [s]'),
            action_space=p('action_space', d.action_space, 'joint_position or joint_delta (targets - state)'),
            command_gripper=p(
                'command_gripper',
                d.command_gripper,
                'command the gripper opening of each action (its entry 8) as the arm starts it',
            ),
            limit_margin=p(
                'limit_margin', d.limit_margin, "chunks shaped to this share of the arm's limits (0: not shaped)"
            ),
            limit_tolerance=p(
                'limit_tolerance', d.limit_tolerance, 'a chunk the shaping would move further is sent as it is [rad]'
            ),
        )
        grip_floor = p('grip_floor', 0.021, "world height the grip site's targets are raised to [m] (0: no floor)")
        floor_tolerance = p('grip_floor_tolerance', 0.03, 'a chunk needing more lift than this is sent as it is [m]')
        urdf = p('robot_description_file', '', "URDF of the arm (its velocity limits: the shaping's, the floor's)")
        limits_yaml = p('joint_limits_file', '', 'MoveIt-style joint_limits.yaml (accelerations and jerks)')
        self.shaping = self.floor = None
        if self.blend.limit_margin > 0 or grip_floor > 0:
            if not (urdf and limits_yaml):
                raise ValueError(
                    'limit_margin > 0 and grip_floor > 0 need robot_description_file and joint_limits_file '
                    '(or set both to 0)'
                )
            limits = JointLimits.from_description(urdf, limits_yaml, list(ARM_JOINTS))
            self.shaping = RateLimit.of(limits, self.blend)
            self.floor = GripFloor.panda(grip_floor, floor_tolerance, limits)
        self.default_policy = p('default_policy', 'vga', 'policy run when a goal names none')
        self.checkpoints_dir = p('checkpoints_dir', '', 'folder of <policy name>/ checkpoints (Policy.save)')
        self.allow_untrained = p('allow_untrained', False, 'run a policy with weights but no checkpoint (random)')
        trace_dir = p('trace_dir', '', "write every chunk's observation and actions under this folder ('': off)")
        self.trace = ChunkTrace(trace_dir, self.blend.control_period) if trace_dir else None
        self.max_chunks = p('max_chunks', 50, 'chunks of a goal that sets none')
        self.timeout = p('timeout', 60.0, 'time limit of a goal that sets none [s]')
        for module in p('policy_modules', ['twinloop_vla.policies'], 'modules whose import registers the policies'):
            importlib.import_module(module)
        stream_service = p('stream_service', topics.EXECUTION_STREAM, "the execution node's StreamChunk service")
        self.sync_lock = threading.Lock()
        self.active = False
        self.busy_lock = threading.Lock()
        self.cancel_lock = threading.Lock()
        self.policies = {}  # name -> (policy, label), built once
        self.arm_state = (np.zeros(7), np.zeros(7))
        self.io = None
        sensors = MutuallyExclusiveCallbackGroup()
        self.create_subscription(
            JointState, topics.JOINT_STATES, self.on_joints, topics.STATE_QOS, callback_group=sensors
        )
        kinds = ('color', 'depth') if use_depth else ('color',)
        for camera in cameras:
            for kind in kinds:
                self.create_subscription(
                    Image,
                    topics.camera_topic(camera, kind),
                    lambda msg, camera=camera, kind=kind: self.on_frame(camera, kind, msg),
                    topics.SENSOR_QOS,
                    callback_group=sensors,
                )
        self.stream = self.create_client(StreamChunk, stream_service, callback_group=ReentrantCallbackGroup())
        self.server = ActionServer(
            self,
            RunPolicy,
            topics.RUN_POLICY,
            self.execute,
            goal_callback=self.on_goal,
            cancel_callback=self.on_cancel,
            callback_group=ReentrantCallbackGroup(),
        )
        self.get_logger().info(
            f'vla_policy ready (inactive until a goal): cameras {cameras}, blending {self.blend.blending}, '
            f'default policy {self.default_policy!r}'
        )

    # --- sensors ---------------------------------------------------------------------------------
    def on_joints(self, msg):
        """Keep joint states while a goal runs."""
        if not self.active:
            return
        try:
            q, width = ros_conversions.arm_state(msg)
        except ValueError as exc:
            self.get_logger().warning(f'joint state ignored: {exc}', throttle_duration_sec=5.0)
            return
        names = list(msg.name)
        velocity = (
            np.array([msg.velocity[names.index(j)] for j in ARM_JOINTS])
            if len(msg.velocity) == len(names)
            else np.zeros(7)
        )
        self.arm_state = (q, velocity)
        with self.sync_lock:
            self.sync.add_joints(ros_conversions.seconds(msg.header.stamp), policy_state(q, width, velocity))

    def on_frame(self, camera, kind, msg):
        """Keep camera frames while a goal runs."""
        if not self.active:
            return
        try:
            array = ros_conversions.image_array(msg) if kind == 'color' else ros_conversions.depth_metres(msg)
        except ValueError as exc:
            self.get_logger().warning(f'{camera} {kind} frame ignored: {exc}', throttle_duration_sec=5.0)
            return
        if kind == 'color' and msg.encoding != 'rgb8':
            array = array[..., ::-1] if msg.encoding == 'bgr8' else None
        if array is not None:
            with self.sync_lock:
                self.sync.add_frame(camera, kind, ros_conversions.seconds(msg.header.stamp), array.copy())

    # --- the action --------------------------------------------------------------------------------
    def on_goal(self, goal):
        """One goal at a time: reject while another runs."""
        with self.busy_lock:
            if self.active:
                self.get_logger().warning('RunPolicy goal rejected: another goal is running (one at a time)')
                return GoalResponse.REJECT
            self.active = True
        return GoalResponse.ACCEPT

    def on_cancel(self, _):
        """Accept, and stop the stream now (the loop notices the cancel between its steps); no chunk
        is sent after this stop (see stream_call)."""
        with self.cancel_lock:
            io = self.io
            if io is not None:
                io.canceled = True
                if io.stream_id:
                    self.stream.call_async(StreamChunk.Request(stream_id=io.stream_id, stop=True))
                    self.get_logger().info(f'cancel: stream stopped at robot time {io.clock():.3f} s')
        return CancelResponse.ACCEPT

    def stream_call(self, request, unless_canceled=None):
        """Call ~/stream and wait for the answer (a StreamReply; unanswered: refused with check 'timeout').
        unless_canceled: a NodeIO whose goal, once canceled, sends nothing more (checked under the lock
        the cancel callback's stop is sent under, so a chunk never follows that stop)."""
        if not self.stream.wait_for_service(timeout_sec=5.0):
            return StreamReply(False, f'the execution node ({self.stream.srv_name}) is not available', 'timeout')
        done = threading.Event()
        with self.cancel_lock:
            if unless_canceled is not None and unless_canceled.canceled:
                return StreamReply(False, 'the goal was canceled', 'canceled')
            future = self.stream.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(STREAM_CALL_TIMEOUT):
            return StreamReply(False, f'the execution node did not answer within {STREAM_CALL_TIMEOUT} s', 'timeout')
        r = future.result()
        return StreamReply(r.accepted, r.reason, r.check, r.stream_time, r.committed_until)

    def policy(self, name):
        """(policy, label) by name, built once: from checkpoints_dir/<name>, else fresh where allowed."""
        if name not in self.policies:
            directory = Path(self.checkpoints_dir) / name if self.checkpoints_dir else None
            if directory is not None and (directory / 'config.json').is_file():
                policy, label = load_policy(directory), f'checkpoint {directory}'
            else:
                policy = make_policy(name).eval()
                if any(True for _ in policy.parameters()):
                    if not self.allow_untrained:
                        where = f'{directory}/config.json' if directory else 'checkpoints_dir is not set'
                        raise FileNotFoundError(
                            f'policy {name!r} has weights but no checkpoint ({where}); '
                            'set allow_untrained to run it from random init'
                        )
                    label = 'UNTRAINED: random init, no checkpoint'
                else:
                    label = ' '.join((policy_class(name).__doc__ or 'no weights').strip().split('\n\n')[0].split())
            self.policies[name] = (policy, label)
        return self.policies[name]

    def execute(self, handle):
        """Run one goal to its end."""
        goal, started = handle.request, time.monotonic()
        name = goal.policy or self.default_policy
        with self.sync_lock:
            self.sync = ObservationSync(
                self.sync.cameras, self.sync.slop, self.sync.max_age, self.sync.use_depth
            )  # no frame from before the goal
        try:
            try:
                policy, label = self.policy(name)
            except (KeyError, FileNotFoundError, ValueError) as exc:
                handle.abort()
                reason = f'policy {name!r} cannot be run: {exc}'
                return RunPolicy.Result(success=False, reason=reason, elapsed=time.monotonic() - started)
            self.io = NodeIO(self, handle)
            outcome = run_policy(
                policy,
                goal.instruction,
                self.io,
                self.blend,
                goal.max_chunks or self.max_chunks,
                goal.timeout or self.timeout,
                self.observation_timeout,
                self.shaping,
                self.floor,
                self.trace,
            )
        finally:
            self.io, self.active = None, False
        floor = f'; grip floor: {outcome.raised} targets raised, {outcome.cut} chunks cut to brake above it'
        reason = f'policy {name!r} ({label}): {outcome.reason}{floor if outcome.raised or outcome.cut else ""}'
        self.get_logger().info(
            f'RunPolicy ended: {reason}; latency p50 {_percentile(outcome.latencies, 50)} s, '
            f'p90 {_percentile(outcome.latencies, 90)} s, starved {outcome.starved}, dropped {outcome.dropped}'
        )
        if outcome.success:
            handle.succeed()
        elif handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        return RunPolicy.Result(
            success=outcome.success,
            reason=reason,
            chunks_executed=outcome.chunks,
            actions_executed=outcome.actions,
            elapsed=outcome.elapsed,
        )


def _percentile(values, q):
    return f'{np.percentile(values, q):.3f}' if values else 'n/a'


def main(args=None):
    """Run the node."""
    node_runner.run(VlaPolicyNode, args, threads=4)


if __name__ == '__main__':
    main()
