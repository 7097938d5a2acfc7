"""twinloop_core ports on ROS: fresh perceived state from the node's subscriptions, the sim_twin
services (sync, rollout, render), the trajectory_scoring service and the execution node's
ExecuteMotion action (the safety gate). Ports get explicit clients and the goal's cancel token;
every wait is bounded and watches the token (a canceled motion is canceled on the execution
node, which holds the arm). Messages are converted with twinloop_ros.codec, the encoding the
in-process ports share."""

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
from action_msgs.msg import GoalStatus
from rcl_interfaces.msg import ParameterType
from rclpy.action.client import ClientGoalHandle
from unique_identifier_msgs.msg import UUID
from twinloop_interfaces.action import ExecuteMotion, RunPolicy
from twinloop_interfaces.msg import RenderedView
from twinloop_interfaces.srv import RenderViews, RolloutTrajectories, ScoreTrajectories, StreamChunk, SyncTwin

from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from twinloop_core.outcomes import Canceled, ExecutionFailed, GoalEnded, Outcome
from twinloop_core.geometry import quat_matrix
from twinloop_core.ports import CameraImage, PerceivedState, PolicyOutcome, StreamReply
from twinloop_core.robot import ARM_JOINTS
from twinloop_planning.ports.in_process import scoring_batches
from twinloop_ros import codec
from twinloop_scoring import vqa
from twinloop_ros import conversions as ros_conversions
from twinloop_ros import topics
from twinloop_twin import markers

POLL = 0.02  # [s] how often a wait looks at the cancel token
ALIVE_EVERY = 0.5  # [s] how often a wait asks whether the server is still there
GONE_AFTER = 3.0  # [s] a server missing this long (DDS lease: config/fastdds_localhost.xml) has disappeared
SERVICE_WAIT = 15.0  # [s] how long a call waits for its server to be there (a restarted node being discovered)
RESEND_AFTER = 10.0  # [s] an idempotent request unanswered this long is sent once more (see RosPorts._call)
ACCEPT_WAIT = 5.0  # [s] an ExecuteMotion goal not acknowledged this long is asked for its result by id


class NoAnswer(GoalEnded):
    """A server did not answer within the time allowed."""

    def __init__(self, what, timeout):
        super().__init__(Outcome.ERROR, f'{what} did not answer within {timeout:.0f} s')


CAMERA_PARTS = ('color', 'color_info', 'pose')  # what a camera image for the code writers needs


class LatestState:
    """The newest DetectedObjectArray and JointState with their arrival times, and the newest colour image,
    CameraInfo and optical pose of the camera code writers are shown (fed by subscriptions)."""

    def __init__(self, camera=''):
        self.objects = self.joints = None
        self.objects_at = self.joints_at = 0.0
        self.camera, self.camera_msgs = camera, {}  # name ('' none), {part of CAMERA_PARTS: message}

    def on_camera(self, part, msg):
        """Subscription callback of the code writers' camera."""
        self.camera_msgs[part] = msg

    def on_objects(self, msg):
        """Subscription callback."""
        self.objects, self.objects_at = msg, time.monotonic()

    def on_joints(self, msg):
        """Subscription callback."""
        self.joints, self.joints_at = msg, time.monotonic()


@dataclass
class RosClients:
    """What the ROS ports talk to (created once by the orchestrator node)."""

    latest: LatestState
    twin_sync: object  # service clients
    twin_rollout: object
    twin_render: object
    scorer: object
    motion: object  # ExecuteMotion action client
    stream: object = None  # StreamChunk service client (the execution node's ~/stream)
    policy: object = None  # RunPolicy action client (the policy server)
    scorer_parameters: object = None  # AsyncParameterClient of the scoring node (its reads_images)


