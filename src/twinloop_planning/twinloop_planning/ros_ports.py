"""The AntiGrounding loop's ports on ROS: fresh perceived state, the sim_twin services (sync,
rollout, render), the trajectory_scoring service and the execution node's ExecuteMotion action.
Every wait watches the instruction's cancel request."""
import copy
import json
import threading
import time

from twinloop_interfaces.action import ExecuteMotion
from twinloop_interfaces.msg import CandidateTrajectory
from twinloop_interfaces.srv import RenderViews, RolloutTrajectories, ScoreTrajectories, SyncTwin

import numpy as np
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from twinloop_planning import rotation
from twinloop_planning.anti_grounding import OPEN_WIDTH, ExecutionFailed
from twinloop_planning.rotation import RotationUnavailable
from twinloop_planning.judging import object_states
from twinloop_scoring.facts import facts_from_rollout_msg
from twinloop_twin import markers, overlays, ros_conversions, scene
from twinloop_twin.world import GRIPPER_MAX_WIDTH


class PortError(Exception):
    """A component did not answer or failed; outcome is one of ExecuteInstruction.Result.OUTCOME_*."""

    def __init__(self, outcome, reason):
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


def _duration(t):
    sec, nanosec = divmod(int(round(t * 1e9)), 1_000_000_000)   # integer nanoseconds: no rounding carry
    return Duration(sec=sec, nanosec=nanosec)


def candidate_msg(proposal, start_q):
    """CandidateTrajectory of a proposal (times from its start; opening first adds a point at the
    start configuration just after t=0, as controllers take t=0 to be where the arm is)."""
    msg = CandidateTrajectory(id=proposal.id, description=proposal.description)
    msg.trajectory = JointTrajectory(joint_names=list(scene.ARM_JOINTS))
    points, events = [], []
    if proposal.open_first:
        points.append(JointTrajectoryPoint(positions=[float(v) for v in start_q], time_from_start=_duration(0.01)))
        events.append(CandidateTrajectory.GRIPPER_OPEN)
    for q, t, event in zip(proposal.waypoints(), proposal.times, proposal.events):
        points.append(JointTrajectoryPoint(positions=[float(v) for v in q], time_from_start=_duration(t)))
        events.append(event)
    msg.trajectory.points, msg.gripper_events = points, events
    return msg


