"""The scripted sim-suite expert through ROS: demonstrations recorded with the cameras the policy sees.

`RosExpert` has WorldSimExpert's recording interface (features, run, close), so
`python -m twinloop_bringup.ros_expert ...` (twinloop_vla.record's arguments) writes the same LeRobot
dataset through a graph instead of the simulation core: it starts config/graphs.yaml's `sim_arm` graph (world_sim and
the execution node with its safety gate) on a domain of its own, resets world_sim to each layout seed
(~/reset), plans the expert's waypoints from world_sim's ground truth (a privileged expert, as in
process: twinloop_data.world_sim_expert.run_expert) and streams the joint targets through the
execution node's ~/stream in chunks of at most CHUNK_STEPS control steps, as the vla_policy node
streams a policy's chunks, each point with the gripper opening of the step that starts there (the
execution node commands it when the stream reaches the point). The frames are the
camera topics' (colour and aligned depth, synchronised with the joint states by stamp as the
vla_policy node does, twinloop_vla.sync), resized to the dataset size; the camera parameters come
from CameraInfo and the optical frame's pose topic.

DART noise (--noise) perturbs the executed targets only, fading in and out over each segment's first and last
NOISE_FADE_STEPS (a segment starts and ends at rest); through the gate they are guarded as the vla_policy
node guards a policy's chunks (config/vla_policy.yaml: raised to the grip floor, shaped to its share of the limits),
since a noisy target sequence at 10 Hz accelerates beyond what the gate passes.

Rows lie at the streamed points' times, one control period apart: row k holds the newest observation
then (a frame the camera had not yet sent repeats the one before, as the policy would see it) and the
action is the expert's own target one control period after that observation (its clean targets, linear
between points; without noise the streamed ones) with the gripper opening of that step. The wait at rest before the
first chunk (the execution node's start_lead, ~1 s) has no rows: nothing is commanded then, and the
in-process expert has no such wait; so has any later wait at rest, should one occur.
The gaze masks are the silhouettes of the gaze object's bounding box (box_gaze_mask: its ground-truth pose
newest at the frame, the frame's camera parameters, less what the depth sees nearer): world_sim publishes no
segmentation, which the in-process recorder uses (they overlap it by ~0.8 of their union on the cubes, ~0.5 on the
bowl, whose box is larger than it; tests/test_record). The gaze of a row is the one of the segment it belongs to.
"""

import os
import time
import uuid
from pathlib import Path

import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image, JointState
from geometry_msgs.msg import PoseStamped
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from twinloop_interfaces.msg import DetectedObjectArray
from twinloop_interfaces.srv import ResetWorld, StreamChunk

from twinloop_bringup import graphs, ros_env
from twinloop_vla.blending import BlendConfig, RateLimit
from twinloop_vla.floor import GripFloor
from twinloop_vla.record import argument_parser, print_summary, record
from twinloop_core.geometry import ObjectState
from twinloop_core.gripper import OPEN_WIDTH
from twinloop_core.judging import judge
from twinloop_core.robot import ARM_JOINTS
from twinloop_data.world_sim_expert import (
    CAMERAS,
    FPS,
    IMAGE_SIZE,
    TASKS,
    VELOCITY_SCALE,
    Episode,
    camera_vector,
    ExpertFailed,
    ExpertPlanner,
    NoisyTargets,
    box_gaze_mask,
    dataset_views,
    features,
    lifted,
    policy_state,
    run_expert,
)
from twinloop_ros import conversions as ros_conversions, topics
from twinloop_vla.sync import ObservationSync

CHUNK_STEPS = 8  # control steps per streamed chunk (the policies' chunk size)
LEAD = 0.7  # [s] the next chunk is sent this long before the last accepted one ends (the plan does not
# depend on what the cameras see, so early costs nothing; at 0.4 s a stall of the graph made ~1 in 3 places late)
SETTLE = 0.5  # [s] after a reset, before the first chunk (the execution node's objects catch up)
WAIT_LIMIT = 30.0  # [s] of wall time for anything the graph should answer
# DART noise fades in over the first and out over the last steps of each segment: a segment starts and ends at
# rest, and an offset there is a jump from or into rest that the gate refuses as an acceleration (2 dq / dt^2)
NOISE_FADE_STEPS = 3


