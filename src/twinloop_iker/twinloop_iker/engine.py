"""The IKER engine behind ExecuteInstruction (shared/seeds/002, Algorithm 1): per iteration,
perceive, number keypoints on the perceived objects, have the code writer write
`get_interaction_data`, run it in the sandbox, and move the object to the targets it returns with a
solver in the twin, closed loop through the arm's gated ports; the history grows after each stage
until the code says done or a limit is reached.

What runs: the code writer of config/iker.yaml (deploy.writer: the template writer by default,
labelled 'template writer (not a VLM)', or a VLM agent) and the solver deploy.solver names per
skill over KeypointEnv (solvers.py: the skill's goal-conditioned PPO policy shipped with the
package, or the CEM planner; results name them). A push: the
executor port brings the closed gripper behind the object (gated ExecuteMotion segments); a
grasp-and-place stage: the executor grasps the object from above (the heuristic grasp of the
paper's Appendix A: across its narrower side over the tallest part of its middle, deploy.grasp_point)
and lifts it clear of everything on the table. Then every chunk of `deploy.chunk_actions` planned
end-effector deltas (and, holding an object, yaw turns) goes through IK and the streamer port (the
execution node's ~/stream, gated chunk by chunk), with the object perceived again before each
chunk (deploy.loop chunked; receding: a step spliced every control period into a running stream,
pacing.py); a held object is lowered only once above its target, and released there. Targets that tilt
the object (the paper's Book Reorient) are a reorientation: gripped flat the same way, turned by the
reorient twin's hand pitch about the fingers' closing axis, set down exactly on the target pose by the
grasp, and released by drawing the hand back along its approach axis. The query image is
drawn on the perception's camera image (Perception.camera_image: through ROS the orchestrator's
query_camera), or on a schematic view of the perceived boxes where there is none; it goes to the
writer and the run report.
"""

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import trimesh
from PIL import Image, ImageDraw

from twinloop_core.engine import ConfigError, DecisionEngine, EngineResult, register_engine
from twinloop_core.geometry import (
    HOME_GRIP,
    grasp_of,
    lean_away,
    quat_conjugate,
    quat_matrix,
    quat_multiply,
    wrap_angle,
    y_rotation,
    yaw_of,
    z_rotation,
)
from twinloop_core.gripper import CLOSED_WIDTH, HAND_LENGTH, KEEP, OPEN_WIDTH, closed_on_something
from twinloop_core.judging import judge, judge_subtask
from twinloop_core.outcomes import Canceled, ExecutionFailed, GoalEnded, Outcome
from twinloop_core.ports import JointSegment
from twinloop_core.regions import radius
from twinloop_execution.kinematics import Arm
from twinloop_iker import deploy, detour, pacing, query_image
from twinloop_iker.config import IkerConfig
from twinloop_iker.env import KeypointEnv
from twinloop_iker.pacing import Refused
from twinloop_iker.sandbox import SandboxError, run_interaction_code
from twinloop_iker.solvers import make_solvers
from twinloop_iker.writers import HistoryEntry, WriteRequest, WriterError, make_writer
from twinloop_twin.scene import HOME

UNSUPPORTED = ('open', 'close', 'pour')  # no keypoint form
SKILLS = ('push', 'place', 'reorient')  # the solvers' skills, in the order results name them
# A chunk's end stays this far inside the joint ranges: through ROS the gate refused chunks ending on a bound
# (panda_joint4 at -3.072, panda_joint7 at 2.897; moved off by it, the TCP moves by millimetres)
CHUNK_LIMIT_MARGIN = 0.01  # [rad]
# Arm joints reaching forward and down: IK's third start, where the home pose's solution folds the arm into
# itself near the base (of 108 hand-down targets 22-30 cm from it, 85 solved clear from here, 70 from home)
REACH_SEED = np.array([0.2, 0.9, -0.3, -1.2, 0.5, 2.0, -0.4])
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])  # the hand's lean when it does not lean (identity quaternion)
VIEW = {'position': (1.25, 0.0, 0.9), 'look_at': (0.5, 0.0, 0.0), 'fovy': 50.0, 'size': (320, 240)}


@dataclass
class IterationRecord:
    """One iteration of Algorithm 1 for the run report (the query image is saved as a PNG)."""

    iteration: int
    stage: int  # stages that had succeeded before it
    writer: str
    code: str
    view: str = ''  # what the keypoints were drawn on (a camera's image, or a schematic view)
    object_id: str = ''
    grasp: bool = False
    keypoint_indices: list = field(default_factory=list)
    targets: list = field(default_factory=list)  # [m] one (x, y, z) per keypoint index
    done: bool = False
    outcome: str = ''
    chunks: int = 0
    distance: float = -1.0  # [m] mean keypoint distance to the targets at the end (-1: not moved)
    seconds: float = 0.0
    images: list = field(default_factory=list)  # [(name, rgb)]