class RosPorts:
    def __init__(self, node, handle, outcomes, scorer_backend='', settle=0.0, max_per_image=len(overlays.DISTINCT)):
        self.node, self.handle, self.outcomes, self.settle = node, handle, outcomes, settle
        self.scorer_backend, self.max_per_image = scorer_backend, max_per_image
        self.started = time.monotonic()
        self.objects_msg = self.joints_msg = None
        self.rollouts = {}

    # --- waiting -----------------------------------------------------------------------------
    def _wait(self, future, what, timeout=30.0, on_cancel=None):
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + timeout
        while not done.wait(0.02):
            if self.handle.is_cancel_requested:
                if on_cancel is not None:
                    on_cancel()
                raise PortError(self.outcomes.OUTCOME_CANCELED, 'canceled: the arm holds its position')
            if time.monotonic() > deadline:
                raise PortError(self.outcomes.OUTCOME_ERROR, f'{what} did not answer within {timeout:.0f} s')
        return future.result()

    def _call(self, client, request, what, timeout=30.0):
        if not client.wait_for_service(timeout_sec=5.0):
            raise PortError(self.outcomes.OUTCOME_ERROR, f'{what} ({client.srv_name}) is not available')
        response = self._wait(client.call_async(request), what, timeout)
        if not response.success:
            raise PortError(self.outcomes.OUTCOME_ERROR, f'{what} failed: {response.message}')
        return response

    # --- ports -----------------------------------------------------------------------------------
    def state(self, fresh_within=15.0):
        """Perceived objects, arm joints and gripper width, the objects from frames captured after
        the first joint state received after this call (so after any motion that just ended). A
        global re-detection of a crowded scene can take several seconds on 2 cores."""
        since = time.monotonic()
        deadline = since + fresh_within
        while not self.node.joints_at > since:
            self._check_wait(deadline, fresh_within, 'joint states')
        after = self.node.joints.header.stamp
        after = after.sec + after.nanosec * 1e-9
        while not (self.node.objects is not None and self.node.objects_at > since
                   and self.node.objects.header.stamp.sec + self.node.objects.header.stamp.nanosec * 1e-9 >= after):
            self._check_wait(deadline, fresh_within, 'perceived objects from frames after the motion')
        self.objects_msg, self.joints_msg = self.node.objects, self.node.joints
        names = list(self.joints_msg.name)
        q = np.array([self.joints_msg.position[names.index(j)] for j in scene.ARM_JOINTS])
        fingers = [abs(self.joints_msg.position[names.index(j)]) for j in scene.FINGER_JOINTS if j in names]
        width = float(sum(fingers)) if len(fingers) == 2 else GRIPPER_MAX_WIDTH
        self.q = q
        unseen = {o.id for o in self.objects_msg.objects if o.confidence <= 0.0}
        return object_states(self.objects_msg), q, width, unseen

    def _check_wait(self, deadline, seconds, what):
        if self.handle.is_cancel_requested:
            raise PortError(self.outcomes.OUTCOME_CANCELED, 'canceled')
        if time.monotonic() > deadline:
            raise PortError(self.outcomes.OUTCOME_ERROR, f'no fresh {what} within {seconds:.0f} s')
        time.sleep(0.02)

    def sync(self, believed=None):
        objects = copy.deepcopy(self.objects_msg)
        for o in objects.objects:
            if o.id in (believed or {}):
                o.pose = ros_conversions.pose_msg(*believed[o.id])
        self._call(self.node.twin_sync, SyncTwin.Request(objects=objects, joint_state=self.joints_msg), 'sim_twin sync')

    def rollout(self, proposals):
        request = RolloutTrajectories.Request(candidates=[candidate_msg(p, self.q) for p in proposals], settle=self.settle)
        response = self._call(self.node.twin_rollout, request, 'sim_twin rollout', timeout=120.0)
        initial = {o.id: (o.pose.position.x, o.pose.position.y, o.pose.position.z) for o in self.objects_msg.objects}
        self.rollouts = {p.id: (msg, r) for p, msg, r in zip(proposals, request.candidates, response.results)}
        return [facts_from_rollout_msg(r, initial) for r in response.results]

    def _render(self, proposals, scores):
        candidates = []
        for p in proposals:
            msg, result = self.rollouts[p.id]
            msg.ee_path = result.ee_path
            candidates.append(msg)
        request = RenderViews.Request(candidates=candidates, scores=[float(s) for s in scores] if scores else [])
        return self._call(self.node.twin_render, request, 'sim_twin render').views

    def render_for_scoring(self, proposals):
        """Batches of at most max_per_image candidates (told apart by colour): [(proposals, views)]."""
        return [(proposals[i:i + self.max_per_image], self._render(proposals[i:i + self.max_per_image], None))
                for i in range(0, len(proposals), self.max_per_image)]

    def render_scored(self, proposals, scores):
        return [(v.camera_name, ros_conversions.image_array(v.image)) for v in self._render(proposals, scores)]

    def score(self, instruction, task, proposals, facts, batches):
        facts_by_id = {p.id: f for p, f in zip(proposals, facts)}
        out = {}
        for batch, views in batches:
            candidates = []
            for p in batch:
                msg = self.rollouts[p.id][0]
                msg.rollout_json = json.dumps(facts_by_id[p.id])
                candidates.append(msg)
            request = ScoreTrajectories.Request(instruction=instruction, task_json=json.dumps(task), candidates=candidates,
                                                views=views, backend=self.scorer_backend)
            response = self._call(self.node.scorer, request, 'trajectory_scoring', timeout=300.0)
            for s in response.scores:
                out[s.candidate_id] = {'total': float(s.total), 'failed': s.failed, 'backend': s.backend,
                                       'dimensions': {d.dimension: round(float(d.score), 2) for d in s.dimensions},
                                       'rationale': s.rationale or s.failure_reason}
        return [out[p.id] for p in proposals]

    def show(self, proposals, scores, chosen):
        """Candidates coloured by score and the chosen one, for RViz."""
        stamp = self.node.get_clock().now().to_msg()
        paths = [[(p.x, p.y, p.z) for p in self.rollouts[c.id][1].ee_path] for c in proposals]
        self.node.candidates_pub.publish(markers.paths('candidates', paths, scores, stamp))
        self.node.chosen_pub.publish(markers.path('chosen', 0, paths[chosen], (0.1, 0.9, 0.2, 1.0), stamp, width=0.012))

    def execute(self, proposal):
        for i, (waypoints, _, width) in enumerate(proposal.segments):
            path = JointTrajectory(joint_names=list(scene.ARM_JOINTS),
                                   points=[JointTrajectoryPoint(positions=[float(v) for v in q]) for q in waypoints])
            goal = ExecuteMotion.Goal(mode=ExecuteMotion.Goal.MODE_JOINT_PATH, joint_path=path,
                                      gripper_before=OPEN_WIDTH if i == 0 and proposal.open_first else -1.0,
                                      gripper_after=-1.0 if width is None else float(width))
            outcome = self.node.execute_motion(self.handle, goal, f'{proposal.id} segment {i + 1}', raise_on_failure=False)
            if not outcome.success:
                raise ExecutionFailed(f'segment {i + 1}: {outcome.reason}',
                                      before_motion=i == 0 and outcome.code == ExecuteMotion.Result.CODE_REJECTED)

    def rotation(self, instruction, object_id):
        """The held object's axes drawn in the first twin view, asked of the orchestrator's rotation agent."""
        if self.node.rotation_backend is None:
            raise RotationUnavailable('rotation module off: no rotation_agent configured')
        if not self.node.rotation_backend.is_vlm:
            raise RotationUnavailable(f'rotation module skipped: {self.node.rotation_backend.label} cannot read axes in an image')
        views = self._call(self.node.twin_render, RenderViews.Request(axes_objects=[object_id]), 'sim_twin render').views
        label = next((o.label for o in self.objects_msg.objects if o.id == object_id), object_id)
        return rotation.ask(self.node.rotation_backend, instruction, label, ros_conversions.image_array(views[0].image))

    def feedback(self, **fields):
        self.node.publish_feedback(self.handle, elapsed=time.monotonic() - self.started, **fields)