class GraphTimeout(RuntimeError):
    """The graph did not answer in time."""


class ExpertRefused(ExpertFailed):
    """The execution node refused one of the expert's chunks (the episode is dropped)."""


class RosExpert:
    """The scripted expert driving world_sim through the execution node's stream, recording ROS frames."""

    def __init__(self, scene_path, root, fps=FPS, camera_names=CAMERAS, size=IMAGE_SIZE, parameters=None):
        """Start the sim_arm graph for scene_path (its world_sim publishing frames at fps unless parameters
        {node: {key: value}} say otherwise) and this process's node."""
        self.fps, self.camera_names, self.size = fps, list(camera_names), tuple(size)
        self.planner = ExpertPlanner(root, fps)
        guard = yaml.safe_load((Path(root) / 'config' / 'vla_policy.yaml').read_text())['vla_policy']['ros__parameters']
        blend = BlendConfig(limit_margin=guard['limit_margin'], limit_tolerance=guard['limit_tolerance'])
        self.shaping = RateLimit.of(self.planner.limits, blend)
        self.floor = GripFloor.panda(guard['grip_floor'], guard['grip_floor_tolerance'], self.planner.limits)
        specs = graphs.load('sim_arm', {'scene': str(scene_path)})
        overrides = {'world_sim': {'camera_rate': float(fps)}, **(parameters or {})}
        for spec in specs:
            spec.parameters.update(overrides.get(spec.name, {}))
        domain = ros_env.allocate_domain_id()  # a graph of its own: never a running robot's domain
        os.environ.update(ros_env.dds_environment())  # the DDS rule for this process (its domain: below)
        self.supervisor = graphs.Supervisor(specs, ros_env.dds_environment(domain))
        self.context = None
        self.supervisor.__enter__()
        try:
            self._start_node(domain)
        except BaseException:
            self.close()
            raise

    def _start_node(self, domain):
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, domain_id=domain)
        node = self.node = rclpy.create_node('ros_expert', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        self.sync = ObservationSync(self.camera_names, use_depth=True, history=20)
        self.intrinsics, self.poses = {}, {name: [] for name in self.camera_names}
        self.truth, self.arm, self.observations, self.trajectory_stamp = None, None, None, None
        node.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self._on_trajectory, topics.STATE_QOS)
        node.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, topics.STATE_QOS)
        node.create_subscription(DetectedObjectArray, topics.GROUND_TRUTH_OBJECTS, self._on_truth, topics.STATE_QOS)
        for name in self.camera_names:
            for kind in ('color', 'depth'):
                node.create_subscription(
                    Image,
                    topics.camera_topic(name, kind),
                    lambda m, n=name, k=kind: self._on_frame(n, k, m),
                    topics.SENSOR_QOS,
                )
            node.create_subscription(
                CameraInfo,
                topics.camera_topic(name, 'color_info'),
                lambda m, n=name: self.intrinsics.__setitem__(n, m),
                topics.SENSOR_QOS,
            )
            node.create_subscription(
                PoseStamped, topics.camera_topic(name, 'pose'), lambda m, n=name: self._on_pose(n, m), topics.SENSOR_QOS
            )
        self.reset_client = node.create_client(ResetWorld, topics.WORLD_RESET)
        self.stream_client = node.create_client(StreamChunk, topics.EXECUTION_STREAM)
        self._spin_until(self.reset_client.service_is_ready, 'world_sim ~/reset', 90.0)
        self._spin_until(self.stream_client.service_is_ready, "the execution node's ~/stream", 90.0)
        self._spin_until(lambda: self.arm is not None, 'joint states')
        self._spin_until(lambda: len(self.intrinsics) == len(self.camera_names), f'CameraInfo of {self.camera_names}')

    # --- subscriptions -----------------------------------------------------------------------------
    def _on_joints(self, msg):
        q, width = ros_conversions.arm_state(msg)
        names = list(msg.name)
        velocity = (
            np.array([msg.velocity[names.index(j)] for j in ARM_JOINTS]) if len(msg.velocity) == len(names) else 0 * q
        )
        stamp = ros_conversions.seconds(msg.header.stamp)
        self.arm = (stamp, q)
        self.sync.add_joints(stamp, policy_state(q, width, velocity))
        self._observe()

    def _on_frame(self, camera, kind, msg):
        array = ros_conversions.image_array(msg) if kind == 'color' else ros_conversions.depth_metres(msg)
        self.sync.add_frame(camera, kind, ros_conversions.seconds(msg.header.stamp), array.copy())
        self._observe()

    def _on_pose(self, camera, msg):
        poses = self.poses[camera]
        poses.append((ros_conversions.seconds(msg.header.stamp), msg.pose))
        del poses[:-50]

    def _on_trajectory(self, msg):
        self.trajectory_stamp = ros_conversions.seconds(msg.header.stamp)

    def _on_truth(self, msg):
        self.truth = (ros_conversions.seconds(msg.header.stamp), msg)

    def _observe(self):
        """Keep each new synchronised observation of the episode (resized to the dataset size at once)."""
        if self.observations is None:
            return
        observation, _ = self.sync.latest()
        if observation is None or (self.observations and observation.stamp <= self.observations[-1][0]):
            return
        views = {}
        for v, name in enumerate(self.camera_names):
            rgb, depth = dataset_views(observation.images[v], observation.depth[v], self.size)
            views[name] = (rgb, depth, self._camera(name, observation.stamp))
        self.observations.append((observation.stamp, observation.state, views, self.truth[1]))

    def _camera(self, name, stamp):
        """The 9 camera parameters (CAMERA_NAMES) of a camera at a frame's stamp."""
        info = self.intrinsics.get(name)
        poses = self.poses[name]
        if info is None or not poses:
            return np.full(9, np.nan, np.float32)
        pose = min(poses, key=lambda item: abs(item[0] - stamp))[1]
        position, quat = ros_conversions.pose_position(pose), ros_conversions.pose_quat(pose)
        return camera_vector(quat, position, info.k[0], info.k[4], info.width, info.height)

    # --- the recording interface (WorldSimExpert's) --------------------------------------------------
    def features(self):
        """The dataset features this expert records (gaze masks from ground truth, see the module docstring)."""
        return features(self.camera_names, *self.size)

    def run(self, task, seed, record, max_frames=None, velocity_scale=VELOCITY_SCALE, noise=0.0, retries=0):
        """Record one episode of task on world_sim's layout seed; record(frame) gets every row (at the end)."""
        if task not in TASKS:
            raise ValueError(f'unknown task {task!r}; the expert does {sorted(TASKS)}')
        self._reset(seed)
        before = self.object_states()
        self.observations, self.points, self.labels, self.grippers = [], [], [], [(-np.inf, OPEN_WIDTH)]
        self.gazes = []  # (robot time a segment starts, the object its rows gaze at)
        self.stream_id, self.stream_start, self.committed = f'expert-{uuid.uuid4().hex[:8]}', None, None
        self.perturb = NoisyTargets(noise, np.random.default_rng(seed))
        try:
            used = run_expert(self, self.planner, task, velocity_scale, retries)
            self._spin_until(lambda: self.arm[0] >= self._robot_time(self.committed[0]), 'the last chunk')
        finally:
            if self.committed is not None:
                self._call(StreamChunk.Request(stream_id=self.stream_id, stop=True))
            observations, self.observations = self.observations, None
        ok, detail = judge(TASKS[task], before, self.object_states())
        frames = self._rows(observations, max_frames)
        for frame in frames:
            record(frame)
        return Episode(seed, task, len(frames), ok, detail, used)

    def close(self):
        """Stop this node and the graph."""
        if self.context is not None:
            self.executor.shutdown()
            self.node.destroy_node()
            rclpy.shutdown(context=self.context)
            self.context = None
        self.supervisor.__exit__(None, None, None)

    # --- the world run_expert acts in ----------------------------------------------------------------
    def arm_positions(self):
        """Measured arm joints."""
        return self.arm[1]

    def object_states(self):
        """Ground truth {id: ObjectState} newer than the newest joint state."""
        now = self.arm[0]
        self._spin_until(lambda: self.truth is not None and self.truth[0] >= now, 'fresh ground truth')
        return {
            key: ObjectState(np.asarray(s.position), np.asarray(s.quat), s.size)
            for key, s in ros_conversions.object_states(self.truth[1]).items()
        }

    def held(self, object_id, above):
        """Whether the object rose with the lift (lifted), on fresh ground truth once the arm has arrived."""
        self._spin_until(lambda: self.arm[0] >= self._robot_time(self.committed[0]), 'the end of the lift')
        return lifted(self.object_states()[object_id].position[2], above)

    def execute(self, steps, gaze):
        """Stream the steps (noisy targets while moving, see NoisyTargets) in chunks of CHUNK_STEPS, each
        sent LEAD before the last accepted one ends; returns once the last is accepted."""
        executed, first = [], len(self.points)
        for k, (target, _, moving) in enumerate(steps):
            self.perturb.active = moving
            fade = min(1.0, k / NOISE_FADE_STEPS, (len(steps) - 1 - k) / NOISE_FADE_STEPS)
            executed.append(target + fade * (self.perturb(target) - target))
        clean = [target for target, _, _ in steps]
        widths = [gripper for _, gripper, _ in steps]
        for start in range(0, len(steps), CHUNK_STEPS):
            self._send(executed, clean, widths, start, min(start + CHUNK_STEPS, len(steps)))
        self.gazes.append((self.points[first][0], gaze))

    # --- streaming -----------------------------------------------------------------------------------
    def _send(self, targets, clean, widths, start, end):
        """targets[start:end] as one chunk spliced where the last accepted one ends (a segment's last target
        at rest: each ends at rest), guarded as the vla_policy node guards a chunk, each point with the opening
        of the step that starts there; clean[start:end] are its labels."""
        if self.committed is not None:
            self._spin_until(self._time_to_send, 'the time to send a chunk')
            q0, v0 = self.committed[1], self.committed[2]
        else:
            q0, v0 = self.arm[1], np.zeros(7)
        dt = 1.0 / self.fps
        sequence = np.vstack([q0, *targets[start : min(end + 1, len(targets))]])
        if self.floor is not None:
            sequence, _ = self.floor.apply(sequence)
        if self.shaping is not None:
            sequence = self.shaping.shape(dt * np.arange(len(sequence)), sequence, v0)
        velocities = np.gradient(sequence, dt, axis=0)
        velocities[0] = v0
        if end == len(targets):
            velocities[-1] = 0.0
        positions, velocities = sequence[: end - start + 1], velocities[: end - start + 1]
        times = dt * np.arange(len(positions))
        labels = [self.labels[-1][1] if self.labels else q0, *clean[start:end]]
        openings = [float(w) for w in widths[start:end]] + [-1.0]
        points = [
            JointTrajectoryPoint(
                positions=[float(x) for x in q],
                velocities=[float(x) for x in v],
                time_from_start=ros_conversions.duration(float(t)),
            )
            for t, q, v in zip(times, positions, velocities)
        ]
        request = StreamChunk.Request(
            stream_id=self.stream_id,
            chunk=JointTrajectory(joint_names=list(ARM_JOINTS), points=points),
            splice_time=-1.0,
            gripper_widths=openings,
        )
        if self.stream_start is None:
            self.trajectory_stamp = None
        called = time.monotonic()
        reply = self._call(request)
        if not reply.accepted:
            raise ExpertRefused(
                f'the execution node refused a chunk (steps {start}-{end} of a {len(targets)}-step segment, '
                f'{"the first of the stream" if self.committed is None else "spliced at the last end"}; '
                f'{reply.check}): {reply.reason}'
            )
        if self.stream_start is None:  # the stream's time 0: the stamp of the trajectories it commands
            self._spin_until(lambda: self.trajectory_stamp is not None, "the execution node's first trajectory")
            self.stream_start = self.trajectory_stamp
        begin = self._robot_time(reply.committed_until - times[-1])
        self.points += [(begin + t, q) for t, q in zip(times, positions)]
        self.labels += [(begin + t, q) for t, q in zip(times, labels)]
        self.grippers += [(begin + t, w) for t, w in zip(times, openings) if w >= 0]
        self.committed = (
            reply.committed_until,
            np.array(reply.commanded_positions),
            np.array(reply.commanded_velocities),
        )
        self.send_by = called + reply.committed_until - reply.stream_time - LEAD

    def _time_to_send(self):
        """LEAD before the committed path's end, by the measured joints' stamps or by the wall clock (the graph
        runs in real time), whichever says so first: this process's callbacks (frames) can fall behind, and
        the joint states it has read then lag the arm."""
        return self.arm[0] >= self._robot_time(self.committed[0]) - LEAD or time.monotonic() >= self.send_by

    def _robot_time(self, stream_time):
        return self.stream_start + stream_time

    def _call(self, request):
        future = self.stream_client.call_async(request)
        self._spin_until(future.done, "the execution node's answer")
        return future.result()

    def _reset(self, seed):
        future = self.reset_client.call_async(ResetWorld.Request(seed=seed))
        self._spin_until(future.done, 'the reset')
        if not future.result().success:
            raise ValueError(f'reset to layout {seed} failed: {future.result().message}')
        self.observations = None
        settle = time.monotonic() + SETTLE
        self._spin_until(lambda: time.monotonic() > settle, 'the settling')

    def _spin_until(self, predicate, what, limit=WAIT_LIMIT):
        deadline = time.monotonic() + limit
        while not predicate():
            if time.monotonic() > deadline:
                self.supervisor.check()
                raise GraphTimeout(f'no {what} within {limit} s')
            self.executor.spin_once(timeout_sec=0.005)

    # --- rows ----------------------------------------------------------------------------------------
    def _rows(self, observations, max_frames):
        """Dataset frames at the streamed points' times (see the module docstring)."""
        dt = 1.0 / self.fps
        point_times = np.array([t for t, _ in self.points])
        label_q = np.array([q for _, q in self.labels])
        keep = np.r_[True, np.diff(point_times) > dt / 2]  # a chunk's first point is the last one's end
        grid = point_times[keep][:-1]
        stamps = np.array([o[0] for o in observations])
        rows = []
        for time_ in grid[: max_frames if max_frames is not None else len(grid)]:
            index = int(np.searchsorted(stamps, time_ + 1e-3, side='right')) - 1
            if index < 0:
                continue
            stamp, state, views, truth = observations[index]
            gaze = next((g for t, g in reversed(self.gazes) if t < stamp + dt - 1e-3), self.gazes[0][1])
            box = ros_conversions.object_states(truth)[gaze]
            target = np.array([np.interp(stamp + dt, point_times, label_q[:, j]) for j in range(label_q.shape[1])])
            width = [w for t, w in self.grippers if t < stamp + dt - 1e-3][-1]  # the step's from stamp on
            frame = {
                'observation.state': np.asarray(state, np.float32),
                'action': np.append(target, width).astype(np.float32),
            }
            for name, (rgb, depth, camera) in views.items():
                frame[f'observation.images.{name}'] = rgb
                frame[f'observation.depth.{name}'] = depth
                frame[f'observation.gaze.{name}'] = box_gaze_mask(box, camera, self.size, depth)
                frame[f'observation.camera.{name}'] = camera
            rows.append(frame)
        return rows


def main(argv=None):
    """Record through ROS (twinloop_vla.record's command line; one process: the graph runs in real time)."""
    parser = argument_parser()
    parser.description = 'Scripted sim-suite demonstrations through ROS (world_sim, execution) in the LeRobot format'
    args = parser.parse_args(argv)
    if args.workers > 1:
        parser.error('through ROS one process records (the graph runs in real time): drop --workers')
    root = Path(os.environ.get('TWINLOOP_ROOT', '.'))
    scene_path = Path(args.scene or root / 'config' / 'scenes' / 'tabletop.yaml')
    size = (args.width, args.height)
    expert = RosExpert(scene_path, root, args.fps, args.cameras, size)
    report = record(
        args.out,
        args.task,
        args.episodes,
        args.seed,
        args.fps,
        args.cameras,
        size,
        args.max_frames,
        args.max_attempts,
        scene_path,
        root,
        velocity_scale=args.velocity_scale,
        noise=args.noise,
        retries=args.retries,
        expert=expert,
    )
    print_summary(report)


if __name__ == '__main__':
    main()