def schematic_view(objects, view=VIEW):
    """A query_image.CameraView of a virtual camera over the table, its image the perceived objects'
    bounding boxes drawn as outlines on grey: the query image where perception has no camera image."""
    width, height = view['size']
    position, target = np.asarray(view['position'], float), np.asarray(view['look_at'], float)
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    rotation = np.column_stack([right, np.cross(forward, right), forward])  # optical: x right, y down, z ahead
    f = height / 2 / math.tan(math.radians(view['fovy']) / 2)
    K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    image = Image.new('RGB', (width, height), (150, 150, 150))
    draw = ImageDraw.Draw(image)
    for p, q, size in objects.values():
        sx, sy, sz = (float(v) for v in size)
        for z, fill in ((0.0, (110, 110, 110)), (sz, (205, 205, 205))):  # the footprint, then the top
            corners = np.array([[-sx / 2, -sy / 2, z], [sx / 2, -sy / 2, z], [sx / 2, sy / 2, z], [-sx / 2, sy / 2, z]])
            optical = (corners @ quat_matrix(q).T + np.asarray(p, float) - position) @ rotation
            uv = optical[:, :2] / optical[:, 2:3] * f + (width / 2, height / 2)
            draw.polygon([tuple(point) for point in uv], fill=fill, outline=(40, 40, 40))
    return query_image.CameraView(np.asarray(image), K, position, rotation)


def perceived(state, oid):
    """The perceived (position, quat, size) of oid; the stage fails with the reason when perception
    lost it (an object the camera no longer sees, or never told apart from its support)."""
    if oid not in state.objects:
        raise GoalEnded(Outcome.FAILED, f'{oid} is no longer perceived (seen: {", ".join(sorted(state.objects))})')
    return state.objects[oid]


def pushed_aside(task, stage, oid, before, after):
    """(done, note): stage `stage` pushes oid aside (a push without a destination) and oid moved far
    enough on its support (twinloop_core.judging), short of the keypoint targets, which ask for its
    whole width: the way is clear."""
    s = task.subtasks[stage] if stage < len(task.subtasks) else None
    if s is None or (s.action, s.object_id, s.destination_id) != ('push', oid, '') or oid not in after:
        return False, ''
    return judge_subtask(s, before, after)


def static_objects(task):
    """Ids the task only refers to (destinations, references) and never moves: keypoints spread over them."""
    referred = {oid for s in task.subtasks for oid in (s.destination_id, s.reference2_id) if oid}
    return referred - {s.object_id for s in task.subtasks}