def wait_for(future, what, cancel, timeout, on_cancel=None, alive=None, goal_deadline=None):
    """future's result. Ends early: Canceled when the token fires; GoalEnded(FAILED) at the goal's
    deadline; GoalEnded(ERROR) after timeout or when alive() (is the server still there?) has been
    false for GONE_AFTER seconds. on_cancel() runs first in each case (e.g. cancel a motion)."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    started = time.monotonic()
    next_look, missing_since = started + ALIVE_EVERY, None
    while not done.wait(POLL):
        now = time.monotonic()
        ended = None
        if cancel.cancelled():
            ended = Canceled()
        elif goal_deadline is not None and now > goal_deadline:
            ended = GoalEnded(Outcome.FAILED, f'timeout reached while waiting for {what}')
        elif now > started + timeout:
            ended = NoAnswer(what, timeout)
        elif alive is not None and now > next_look:
            next_look = now + ALIVE_EVERY
            missing_since = None if alive() else (missing_since or now)
            if missing_since is not None and now - missing_since > GONE_AFTER:
                ended = GoalEnded(Outcome.ERROR, f'{what}: the server disappeared while the request was pending')
        if ended is not None:
            if on_cancel is not None:
                on_cancel()
            raise ended
    return future.result()


class RosPorts:
    """Perception, twin, scorer, executor, streamer and policy runner over ROS (one object serves all)."""

    def __init__(
        self,
        clients,
        cancel,
        scorer_backend='',
        deadline=None,
        service_timeout=30.0,
        motion_timeout=120.0,
        accept_timeout=ACCEPT_WAIT,
    ):
        self.clients, self.cancel, self.scorer_backend, self.deadline = clients, cancel, scorer_backend, deadline
        self.service_timeout, self.motion_timeout, self.accept_timeout = service_timeout, motion_timeout, accept_timeout
        self.objects_msg = self.joints_msg = None
        self.rollouts = {}  # candidate id -> (CandidateTrajectory, RolloutResult) of the last rollout
        self.scorer_reads_images = None  # asked once per goal (_reads_images)

    def _call(self, client, request, what, timeout=None, resend=False):
        """The service's response. A request sent while a restarted server is still being matched by
        DDS can be lost without a trace; with resend (cheap, idempotent calls: sync), one unanswered for
        RESEND_AFTER seconds is sent once more, within the same total timeout."""
        return self._send(client, request, what, timeout, resend)()

    def _send(self, client, request, what, timeout=None, resend=False):
        """Send the request now; the returned function waits for the response (as _call)."""
        if not client.wait_for_service(timeout_sec=SERVICE_WAIT):
            raise GoalEnded(Outcome.ERROR, f'{what} ({client.srv_name}) is not available')
        timeout = timeout or self.service_timeout
        wait = dict(alive=client.service_is_ready, goal_deadline=self.deadline)
        first = client.call_async(request)

        def response():
            try:
                answer = wait_for(first, what, self.cancel, min(RESEND_AFTER, timeout) if resend else timeout, **wait)
            except NoAnswer:
                if not resend or timeout <= RESEND_AFTER:
                    raise
                client.remove_pending_request(first)
                try:
                    answer = wait_for(client.call_async(request), what, self.cancel, timeout - RESEND_AFTER, **wait)
                except NoAnswer:
                    raise NoAnswer(what, timeout) from None
            if not answer.success:
                raise GoalEnded(Outcome.ERROR, f'{what} failed: {answer.message}')
            return answer

        return response

    # --- perception ----------------------------------------------------------------------------
    def state(self, fresh_within=15.0):
        """Perceived objects, arm joints and gripper width, the objects from frames captured after
        the first joint state received after this call (so after any motion that just ended). A
        global re-detection of a crowded scene can take several seconds on 2 cores."""
        latest, since = self.clients.latest, time.monotonic()
        deadline = since + fresh_within
        while not latest.joints_at > since:
            self._check_wait(deadline, fresh_within, 'joint states (/joint_states: world_sim or the robot driver)')
        after = ros_conversions.seconds(latest.joints.header.stamp)
        while not (
            latest.objects is not None
            and latest.objects_at > since
            and ros_conversions.seconds(latest.objects.header.stamp) >= after
        ):
            self._check_wait(
                deadline, fresh_within, 'perceived objects from frames after the motion (pose_estimation, cameras)'
            )
        return self._perceived(latest.objects, latest.joints)

    def newest(self, fresh_within=15.0):
        """The newest perceived objects and joint states, without waiting for frames after a motion (a closed
        loop perceiving while the arm moves); age: the joints' stamp minus the objects' (the frames' latency)."""
        latest, deadline = self.clients.latest, time.monotonic() + fresh_within
        while latest.objects is None or latest.joints is None:
            self._check_wait(deadline, fresh_within, 'perceived objects and joint states')
        objects, joints = latest.objects, latest.joints
        perceived = self._perceived(objects, joints)
        perceived.age = max(
            0.0, ros_conversions.seconds(joints.header.stamp) - ros_conversions.seconds(objects.header.stamp)
        )
        return perceived

    def _perceived(self, objects, joints):
        """A PerceivedState of these messages (kept as the newest used)."""
        self.objects_msg, self.joints_msg = objects, joints
        try:
            q, width = ros_conversions.arm_state(self.joints_msg)
        except ValueError as exc:
            raise GoalEnded(Outcome.ERROR, f'bad /joint_states: {exc}') from None
        unseen = frozenset(o.id for o in self.objects_msg.objects if o.confidence <= 0.0)
        labels = {o.id: o.label for o in self.objects_msg.objects}
        return PerceivedState(ros_conversions.object_states(self.objects_msg), q, width, unseen, labels)

    def camera_image(self):
        """The newest colour image of the code writers' camera, its CameraInfo's K and its optical pose; None
        while a part is missing or unusable (not a colour image, a bad model or pose, sizes that differ)."""
        latest = self.clients.latest
        msgs = dict(latest.camera_msgs)
        if not latest.camera or any(part not in msgs for part in CAMERA_PARTS):
            return None
        color, info = msgs['color'], msgs['color_info']
        try:
            rgb = ros_conversions.rgb_array(color)
            ros_conversions.check_camera_info(info)
            position, quat = ros_conversions.checked_pose(msgs['pose'].pose, f'{latest.camera} pose')
        except ValueError:
            return None
        if (info.width, info.height) != (color.width, color.height):
            return None
        return CameraImage(
            latest.camera, rgb.copy(), np.array(info.k, float).reshape(3, 3), position, quat_matrix(quat)
        )

    def _check_wait(self, deadline, seconds, what):
        self.cancel.check()
        if time.monotonic() > deadline:
            raise GoalEnded(Outcome.ERROR, f'no fresh {what} within {seconds:.0f} s')
        time.sleep(POLL)

    # --- twin ----------------------------------------------------------------------------------
    def sync(self, believed=None):
        """The twin rebuilt from the state last returned, believed poses replacing perceived ones."""
        objects = copy.deepcopy(self.objects_msg)
        for o in objects.objects:
            if o.id in (believed or {}):
                o.pose = ros_conversions.pose_msg(*believed[o.id])
        request = SyncTwin.Request(objects=objects, joint_state=self.joints_msg)
        self._call(self.clients.twin_sync, request, 'sim_twin sync', resend=True)

    def rollout(self, paths, settle):
        """Facts of each path played in the twin (from RolloutResult.facts_json)."""
        request = RolloutTrajectories.Request(candidates=[codec.candidate_msg(p) for p in paths], settle=float(settle))
        response = self._call(self.clients.twin_rollout, request, 'sim_twin rollout', timeout=120.0)
        if [r.candidate_id for r in response.results] != [p.id for p in paths]:
            raise GoalEnded(Outcome.ERROR, 'sim_twin rollout answered for other candidates than asked')
        self.rollouts = {p.id: (msg, r) for p, msg, r in zip(paths, request.candidates, response.results)}
        return [json.loads(r.facts_json) for r in response.results]

    def grip_paths(self, ids):
        """Grip-site paths of the last rollouts."""
        return [[(p.x, p.y, p.z) for p in self.rollouts[i][1].ee_path] for i in ids]

    def _render_views(self, ids, scores):
        """Send the render request of the last rollouts now; the returned function waits for the views."""
        candidates = []
        for i in ids:
            msg, result = self.rollouts[i]
            msg.ee_path = result.ee_path
            candidates.append(msg)
        request = RenderViews.Request(candidates=candidates, scores=[float(s) for s in scores] if scores else [])
        response = self._send(self.clients.twin_render, request, 'sim_twin render')
        return lambda: response().views

    def render_for_scoring(self, ids):
        """Batches told apart by colour; the views stay messages for the scorer. A scorer that reads
        no image (twin_critic) gets one view of the twin without an image: nothing is rendered."""
        if not self._reads_images():
            return scoring_batches(ids, lambda batch: [RenderedView(camera_name=vqa.TWIN_VIEW, candidate_ids=batch)])
        return scoring_batches(ids, lambda batch: self._render_views(batch, None)())

    def _reads_images(self):
        """Whether this goal's scorer looks at the views: the scoring node's reads_images parameter for its
        default agents; agents named by the goal, or a node that does not say, get rendered views."""
        if self.scorer_reads_images is None:
            self.scorer_reads_images = True
            client = self.clients.scorer_parameters
            if not self.scorer_backend and client is not None and client.wait_for_services(timeout_sec=1.0):
                try:
                    answer = wait_for(client.get_parameters(['reads_images']), 'scoring parameters', self.cancel, 5.0)
                    values = answer.values
                    if values and values[0].type == ParameterType.PARAMETER_BOOL:
                        self.scorer_reads_images = values[0].bool_value
                except NoAnswer:
                    pass
        return self.scorer_reads_images

    def render_report(self, ids, scores):
        """Sent now: sim_twin draws while the arm moves; the function waits for [(view name, rgb)]."""
        views = self._render_views(ids, scores)
        return lambda: [(v.camera_name, ros_conversions.image_array(v.image)) for v in views()]

    def render_axes(self, object_id):
        """The first twin view with the object's axes drawn."""
        views = self._call(
            self.clients.twin_render, RenderViews.Request(axes_objects=[object_id]), 'sim_twin render'
        ).views
        return ros_conversions.image_array(views[0].image)

    # --- scorer --------------------------------------------------------------------------------
    def score(self, instruction, task, ids, facts, batches):
        """trajectory_scoring per batch (the goal's scorer_backend, or the node's default agents)."""
        by_id, out = dict(zip(ids, facts)), {}
        for batch, views in batches:
            candidates = []
            for i in batch:
                msg = self.rollouts[i][0]
                msg.rollout_json = codec.facts_json(by_id[i])
                candidates.append(msg)
            request = ScoreTrajectories.Request(
                instruction=instruction,
                task_json=json.dumps(task),
                candidates=candidates,
                views=views,
                backend=self.scorer_backend,
            )
            response = self._call(self.clients.scorer, request, 'trajectory_scoring', timeout=300.0)
            out.update({s.candidate_id: codec.score_from_msg(s) for s in response.scores})
        missing = [i for i in ids if i not in out]
        if missing:
            raise GoalEnded(Outcome.ERROR, f'trajectory_scoring returned no score for {missing}')
        return [out[i] for i in ids]

    # --- executor ------------------------------------------------------------------------------
    def execute(self, segments):
        """Each segment as an ExecuteMotion joint-path goal (gated by the execution node)."""
        for i, segment in enumerate(segments):
            path = JointTrajectory(
                joint_names=list(ARM_JOINTS),
                points=[JointTrajectoryPoint(positions=[float(v) for v in q]) for q in segment.waypoints],
            )
            goal = ExecuteMotion.Goal(
                mode=ExecuteMotion.Goal.MODE_JOINT_PATH,
                joint_path=path,
                gripper_before=float(segment.gripper_before),
                gripper_after=float(segment.gripper_after),
            )
            outcome = self.execute_motion(goal, segment.label)
            if not outcome.success:
                refused = outcome.code == ExecuteMotion.Result.CODE_REJECTED
                raise ExecutionFailed(
                    f'segment {i + 1}: {outcome.reason}', before_motion=i == 0 and refused, refused=refused
                )

    def execute_motion(self, goal, label):
        """One ExecuteMotion goal, waited for within motion_timeout; a cancel cancels the motion (the arm holds)."""
        self.cancel.check()
        motion_client = self.clients.motion
        if not motion_client.wait_for_server(timeout_sec=10.0):
            raise GoalEnded(Outcome.ERROR, 'the execution node (execute_motion) is not available')
        goal_id = UUID(uuid=list(uuid.uuid4().bytes))
        sent = motion_client.send_goal_async(goal, goal_uuid=goal_id)
        what = f'the execution node (motion "{label}")'

        def cancel_once_sent():  # a cancel while the goal is in flight still cancels it once accepted
            sent.add_done_callback(
                lambda f: f.result().cancel_goal_async() if f.result() and f.result().accepted else None
            )

        wait = dict(alive=motion_client.server_is_ready, goal_deadline=self.deadline)
        try:
            handle = wait_for(sent, what, self.cancel, self.accept_timeout, on_cancel=cancel_once_sent, **wait)
        except NoAnswer:
            # The goal's acceptance can be lost on the way back while the server runs the goal (a fresh
            # clone's CI saw it once, world_sim just killed): ask for the result by the goal's id. A
            # server that never got the goal answers STATUS_UNKNOWN.
            accepted = ExecuteMotion.Impl.SendGoalService.Response(accepted=True)
            handle = ClientGoalHandle(motion_client, goal_id, accepted)
        if not handle.accepted:
            raise GoalEnded(Outcome.ERROR, f'"{label}": the execution node is busy')
        answer = wait_for(
            handle.get_result_async(),
            what,
            self.cancel,
            self.motion_timeout,
            on_cancel=handle.cancel_goal_async,
            **wait,
        )
        if answer.status == GoalStatus.STATUS_UNKNOWN:
            raise NoAnswer(f'{what} (the goal was not received)', self.accept_timeout)
        return answer.result

    # --- streaming -------------------------------------------------------------------------------
    def send_chunk(self, stream_id, times, positions, splice_time=-1.0, velocities=None):
        """One chunk to the execution node's ~/stream (gated there); its StreamReply."""
        speeds = [[]] * len(times) if velocities is None else [[float(v) for v in qd] for qd in velocities]
        points = [
            JointTrajectoryPoint(
                positions=[float(v) for v in q], velocities=qd, time_from_start=ros_conversions.duration(float(t))
            )
            for t, q, qd in zip(times, np.asarray(positions), speeds)
        ]
        chunk = JointTrajectory(joint_names=list(ARM_JOINTS), points=points)
        request = StreamChunk.Request(stream_id=stream_id, chunk=chunk, splice_time=float(splice_time))
        return self._stream_call(request)

    def stop_stream(self, stream_id):
        """Brake to rest now and end the stream."""
        return self._stream_call(StreamChunk.Request(stream_id=stream_id, stop=True))

    def clock(self):
        """Wall time [s]: the execution node's stream runs on the robot's clock, in step with it."""
        return time.monotonic()

    def wait(self, seconds):
        """Sleep `seconds` of wall time, looking at the cancel token."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.cancel.check()
            time.sleep(min(POLL, left))

    def _stream_call(self, request):
        client = self.clients.stream
        if client is None or not client.wait_for_service(timeout_sec=SERVICE_WAIT):
            raise GoalEnded(Outcome.ERROR, f'the execution node ({topics.EXECUTION_STREAM}) is not available')
        wait = dict(alive=client.service_is_ready, goal_deadline=self.deadline)
        on_cancel = (
            None
            if request.stop
            else lambda: client.call_async(StreamChunk.Request(stream_id=request.stream_id, stop=True))
        )
        r = wait_for(client.call_async(request), 'the execution node (stream)', self.cancel, 10.0, on_cancel, **wait)
        return StreamReply(
            r.accepted,
            r.reason,
            r.check,
            r.stream_time,
            r.committed_until,
            np.array(r.commanded_positions),
            np.array(r.commanded_velocities),
        )

    # --- policy server ---------------------------------------------------------------------------
    def run_policy(self, policy, instruction, max_chunks=0, timeout=0.0):
        """A RunPolicy goal on the policy server, waited for (a cancel cancels it there)."""
        self.cancel.check()
        client = self.clients.policy
        if client is None or not client.wait_for_server(timeout_sec=10.0):
            raise GoalEnded(Outcome.ERROR, f'the policy server ({topics.RUN_POLICY}) is not available')
        goal = RunPolicy.Goal(
            policy=policy, instruction=instruction, max_chunks=int(max_chunks), timeout=float(timeout)
        )
        waits = dict(alive=client.server_is_ready, goal_deadline=self.deadline)
        handle = wait_for(client.send_goal_async(goal), 'the policy server', self.cancel, 10.0, **waits)
        if not handle.accepted:
            raise GoalEnded(Outcome.ERROR, 'the policy server refused the goal (busy)')
        limit = (timeout or self.motion_timeout * 10) + 30.0
        result = wait_for(
            handle.get_result_async(),
            'the policy server',
            self.cancel,
            limit,
            on_cancel=handle.cancel_goal_async,
            **waits,
        ).result
        return PolicyOutcome(
            result.success, result.reason, result.chunks_executed, result.actions_executed, result.elapsed
        )


class RosProgress:
    """Feedback on the goal, candidates in RViz, log lines and step records kept for the report."""

    def __init__(self, publish_feedback, feedback_class, publishers, clock, logger):
        """publishers: {'candidates', 'chosen', 'keypoints'} -> the RViz marker publishers."""
        self.publish_feedback, self.feedback_class = publish_feedback, feedback_class
        self.publishers, self.clock, self.logger = publishers, clock, logger
        self.started = time.monotonic()
        self.lines, self.records = [], []
        self.fields = set(feedback_class.get_fields_and_field_types())

    def feedback(self, stage, step, subtask=0, detail='', **extra):
        """An ExecuteInstruction feedback (extra keys that are not feedback fields are dropped)."""
        values = {k: v for k, v in extra.items() if k in self.fields}
        self.publish_feedback(
            self.feedback_class(
                stage=stage,
                step=int(step),
                subtask=int(subtask),
                detail=detail,
                elapsed=time.monotonic() - self.started,
                **values,
            )
        )

    def show(self, paths, scores, chosen):
        """Candidates coloured by score and the chosen one, for RViz."""
        stamp = self.clock().now().to_msg()
        paths = [[tuple(p) for p in path] for path in paths]
        self.publishers['candidates'].publish(markers.paths('candidates', paths, scores, stamp))
        chosen_path = markers.path('chosen', 0, paths[chosen], (0.1, 0.9, 0.2, 1.0), stamp, width=0.012)
        self.publishers['chosen'].publish(chosen_path)

    def show_keypoints(self, points, targets):
        """IKER's numbered keypoints and their targets, for RViz."""
        stamp = self.clock().now().to_msg()
        self.publishers['keypoints'].publish(markers.keypoints('keypoints', points, targets, stamp))

    def log(self, text):
        """Kept for the result's summary and logged."""
        self.lines.append(text)
        self.logger.info(text)

    def record(self, item):
        """Kept for the report."""
        self.records.append(item)