@register_engine('iker')
class IkerEngine(DecisionEngine):
    """IKER: keypoint code by a writer, checked in the sandbox, solved in the twin, streamed."""

    label = 'iker (keypoint code in a sandbox; a PPO policy or CEM in the twin; push, grasp-and-place, reorient)'
    config_class = IkerConfig
    needs = ('perception', 'executor', 'streamer')

    def __init__(self, config=None, config_dir=None):
        super().__init__(config, config_dir)
        d = self.config.deploy
        if d.loop not in pacing.DRIVES:
            raise ConfigError(f'deploy.loop must be one of {sorted(pacing.DRIVES)}, not {d.loop!r}')
        options = {'agent': d.writer_agent} if d.writer == 'vlm' else {}
        self.writer = make_writer(d.writer, config_dir, **options)
        low = self.config.env.workspace_low
        env_config = replace(self.config.env, workspace_low=(low[0], low[1], max(low[2], d.min_tcp_z)))
        self.envs = {skill: KeypointEnv(skill, env_config, None, self.config.reward) for skill in SKILLS}
        self.solvers = make_solvers(self.config, tuple(self.envs))
        self.arm = Arm.panda()
        solvers = ', '.join(f'{skill}: {solver.label}' for skill, solver in self.solvers.items())
        self.backend = f'{self.writer.label} + {solvers}'

    def check(self, task, limits):
        """Sub-tasks that have a keypoint form the deployed solver can reach."""
        for subtask in task.subtasks:
            if subtask.action in UNSUPPORTED:
                raise GoalEnded(Outcome.REJECTED, f'the iker strategy does {subtask.action!r} not (no keypoint form)')

    def run(self, task, ports, limits):
        """Algorithm 1: write code, check it, move, append the history; until done or a limit."""
        d, history, steps = self.config.deploy, [], 0
        multi_step, first, stop = len(task.subtasks) > 1, None, d.stop_distance
        for iteration in range(1, d.max_iterations + 1):
            started = time.monotonic()
            ports.cancel.check()
            if limits.deadline is not None and started > limits.deadline:
                return self._result(False, 'timeout reached', steps)
            state = ports.perception.state()
            objects = {oid: tuple(o) for oid, o in state.objects.items()}
            first = first or objects
            camera = getattr(ports.perception, 'camera_image', lambda: None)()  # perception without cameras: None
            shapes, query, local_points = self._query(task, objects, camera)
            stage = sum(1 for entry in history if entry.succeeded)
            request = WriteRequest(task.instruction, query, objects, task, tuple(history), multi_step)
            seen = f'camera {camera.name}' if camera else 'a schematic view of the perceived boxes (no camera image)'
            record = IterationRecord(iteration, stage, self.writer.label, '', seen, images=[('keypoints', query.image)])
            ports.progress.feedback('write code', steps, stage, f'iteration {iteration}', backend=self.backend)
            try:
                written = self.writer.write(request)
                record.code = written.code
                workspace = (d.target_low, d.target_high)
                found = run_interaction_code(
                    written.code, query.positions(), query.object_keypoints(), workspace, self.config.sandbox
                )
            except (WriterError, SandboxError) as error:
                record.outcome = f'no interaction: {error}; nothing moved'
                return self._end(ports, record, started, False, f'iteration {iteration}: {record.outcome}', steps)
            record.object_id, record.grasp, record.done = found.object_id, found.grasp, found.done
            record.keypoint_indices = list(found.keypoint_indices)
            record.targets = [list(t) for t in found.target_positions]
            ports.progress.show_keypoints(query.positions(), dict(zip(found.keypoint_indices, found.target_positions)))
            if found.done:
                record.outcome = f'the code says done: {found.plan}'
                return self._end(ports, record, started, True, f'done after {iteration - 1} stage(s)', steps)
            if limits.dry_run:
                record.outcome = 'dry run: targets checked, nothing moved'
                return self._end(ports, record, started, True, record.outcome, steps)
            if shapes.get(found.object_id) is None:
                record.outcome = (
                    f'{found.object_id} is a static object here (the task only refers to it); nothing moved'
                )
                return self._end(ports, record, started, False, record.outcome, steps)
            local = np.array([local_points[n] for n in found.keypoint_indices])
            move = self._push
            if found.grasp:  # targets that tilt the object stand it up: held and turned by the hand's pitch
                turn = deploy.fit_turn(local, found.target_positions, objects[found.object_id][1])[1]
                move = self._reorient if deploy.tilt(turn) > deploy.TILTED else self._place
            try:
                succeeded, record.outcome, record.chunks, record.distance = move(
                    ports,
                    limits,
                    found.object_id,
                    shapes[found.object_id],
                    local,
                    np.array(found.target_positions),
                    steps,
                    stop,
                )
            except ExecutionFailed as failed:  # refused by the gate or stopped: the next iteration sees the scene anew
                if failed.stale_state:
                    raise GoalEnded(Outcome.FAILED, f'iteration {iteration}: {failed}') from failed
                succeeded, record.outcome, record.chunks, record.distance = (
                    False,
                    f'a motion was refused or stopped: {failed}',
                    0,
                    -1.0,
                )
            if not succeeded and multi_step and record.chunks:
                aside, note = pushed_aside(task, stage, found.object_id, objects, ports.perception.state().objects)
                record.outcome += f'; the stage is done: {note}' if aside else ''
                succeeded = aside
            if succeeded and not multi_step:  # keypoints within the paper's threshold: the task's done decides
                succeeded, verdict = judge(task.subtasks, first, ports.perception.state().objects)
                if not succeeded:  # the keypoints are close, the task's check is not met: closer next time
                    stop = max(stop / 2, d.min_stop_distance)
                    record.outcome += f'; the task is {verdict}: another iteration, to within {100 * stop:.1f} cm'
            steps += record.chunks
            history.append(HistoryEntry(query.image, written.code, record.outcome, succeeded))
            record.seconds = round(time.monotonic() - started, 2)
            ports.progress.record(record)
            ports.progress.log(f'iteration {iteration}: {record.outcome}')
            if succeeded and not multi_step:
                return self._result(True, f'done in {iteration} iteration(s): {record.outcome}', steps)
            if limits.max_steps and steps >= limits.max_steps:
                return self._result(False, f'max_steps {limits.max_steps} reached', steps)
        return self._result(False, f'{d.max_iterations} iterations without the code saying done', steps)

    def _result(self, success, detail, steps):
        return EngineResult(success, detail, steps, self.backend)

    def _end(self, ports, record, started, success, detail, steps):
        record.seconds = round(time.monotonic() - started, 2)
        ports.progress.record(record)
        ports.progress.log(f'iteration {record.iteration}: {record.outcome}')
        return self._result(success, detail, steps)

    def _query(self, task, objects, camera=None):
        """({id: (kind, scale), None for static ones}, the QueryImage, {keypoint number: object-frame point}): the
        keypoints drawn on the camera's image (a CameraImage), or on a schematic view of the objects without one."""
        static = static_objects(task)
        reoriented = {s.object_id for s in task.subtasks if s.action == 'reorient'}  # fitted among the flat kinds
        shapes, perceived = {}, []
        for oid, (p, q, size) in objects.items():
            if oid in static:
                shapes[oid] = None
                mesh = trimesh.creation.box(extents=size)
                mesh.apply_translation((0.0, 0.0, size[2] / 2))
            else:
                kinds = self.config.env.reorient_kinds if oid in reoriented else self.config.env.kinds
                shapes[oid] = deploy.fit_kind(size, kinds)
                mesh = deploy.kind_mesh(*shapes[oid])
            perceived.append(query_image.PerceivedObject(oid, mesh, oid in static, tuple(p), tuple(q)))
        view = (
            schematic_view(objects)
            if camera is None
            else query_image.CameraView.from_camera_info(camera.rgb, camera.K, camera.position, camera.rotation)
        )
        query = query_image.render_query_image(view, perceived)
        return shapes, query, {k.label: np.asarray(k.local, float) for k in query.proposed}

    def _push(self, ports, limits, oid, shape, local, targets, steps, stop):
        """Push oid's keypoints `local` to `targets` (towards a via point first where the straight way is
        blocked): behind it, then the solver's chunks streamed until within `stop` [m] or a limit.
        (succeeded, outcome in words, chunks, final distance to `targets`)."""
        state = ports.perception.state()
        p, q, size = perceived(state, oid)
        target_position, target_yaw = deploy.fit_target_pose(local, targets, deploy.object_yaw(q))
        target_position[2] = p[2]  # a push keeps the object on what it stands on
        start_distance = deploy.keypoint_distance(local, (p, q), targets)
        final_targets, what = targets, f'pushed {oid}'
        via, way_clear = self._via_point(state, oid, (p, q, size), target_position, target_yaw), None
        if via is not None:  # a first leg to beside what blocks the straight way; the next iteration pushes on
            final_position = target_position.copy()
            shift = np.r_[via - target_position[:2], 0.0]
            target_position, targets = target_position + shift, targets + shift
            what = f'pushed {oid} towards a via point {np.round(via, 3).tolist()} (the straight way is blocked)'
            stop = max(stop, self.config.deploy.stop_distance)  # a via point needs no precision

            def way_clear(now):  # the leg has done its job once the object is past what blocked it
                return self._straight_way_clear(now, oid, perceived(now, oid), final_position, target_yaw)

        q_arm, hand_yaw, lean = self._approach(ports, state, p, size, target_position)
        chunks, distance, why = self._servo(
            ports,
            limits,
            'push',
            oid,
            shape,
            local,
            targets,
            (target_position, target_yaw),
            q_arm,
            steps,
            stop,
            hand_yaw=hand_yaw,
            lean=lean,
            enough=way_clear,
        )
        self._retreat(ports)
        if via is not None:
            distance = deploy.keypoint_distance(local, perceived(ports.perception.state(), oid)[:2], final_targets)
        return self._outcome(what, start_distance, distance, chunks, why)

    def _obstacles(self, state, oid, pose):
        """The other objects on oid's support that its push could run into: [(x y, yaw, size)]."""
        p, _, size = pose
        return [
            (o[:2], deploy.object_yaw(oq), osize)
            for other, (o, oq, osize) in state.objects.items()
            if other != oid and o[2] < p[2] + size[2] and o[2] + osize[2] > p[2] + self.config.deploy.detour_clearance
        ]

    def _via_point(self, state, oid, pose, target_position, target_yaw):
        """Where to push oid, perceived at pose (position, quat, size), first when its straight way to
        target_position would drive it into another object on its support (twinloop_iker.detour); None:
        straight on."""
        d, (p, q, size) = self.config.deploy, pose
        yaws = (deploy.object_yaw(q), target_yaw)
        return detour.via_point(
            p,
            target_position,
            yaws,
            size,
            self._obstacles(state, oid, pose),
            d.detour_clearance,
            d.target_low,
            d.target_high,
        )

    def _straight_way_clear(self, state, oid, pose, target_position, target_yaw):
        """Whether oid, perceived at pose, has a clear straight way to target_position (twinloop_iker.detour)."""
        p, q, size = pose
        yaws = (deploy.object_yaw(q), target_yaw)
        obstacles = self._obstacles(state, oid, pose)
        return detour.way_is_clear(p, target_position, yaws, size, obstacles, self.config.deploy.detour_clearance)

    def _place(self, ports, limits, oid, shape, local, targets, steps, stop):
        """Grasp oid, lift it clear of the table's objects, carry its keypoints `local` to `targets`
        with CEM chunks (lowered only above them), release. Same return as _push."""
        state = ports.perception.state()
        p, q, size = perceived(state, oid)
        target_position, target_yaw = deploy.fit_target_pose(local, targets, deploy.object_yaw(q))
        start_distance = deploy.keypoint_distance(local, (p, q), targets)
        point, quat, hand_yaw = self._grasp(state, oid, shape)
        carry = self._carry_height(state, oid, targets) + point[2] - p[2]
        q_arm, hand_yaw = self._pick(ports, state, point, quat, hand_yaw, size, carry)
        missed = self._missed(ports, ports.perception.state(), oid)
        if missed:
            return missed
        chunks, distance, why = self._servo(
            ports,
            limits,
            'place',
            oid,
            shape,
            local,
            targets,
            (target_position, target_yaw),
            q_arm,
            steps,
            stop,
            hand_yaw=hand_yaw,
            carry=carry,
        )
        self._retreat(ports, release=True)
        state = ports.perception.state()
        distance = deploy.keypoint_distance(local, perceived(state, oid)[:2], targets)
        return self._outcome(f'placed {oid}', start_distance, distance, chunks, f'{why}; released')

    def _reorient(self, ports, limits, oid, shape, local, targets, steps, stop):
        """Grasp oid flat from above, lift it clear (by half its longest side more, to turn it there), turn and
        carry it with the solver's chunks (the hand pitching about the fingers' closing axis; its pose in the
        twin follows the arm's, as the grasp left it in the hand), lower it onto its targets, release. Same
        return as _push."""
        state = ports.perception.state()
        p, q, size = perceived(state, oid)
        start_distance = deploy.keypoint_distance(local, (p, q), targets)
        target = deploy.fit_turn(local, targets, q)
        point, quat, hand_yaw = self._grasp(state, oid, shape)
        bottoms = np.c_[targets[:, :2], np.full(len(targets), targets[:, 2].min())]  # where it will stand
        carry = self._carry_height(state, oid, bottoms) + point[2] - p[2] + max(size[:2]) / 2
        q_arm, hand_yaw = self._pick(ports, state, point, quat, hand_yaw, size, carry)
        state = ports.perception.state()
        missed = self._missed(ports, state, oid)
        if missed:
            return missed
        p, q, _ = perceived(state, oid)
        grasp = ((*p, deploy.object_yaw(q)), self.arm.ee_position(q_arm), hand_yaw)
        chunks, distance, why = self._servo(
            ports,
            limits,
            'reorient',
            oid,
            shape,
            local,
            targets,
            target,
            q_arm,
            steps,
            stop,
            hand_yaw=hand_yaw,
            carry=carry,
            grasp=grasp,
        )
        if distance <= stop:  # the solver's turn, finished exactly as the grasp and the target pose say
            why += self._set_down(ports, target)
        self._withdraw(ports)
        distance = deploy.keypoint_distance(local, perceived(ports.perception.state(), oid)[:2], targets)
        return self._outcome(f'stood {oid} up', start_distance, distance, chunks, f'{why}; released')

    def _set_down(self, ports, target):
        """One chunk that puts the held object at target (its frame's position and rotation) by the grasp the
        reorient twin holds it with (the solver stops within stop_distance: a standing book tips over from
        much more than 10 degrees off): '' or why it was not streamed."""
        tcp_target, yaw, pitch = deploy.hand_at(self.envs['reorient'], target)
        drive = pacing.ChunkedDrive(self, ports, ports.perception.state().arm, (yaw, pitch), UPRIGHT)
        try:
            drive.execute([tcp_target], np.zeros(2), 0.0)
        except Refused as refused:
            return f'; not set down exactly: {refused}'
        finally:
            drive.finish()
        return '; set down'

    def _withdraw(self, ports):
        """Open the fingers, draw the hand back along its approach axis by approach_height (a turned hand
        slides out of what it stood up, not up along it), then the usual retreat."""
        q = ports.perception.state().arm
        tcp, quat = self.arm.ee_position(q), self.arm.ee_quat(q)
        back = tcp - quat_matrix(quat)[:, 2] * self.config.deploy.approach_height
        try:
            line = self._line(q, tcp, back, 'withdraw', quat)
        except GoalEnded:  # no way back along the approach axis: open where it is
            line = q[None, :]
        ports.executor.execute([JointSegment(line, gripper_before=OPEN_WIDTH, label='release, withdraw')])
        self._retreat(ports)

    def _missed(self, ports, state, oid):
        """After a pick: None while the fingers hold something, else (release and retreat) the stage's
        failure, as _push returns it."""
        if closed_on_something(state.gripper_width):
            return None
        self._retreat(ports, release=True)
        return False, f'the grasp of {oid} missed (the fingers hold nothing after the lift); nothing moved', 0, -1.0

    def _outcome(self, what, start_distance, distance, chunks, why):
        """(succeeded, outcome in words, chunks, distance) of a stage: within the paper's threshold or not."""
        threshold = self.config.reward.success_threshold
        outcome = (
            f'{what}: its keypoints went from {100 * start_distance:.1f} to {100 * distance:.1f} cm from '
            f'their targets in {chunks} chunks ({why}; success below {100 * threshold:.0f} cm)'
        )
        return distance <= threshold, outcome, chunks, round(distance, 4)

    def _servo(
        self,
        ports,
        limits,
        skill,
        oid,
        shape,
        local,
        targets,
        target_pose,
        q_arm,
        steps,
        stop,
        hand_yaw=0.0,
        carry=None,
        lean=UPRIGHT,
        grasp=None,
        enough=None,
    ):
        """The solver's chunks of `skill` streamed until oid's keypoints are within `stop` [m] or a limit:
        (chunks, final distance, why it stopped). Holding the object (carry: the TCP height while
        carrying), the TCP stays at carry until the keypoints are above their targets. Pushing an object
        taller than the fingertips' lowest push (one the hand can tip), the TCP stays at push height (the
        solver's moves in x, y and yaw only): the twin's force-limited hand rose while pushing and came down
        on a shoe, and the stiff arm flipped it over; a flat book is pushed as the solver plans (kept at push
        height, the low hand folded the wrist into the base's keep-out zone). The hand keeps its `lean` (a
        quaternion applied after the yaw). Reorienting (grasp: see deploy.env_holding), the hand pitches too,
        and the held object's pose is the twin's, following the arm. enough(perceived state): a stage that has
        done its job before its targets (a via leg past what blocked the way) stops there."""
        d, env = self.config.deploy, self.envs[skill]
        drive = pacing.DRIVES[d.loop](self, ports, q_arm, (hand_yaw, 0.0), lean)
        chunks, plan = 0, self.solvers[skill].stage(env)
        distance, why = math.inf, 'no step planned'
        holding, replans = carry is not None or grasp is not None, 0
        try:
            while True:
                ports.cancel.check()
                now = drive.perceive()
                *pose, size = perceived(now, oid)
                tcp, angles = drive.hand()
                if grasp is not None:  # the held object's pose is the twin's, following the arm
                    deploy.env_holding(env, *shape, grasp, tcp, *angles, target_pose)
                    pose = env.object_pose()
                distance = deploy.keypoint_distance(local, pose, targets)
                if distance <= stop:
                    why = f'within {100 * stop:.1f} cm'
                    break
                if enough is not None and chunks and enough(now):
                    why = 'past what blocked the straight way'
                    break
                if drive.spent(chunks) or (limits.max_steps and steps + chunks >= limits.max_steps):
                    why = f'{chunks} chunks streamed (limit)'
                    break
                if limits.deadline is not None and time.monotonic() > limits.deadline:
                    why = 'timeout reached'
                    break
                position, yaw = np.asarray(pose[0], float), deploy.object_yaw(pose[1])
                if grasp is None:  # the twin as the object was seen, its hand then driven to where the step starts
                    seen_tcp, seen_angles = drive.observed_hand()
                    deploy.env_at(env, *shape, position, yaw, *target_pose, seen_tcp, seen_angles[0])
                    drive.advance(env)
                shifts, turns = deploy.tcp_targets(env, plan())
                points = tcp + shifts
                if carry is None:
                    floor = position[2] + deploy.push_height(size[2], d)
                    if floor > position[2] + d.min_tcp_z:  # an object the hand can tip: pushed at push height
                        points[:, 2] = floor
                else:
                    floor = d.min_tcp_z
                    if deploy.horizontal_offset(local, pose, targets) > d.stop_distance:
                        points[:, 2] = np.maximum(points[:, 2], carry)  # carried high until above the targets
                points[:, 2] = np.maximum(points[:, 2], floor)
                try:
                    chunks += drive.execute(points, turns[-1], floor)
                except Refused as refused:
                    why = str(refused)
                    if holding or replans >= d.push_replans:
                        break
                    # a push into what the twin does not hold (another object, the base's zone): plan it again
                    replans += 1
                    drive.restart()  # the refusal ended the stream; a new one starts where the arm rests
        finally:
            drive.finish()
        replanned = f'; {replans} refused chunk(s) planned again' if replans else ''
        return chunks, distance, why + replanned + drive.rate()

    def _clear_height(self, state):
        """TCP height [m] clear of every object's top: the arm moves between stages at it at least (a
        joint-space move from above one object to above another may not come down across a third)."""
        tops = max((p[2] + size[2] for p, _, size in state.objects.values()), default=0.0)
        return tops + self.config.deploy.carry_clearance

    def _heights_above(self, state, low):
        """TCP heights [m] to come down from onto an object, in order of preference: the clear height
        (at least `low`), then `low` where the arm cannot reach that high there."""
        return (max(low, self._clear_height(state)), low)

    def _carry_height(self, state, oid, targets):
        """Height [m] of oid's base while carried: clear of its targets and of the tops of the other
        objects near its way (footprints within reach of the straight line from it to its targets: the
        object's radius or the hand holding it, half its 21 cm body, plus carry_clearance). Objects far
        from the way do not lift the carry out of the arm's reach."""
        clearance = self.config.deploy.carry_clearance
        p, _, size = state.objects[oid]
        targets = np.asarray(targets, float)
        start = np.asarray(p[:2], float)
        way = start + np.linspace(0.0, 1.0, 25)[:, None] * (targets[:, :2].mean(axis=0) - start)
        reach = max(radius(size), HAND_LENGTH / 2) + clearance
        tops = [float(targets[:, 2].max())]
        for other, (position, quat, other_size) in state.objects.items():
            if other == oid:
                continue
            local = (way - np.asarray(position[:2], float)) @ quat_matrix(quat)[:2, :2]  # in its frame (yaw)
            gap = np.linalg.norm(np.maximum(np.abs(local) - np.asarray(other_size[:2]) / 2, 0.0), axis=1).min()
            if gap < reach:
                tops.append(position[2] + other_size[2])
        return max(tops) + clearance

    @staticmethod
    def _grasp(state, oid, shape):
        """(grip point, gripper quat, hand yaw) of the heuristic grasp from above: across the object's
        narrower side over the tallest part of its middle (a shoe's collar), or a wide one by its rim."""
        obj = perceived(state, oid)
        grasp = grasp_of(obj, [o for other, o in state.objects.items() if other != oid])
        point = grasp.point
        if not grasp.side:
            point = np.asarray(obj[0], float) + quat_matrix(obj[1]) @ deploy.grasp_point(*shape)
        return point, grasp.quat, yaw_of(quat_multiply(grasp.quat, quat_conjugate(HOME_GRIP)))

    def _pick(self, ports, state, point, quat, hand_yaw, size, carry):
        """Open above the grip point (at the clear height where the arm reaches it), come down, close,
        lift the TCP to `carry`: (the arm joints then, the hand yaw). The hand grips turned half a turn
        (a parallel gripper holds the same) when only that way is within the arm's reach."""
        heights = self._heights_above(state, point[2] + size[2] + self.config.deploy.approach_height)

        def plan(option):
            turn, above_z = option
            grip, above = quat_multiply(z_rotation(turn), quat), np.r_[point[:2], above_z]
            q_above = self._ik(state.arm, above, 'above the grasp', grip)
            down = self._line(q_above, above, point, 'down to the grasp', grip)
            lift = self._line(down[-1], point, np.r_[point[:2], max(carry, point[2])], 'lift', grip)
            return [
                JointSegment(q_above[None, :], gripper_before=OPEN_WIDTH, label='above the grasp'),
                JointSegment(down, gripper_after=CLOSED_WIDTH, label='down to the grasp, close'),
                JointSegment(lift, label='lift'),
            ]

        options = [(t, z) for z in heights for t in (0.0, math.pi)]
        (turn, _), _ = self._first_feasible(options, lambda option: ports.executor.execute(plan(option)))
        return ports.perception.state().arm, wrap_angle(hand_yaw + turn)

    @staticmethod
    def _first_feasible(options, attempt):
        """(option, attempt(option)) of the first option whose attempt finds IK solutions (no GoalEnded;
        a cancel ends it at once) and is not refused by the gate (an ExecutionFailed refused, at any
        segment: the arm stands where the segments before left it, and the next option starts from
        there; unless about the stale state every motion starts from); else the first option's failure."""
        failure = None
        for option in dict.fromkeys(options):
            try:
                return option, attempt(option)
            except Canceled:
                raise
            except GoalEnded as failed:
                failure = failure or failed
            except ExecutionFailed as failed:
                if not failed.refused or failed.stale_state:
                    raise
                failure = failure or failed
        raise failure

    def _ik(self, q_seed, position, what, quat=HOME_GRIP):
        """Arm joints that put the TCP at position with quat: solved from q_seed, else from the home pose (the
        local solver can miss a pose near the base from a stretched arm), else from REACH_SEED; a solution with
        links of the arm in each other (the gate refuses it: panda_link1|panda_link5 near the base) is none."""
        for seed in (q_seed, HOME, REACH_SEED):
            result = self.arm.ik.solve(self.arm.q_full(seed), np.asarray(position, float), np.asarray(quat, float))
            if result.converged and not self._self_colliding(result.positions):
                return np.asarray(result.positions, float)
        raise GoalEnded(Outcome.FAILED, f'{what}: no IK solution for {np.round(position, 3).tolist()}')

    def _self_colliding(self, q):
        """Whether links of the arm touch each other at arm joints q."""
        return any(pair.count('panda_') == 2 for pair in self.arm.kinematics.collisions(np.asarray(q)[None]))

    def _line(self, q_start, start, end, what, quat=HOME_GRIP, spacing=0.02):
        """Joint waypoints (n, 7) that move the TCP along the straight line start -> end [m] (every
        `spacing` metres, each solved from the one before), the orientation held."""
        count = max(1, int(math.ceil(np.linalg.norm(np.subtract(end, start)) / spacing)))
        waypoints, q = [], q_start
        for s in np.linspace(0.0, 1.0, count + 1)[1:]:
            q = self._ik(q, (1 - s) * np.asarray(start, float) + s * np.asarray(end, float), what, quat)
            waypoints.append(q)
        return np.array(waypoints)

    def _approach(self, ports, state, position, size, target_position):
        """Close the gripper and bring its TCP down (from the clear height where the arm reaches it) behind
        the object (away from the target) at push height, the hand broadside to the push (its 21 cm body
        across it, not reaching into a tall object; unturned when the arm cannot reach that way), upright
        or, where the arm reaches the push start only so, leaning out (deploy.push_leans); where no such
        start is reachable or free, from a side turned about the object (deploy.push_sides: the solver
        then pushes on from there; a later iteration comes from behind where that is free by then):
        (arm joints then, hand yaw, lean quaternion)."""
        d = self.config.deploy
        towards = math.atan2(target_position[1] - position[1], target_position[0] - position[0])
        reach = 0.5 * math.hypot(size[0], size[1]) + d.standoff
        height = deploy.push_height(size[2], d)
        heights = self._heights_above(state, position[2] + size[2] + d.approach_height)

        def start(option):
            """The push start (x, y) from this option's side and the hand's yaw there: broadside to the
            push from there (the hand is the same half a turn on), or unturned."""
            side, turned, _ = option
            heading = towards + side
            behind = np.asarray(position[:2], float) - reach * np.array([math.cos(heading), math.sin(heading)])
            return behind, wrap_angle(2 * heading) / 2 if turned else 0.0

        def plan(option):
            """The approach segments of an option, with the first lean of push_leans the arm reaches it
            with (leaning helps reach only: a refused approach is not tried again leaning)."""
            behind, yaw = start(option)
            above = np.r_[behind, option[2]]
            for lean in d.push_leans:
                grip = quat_multiply(lean_away(behind, lean), quat_multiply(z_rotation(yaw), HOME_GRIP))
                try:
                    q_above = self._ik(state.arm, above, 'above the push start', grip)
                    down = self._line(
                        q_above, above, np.r_[behind, position[2] + height], 'down to the push start', grip
                    )
                except GoalEnded as unreachable:
                    failure = unreachable
                    continue
                leans[option] = lean
                return [
                    JointSegment(q_above[None, :], gripper_before=CLOSED_WIDTH, label='above the push start'),
                    JointSegment(down, label='down to the push start'),
                ]
            raise failure

        def attempt(option):
            ports.cancel.check()
            return ports.executor.execute(plan(option))

        leans, options, seen = {}, [], set()
        for option in ((side, turned, z) for side in d.push_sides for z in heights for turned in (True, False)):
            key = (option[0], start(option)[1], option[2])  # broadside may be unturned already: one try
            if key not in seen:
                seen.add(key)
                options.append(option)
        option, _ = self._first_feasible(options, attempt)
        behind, yaw = start(option)
        return ports.perception.state().arm, yaw, lean_away(behind, leans[option])

    def step_joints(self, q_arm, point, hand):
        """(hand angles, arm joints) that put the TCP at point [m] from q_arm, the hand (angles: yaw and pitch
        about the fingers' closing axis, turns, lean) turned by `turns`, or kept as it is where the wrist cannot
        turn that far there; within the joint range by a margin. Refused when the arm cannot reach it."""
        angles, turns, lean = hand

        def plan(option):
            yaw, pitch = option
            # the pitch turns the hand about the fingers' closing axis (HOME_GRIP closes along world y), as the twin's
            quat = quat_multiply(lean, quat_multiply(z_rotation(yaw), quat_multiply(y_rotation(pitch), HOME_GRIP)))
            low, high = self.arm.ik.arm_range.T
            q_end = self._ik(q_arm, point, 'a planned step', quat)
            return np.clip(q_end, low + CHUNK_LIMIT_MARGIN, high - CHUNK_LIMIT_MARGIN)

        try:
            option, q_end = self._first_feasible((tuple(angles + turns), tuple(angles)), plan)
        except GoalEnded as unreachable:
            raise Refused(unreachable.reason) from None
        return np.array(option), q_end

    def _retreat(self, ports, release=False):
        """Lift the TCP straight up, by approach_height, to the retreat height at least and clear of
        every object's top (the next motion may cross the table; as high as the arm reaches there, at
        least 2 cm), keeping the gripper's orientation; release: open the fingers first."""
        d = self.config.deploy
        state = ports.perception.state()
        q = state.arm
        tcp, quat = self.arm.ee_position(q), self.arm.ee_quat(q)
        high = max(tcp[2] + d.approach_height, d.retreat_height, self._clear_height(state))
        heights = np.linspace(high, tcp[2] + 0.02, 6)

        def lift(z):
            q_up = self._ik(q, np.r_[tcp[:2], z], 'retreat', quat)
            gripper = OPEN_WIDTH if release else KEEP
            label = 'release, retreat' if release else 'retreat'
            ports.executor.execute([JointSegment(q_up[None, :], gripper_before=gripper, label=label)])

        self._first_feasible(heights, lift)
