"""The AntiGrounding MPC loop (no rclpy): sample -> IK -> twin rollouts -> renders -> scores ->
execute the best -> perceive again, stage by stage until the grounded sub-tasks hold.

Method after AntiGrounding (Real2Sim2Real MPC with structured-VQA scoring of rendered
candidates, shared/seeds/000). Each sub-task is split into stages (grasp, lift, carry, release);
a stage is done when the *perceived* state says so, and a stage transition resets the annealed
sampler (the paper's sub-task transition signal). Candidates are straight end-effector moves to
goals sampled around the end effector, with an optional gripper event at the end (close then
lift a little, or open then back off), turned into joint paths by IK and dropped when
unreachable. Everything that talks to the outside world goes through `ports` (ROS services and
actions in the orchestrator), so this module is the algorithm only.

One addition to the paper, documented in README.md (The AntiGrounding planner): besides the experience of
well-scored directions, the sampler is pointed at the stage's sub-goal from the grounded task
(the target object for a grasp, the destination for a carry), and its radius is capped at twice
the distance to that sub-goal. With the twin_critic scorer this prior is what makes the search
converge in a few steps; it can be turned off (goal_prior: 0).
"""
import time
from dataclasses import dataclass, field

import numpy as np

from scipy.spatial.transform import Rotation

from twinloop_planning import scripted
from twinloop_planning.rotation import RotationUnavailable
from twinloop_twin.world import closed_on_something
from twinloop_planning.judging import judge
from twinloop_execution.kinematics import ArmKinematics, PandaIk
from twinloop_planning.sampler import GRIPPER_CLOSE, GRIPPER_NONE, GRIPPER_OPEN, AnnealedSampler, Sample, SamplerConfig

LABEL = 'anti_grounding (AntiGrounding MPC: twin rollouts scored by the scoring node)'
OPEN_WIDTH, CLOSED_WIDTH = 0.08, 0.0
STAGE_GRIPPER = {   # P(none, open, close) of a candidate's gripper event in each stage
    'grasp': (0.6, 0.0, 0.4), 'lift': (1.0, 0.0, 0.0), 'carry': (1.0, 0.0, 0.0), 'release': (0.5, 0.5, 0.0)}
APPROACH_RADIUS = 0.015   # [m] the grip descends to its grasp point once within this of it horizontally
HOVER = 0.03              # [m] until then the grasp sub-goal is this far above the object's top


class ExecutionFailed(Exception):
    """The chosen candidate was refused by the safety gate or stopped on the arm; the loop perceives
    again and goes on (the step counts). before_motion: refused before anything moved (the next
    best candidate may be tried)."""

    def __init__(self, reason, before_motion=False):
        super().__init__(reason)
        self.before_motion = before_motion


@dataclass
class MpcConfig:
    num_candidates: int = 16
    max_steps_per_stage: int = 10
    stage_r0: dict = field(default_factory=lambda: {'release': 0.06})   # [m] R_0 per stage (default: sampler.r0)
    goal_prior: float = 1.0          # weight of the sub-goal direction among the experience (0: paper-only)
    speed: float = 0.4               # [m/s] end-effector speed of candidate motions in the twin
    min_duration: float = 0.3        # [s] per candidate segment
    grip_pause: float = 0.3          # [s] for the fingers after a gripper event
    settle: float = 0.2              # [s] simulated after a candidate's last point
    lift_after_grasp: float = 0.03   # [m] a close candidate rises this much after closing
    back_off_after_release: float = 0.05  # [m] an open candidate rises this much after opening
    ik_points: int = 3               # Cartesian waypoints per segment (IK each)
    blocked_distance: float = 0.015  # [m] a rollout ending farther from its goal was blocked: not chosen
    gate_retries: int = 3            # next-best candidates tried when the safety gate refuses one before it moves
    min_height: float = 0.015        # [m] candidate goals below this grip-site height are dropped (fingertips reach lower)
    seed: int = 0
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    @classmethod
    def from_dict(cls, data):
        data = dict(data or {})
        sampler = SamplerConfig(**data.pop('sampler', {}))
        return cls(sampler=sampler, **data)


@dataclass
class Stage:
    """One stage of a sub-task: what the critic is told, where the sampler is pointed, and when it is done."""
    name: str                        # grasp, lift, carry, release
    subtask_index: int
    object_id: str
    destination_id: str = ''

    def describe(self):
        where = f' to {self.destination_id}' if self.name in ('carry', 'release') and self.destination_id else ''
        return f'{self.name} {self.object_id}{where}'

    def sub_goal(self, objects, start, ee=None):
        """Grip-site position this stage is after, in the perceived world (object frames sit at the
        centre of their bottom face). Grasping comes down from above: while the grip (ee) is not yet
        over the grasp point the sub-goal is above the object's top (low sideways moves push it).
        Carrying and releasing aim the held object, not the grip, at the destination."""
        p, _, size = objects[self.object_id]
        grip_height = scripted.grip_height(size)
        if self.name == 'grasp':
            grasp_point = np.asarray(p, float) + (0, 0, grip_height)
            if ee is not None and np.linalg.norm(np.subtract(ee, grasp_point)[:2]) > APPROACH_RADIUS:
                return grasp_point + (0, 0, size[2] - grip_height + HOVER)
            return grasp_point
        if self.name == 'lift':
            return np.asarray(start[self.object_id][0], float) + (0, 0, grip_height + 0.15)
        d, _, d_size = objects[self.destination_id]
        clearance = 0.05 if self.name == 'carry' else 0.015   # object base above the destination's top
        # the grip keeps its offset from the held object (a sponge held off its centre): aim the object
        grip_from_base = np.subtract(ee, p) if ee is not None else (0, 0, grip_height)
        return np.asarray(d, float) + (0, 0, d_size[2] + clearance) + grip_from_base

    def comes_down_beside(self, objects, ee, positions):
        """Would a grasp candidate's path come down beside the object, where a finger lands on its
        rim or side and pushes or tips it? True if a grip position lower than the object's top +
        HOVER/2 (and not above where the grip starts: rising out is always allowed) is within a
        finger's reach of the object but not over its grasp point."""
        if self.name != 'grasp':
            return False
        p, _, size = objects[self.object_id]
        low = min(p[2] + size[2] + HOVER / 2, ee[2] + 0.005)
        reach = max(size[0], size[1]) / 2 + OPEN_WIDTH / 2 + 0.01
        return any(point[2] < low and APPROACH_RADIUS < np.hypot(point[0] - p[0], point[1] - p[1]) < reach
                   for point in positions)

    def task(self, objects, start):
        """The goal specification the scorer judges this stage's candidates against."""
        p, _, size = objects[self.object_id]
        if self.name in ('grasp', 'lift'):
            goal = np.asarray(start[self.object_id][0], float) + (0, 0, 0.15)
        else:
            d, _, d_size = objects[self.destination_id]
            goal = np.asarray(d, float) + (0, 0, d_size[2] + (0.05 if self.name == 'carry' else 0.0))
        return {'stage': self.name, 'object': self.object_id, 'destination': self.destination_id,
                'object_size': [float(v) for v in size], 'grip_height': scripted.grip_height(size), 'goal_position': [float(v) for v in goal],
                'holding': {'grasp': 'wanted', 'release': 'unwanted'}.get(self.name, 'required')}

    def done(self, objects, start, gripper_width, ee_position):
        """(done, note) on perceived state."""
        p, _, size = objects[self.object_id]
        held = _held(objects[self.object_id], gripper_width, ee_position)
        if self.name == 'grasp':   # a firm grasp: the grip over the object, near its grasp height
            offset = grip_offset(objects[self.object_id], ee_position)
            return held and bool(np.all(np.abs(offset) <= grasp_tolerance(size))), \
                f'gripper {gripper_width * 100:.1f} cm, grip {np.round(offset * 100, 1).tolist()} cm from the grasp point (object frame)'
        rise = p[2] - start[self.object_id][0][2]
        if self.name == 'lift':
            return held and rise > 0.1, f'raised {rise * 100:.1f} cm'   # above the clutter before carrying
        d, _, d_size = objects[self.destination_id]
        horizontal = float(np.hypot(p[0] - d[0], p[1] - d[1]))
        if self.name == 'carry':
            ok = held and horizontal < max(0.01, min(d_size[0], d_size[1]) / 4) and p[2] > d[2] + d_size[2]   # stacks need precision
            return ok, f'{horizontal * 100:.1f} cm from above {self.destination_id}'
        placed, note = judge([{'action': 'place', 'object_id': self.object_id, 'destination_id': self.destination_id}],
                             start, objects)
        return placed and gripper_width > OPEN_WIDTH - 0.01, note


def centre(obj):
    """Centre of an object's bounding box (its frame is at the bottom face; assumed upright)."""
    p, _, size = obj
    return np.asarray(p, float) + (0, 0, size[2] / 2)


def grip_offset(obj, ee_position):
    """The grip site relative to the object's grasp point, in the object's frame [m]."""
    p, quat, size = obj
    rotation = Rotation.from_quat([*quat[1:], quat[0]])
    return rotation.inv().apply(np.asarray(ee_position, float) - np.asarray(p, float)) - (0, 0, scripted.grip_height(size))


def grasp_tolerance(size):
    """Largest |grip offset| per object axis of a firm grasp: within the footprint less a finger pad
    (at least 2 cm: small objects), 3 cm in height. A sponge held 3 cm off its centre along its
    length is held well; the fingers centre it across."""
    return np.array([max(size[0] / 2 - 0.01, 0.02), max(size[1] / 2 - 0.01, 0.02), 0.03])


def _held(obj, gripper_width, ee_position):
    """Fingers stopped short on something, and the object is between them."""
    return closed_on_something(gripper_width) and np.linalg.norm(centre(obj) - ee_position) < max(obj[2]) / 2 + 0.02


def _candidate_rows(proposals, scores, facts):
    """The report's row per candidate: description, scores, what the twin saw."""
    return [{'id': p.id, 'description': p.description, 'total': round(s['total'], 3), 'failed': s['failed'],
             'dimensions': s['dimensions'], 'collisions': f['collisions'], 'holding': f['holding']}
            for p, s, f in zip(proposals, scores, facts)]


def stages_for(subtasks):
    out = []
    for index, s in enumerate(subtasks):
        if s.action not in ('pick', 'place'):
            raise ValueError(f'anti_grounding here plans pick and place; {s.action!r} is not supported yet')
        names = ('grasp', 'lift') if s.action == 'pick' else ('grasp', 'lift', 'carry', 'release')
        out += [Stage(n, index, s.object_id, s.destination_id) for n in names]
    return out


def next_stage(stages, index, objects, start, gripper_width, ee_position):
    """(index of the stage to work on, [what changed]) on the perceived state: done stages pass on;
    an object no longer held in a lift, carry or release (dropped on the way, or let go off
    target) sends its sub-task back to its grasp."""
    events = []
    while index < len(stages):
        stage = stages[index]
        done, note = stage.done(objects, start, gripper_width, ee_position)
        if done:
            events.append(f'stage {stage.describe()} done ({note})')
            index += 1
        elif stage.name != 'grasp' and not _held(objects[stage.object_id], gripper_width, ee_position):
            index = max(i for i in range(index) if stages[i].name == 'grasp' and stages[i].subtask_index == stage.subtask_index)
            events.append(f'{stage.object_id} is no longer held ({stage.describe()}: {note}): back to {stages[index].describe()}')
            break
        else:
            break
    return index, events


@dataclass
class Proposal:
    """A candidate: segments of arm joint waypoints, each ending with a gripper width (None: unchanged)."""
    id: str
    sample: Sample                   # the sampled goal and gripper event it was built from
    segments: list                   # [(waypoints [n x 7], end positions [n x 3], gripper width or None)]
    open_first: bool = False         # open the gripper before moving (at time 0, for grip_pause)
    times: list = field(default_factory=list)        # per flattened waypoint [s]
    events: list = field(default_factory=list)       # per flattened waypoint GRIPPER_*
    description: str = ''

    def waypoints(self):
        return np.vstack([w for w, _, _ in self.segments])

    def positions(self):
        """Grip-site positions along the candidate [n x 3]."""
        return np.vstack([p for _, p, _ in self.segments])

    @property
    def end(self):
        """Where the grip site should be at the end [m]."""
        return self.segments[-1][1][-1]


class Arm:
    """IK and forward kinematics of the arm on a MuJoCo model of the scene's robot."""

    def __init__(self, model):
        self.ik, self.kinematics = PandaIk(model), ArmKinematics(model)
        self.qpos0 = model.qpos0.copy()

    def q_full(self, q_arm):
        q = self.qpos0.copy()
        q[self.ik.arm_qpos] = q_arm
        return q

    def ee_position(self, q_arm):
        return self.kinematics.grip_positions([q_arm])[0]


class CandidateBuilder:
    """Samples -> reachable joint-space candidates (IK along straight grip-site lines)."""

    def __init__(self, ik, config: MpcConfig):
        self.ik, self.config = ik, config

    def _line(self, q_full, start, goal, quat):
        points = [start + (goal - start) * (i + 1) / self.config.ik_points for i in range(self.config.ik_points)]
        q = np.array(q_full, float)
        out = []
        for point in points:
            result = self.ik.solve(q, point, quat)
            if not result.converged or (out and np.abs(result.positions - out[-1]).max() > 1.0):
                return None
            out.append(result.positions)
            q[self.ik.arm_qpos] = result.positions
        return np.array(out), np.array(points)

    def build(self, candidate_id, sample, q_full, ee_position, quat, open_first=False):
        c = self.config
        if sample.goal[2] < c.min_height:
            return None
        first = self._line(q_full, ee_position, sample.goal, quat)
        if first is None:
            return None
        segments = [(first[0], first[1], None)]
        after = {GRIPPER_CLOSE: c.lift_after_grasp, GRIPPER_OPEN: c.back_off_after_release}.get(sample.gripper)
        if after is not None:
            q = np.array(q_full, float)
            q[self.ik.arm_qpos] = first[0][-1]
            second = self._line(q, sample.goal, sample.goal + (0, 0, after), quat)
            if second is None:
                return None
            width = CLOSED_WIDTH if sample.gripper == GRIPPER_CLOSE else OPEN_WIDTH
            segments = [(first[0], first[1], width), (second[0], second[1], None)]
        proposal = Proposal(candidate_id, sample, segments, open_first)
        self._time(proposal, ee_position)
        move = sample.goal - ee_position
        event = {GRIPPER_CLOSE: ', close and lift', GRIPPER_OPEN: ', open and back off'}.get(sample.gripper, '')
        proposal.description = f'move ({move[0] * 100:+.0f}, {move[1] * 100:+.0f}, {move[2] * 100:+.0f}) cm{event}'
        return proposal

    def _time(self, proposal, ee_position):
        c, previous = self.config, np.asarray(ee_position, float)
        t = c.grip_pause if proposal.open_first else 0.0
        for waypoints, positions, width in proposal.segments:
            step = max(c.min_duration, np.linalg.norm(positions[-1] - previous) / c.speed) / len(waypoints)
            for i in range(len(waypoints)):
                t += step
                proposal.times.append(t)
                proposal.events.append(GRIPPER_NONE)
            if width is not None:
                proposal.events[-1] = GRIPPER_CLOSE if width == CLOSED_WIDTH else GRIPPER_OPEN
                t += c.grip_pause       # hold the last waypoint while the fingers move
            previous = positions[-1]


@dataclass
class StepRecord:
    stage: str
    subtask: int
    step: int
    candidates: list                 # [{id, description, total, dimensions, failed, rollout summary}]
    chosen: str
    best_score: float
    backend: str
    timings: dict                    # stage of the MPC step -> [s]
    images: list = field(default_factory=list)   # [(view name, rgb)] with candidates coloured by score
    note: str = ''


class AntiGroundingMpc:
    """The loop. ports: state() -> (objects {id: (position, quat wxyz, size)}, arm joints, gripper width,
    ids of objects not seen in the latest frames),
    sync(believed {id: (position, quat)} replacing perceived poses), rollout(proposals) -> facts, render_for_scoring(proposals) -> views (opaque),
    render_scored(proposals, scores) -> [(view name, rgb)],
    score(instruction, task, proposals, facts, views) -> [{total, dimensions, backend, failed}],
    show(proposals, scores, chosen index) (visualisation), execute(proposal),
    feedback(**ExecuteInstruction feedback fields), rotation(instruction, object id)
    -> rotation.RotationAnswer (raises RotationUnavailable to skip the module). arm: an Arm."""

    def __init__(self, ports, arm, config: MpcConfig, log=print):
        self.ports, self.arm, self.config, self.log = ports, arm, config, log
        self.ee_position = arm.ee_position
        self.builder = CandidateBuilder(arm.ik, config)
        self.sampler = AnnealedSampler(config.sampler, config.seed)
        self.records = []
        self.gripper_targets = {}   # object id -> gripper orientation (wxyz) from the rotation module, or None
        self.believed = {}          # object id -> (position, quat) believed instead of perceived (held, unseen)

    def run(self, instruction, subtasks, max_steps=0, deadline=None, dry_run=False):
        """(success, reason): done on the perceived state, or why not (a stage's step limit, max_steps, the deadline)."""
        stages = stages_for(subtasks)
        objects, q, width = self._perceive()
        start = dict(objects)
        index, stage_steps, total = 0, 0, 0
        self.sampler.reset()
        while True:
            ee = self.ee_position(q)
            index, events = next_stage(stages, index, objects, start, width, ee)
            for event in events:
                self.log(event)
            if index == len(stages):
                break
            stage = stages[index]
            if events:      # the sub-task transition signal (or a step back): explore again
                stage_steps = 0
                self.sampler.reset(self.config.stage_r0.get(stage.name))
            if stage_steps >= self.config.max_steps_per_stage:
                return False, f'stage "{stage.describe()}" not done after {stage_steps} steps ({stage.done(objects, start, width, ee)[1]})'
            if max_steps and total >= max_steps:
                return False, f'max_steps {max_steps} reached in stage "{stage.describe()}"'
            if deadline is not None and time.monotonic() > deadline:
                return False, f'timeout reached in stage "{stage.describe()}"'
            record = self.step(instruction, stage, objects, start, q, width, total, execute=not dry_run)
            if dry_run:
                return (True, f'dry run: one step planned, best {record.chosen} ({record.best_score:.2f})') if record.chosen \
                    else (False, f'dry run: {record.note}')
            objects, q, width = self._perceive(stages[index])
            stage_steps, total = stage_steps + 1, total + 1
        return True, 'all stages done on the perceived state'

    def _perceive(self, stage=None):
        """The perceived state; an object held in a lift or carry that the cameras lost (occluded
        by the hand) is believed to be where the grip holds it (rigid coupling)."""
        objects, q, width, unseen = self.ports.state()
        self.believed = {}
        if stage is not None and stage.name in ('lift', 'carry', 'release') and stage.object_id in unseen \
                and closed_on_something(width):
            _, quat, size = objects[stage.object_id]
            objects[stage.object_id] = (self.ee_position(q) - (0, 0, scripted.grip_height(size)), quat, size)
            self.believed[stage.object_id] = objects[stage.object_id][:2]
            self.log(f'{stage.object_id} not seen: believed in the gripper')
        return objects, q, width

    def _rotation(self, instruction, object_id, object_quat, grasp_quat):
        """The rigid-coupled rotation module: a gripper orientation for carrying, or None (skipped)."""
        try:
            answer = self.ports.rotation(instruction, object_id)
        except RotationUnavailable as exc:
            self.log(str(exc))
            return None
        wxyz_to_matrix = lambda q: Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()  # noqa: E731
        turned = Rotation.from_matrix(answer.gripper_rotation(wxyz_to_matrix(object_quat), wxyz_to_matrix(grasp_quat))).as_quat()
        self.log(f'rotation module ({answer.backend}): turn {object_id} about its {answer.axis} axis by '
                 f'{np.degrees(answer.angle):.0f} degrees while carrying')
        return np.array([turned[3], *turned[:3]])

    def _nothing_executed(self, stage, step_index, proposals, scores, facts, timings, why):
        record = StepRecord(stage.describe(), stage.subtask_index, step_index, _candidate_rows(proposals, scores, facts), '',
                            0.0, scores[0]['backend'] if scores else '', {k: round(v, 4) for k, v in timings.items()}, [],
                            f'{why}: none executed')
        self.records.append(record)
        self.log(f'step {step_index} [{stage.describe()}] {len(proposals)} candidates: {record.note}')
        return record

    def step(self, instruction, stage, objects, start, q, width, step_index, execute=True):
        timings = {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now

        self.ports.feedback(stage='sync_twin', step=step_index, subtask=stage.subtask_index)
        self.ports.sync(self.believed)
        lap('sync')
        ee = self.ee_position(q)
        p, quat, size = objects[stage.object_id]
        grasp = scripted.grasp_orientation(quat, size)
        if stage.name == 'carry' and stage.object_id not in self.gripper_targets:
            self.gripper_targets[stage.object_id] = self._rotation(instruction, stage.object_id, quat, grasp)
        if stage.name in ('carry', 'release') and self.gripper_targets.get(stage.object_id) is not None:
            grasp = self.gripper_targets[stage.object_id]
        self.sampler.config.gripper_probabilities = STAGE_GRIPPER[stage.name]
        to_goal = stage.sub_goal(objects, start, ee) - ee
        distance = float(np.linalg.norm(to_goal))
        prior, cap = None, np.inf
        if self.config.goal_prior > 0 and distance > 1e-3:   # towards the sub-goal, and not far past it
            prior, cap = to_goal / distance, max(2.0 * distance, 2.0 * self.sampler.config.r_min)
        samples = self.sampler.sample(ee, self.config.num_candidates * 2, prior=prior, prior_weight=self.config.goal_prior,
                                      radius_cap=cap)
        lap('sampling')
        q_full = self.arm.q_full(q)
        open_first = stage.name == 'grasp' and width < OPEN_WIDTH - 0.01
        proposals, beside = [], 0
        for sample in samples:
            proposal = self.builder.build(f'c{len(proposals):02d}', sample, q_full, ee, grasp, open_first)
            if proposal is not None and stage.comes_down_beside(objects, ee, proposal.positions()):
                proposal, beside = None, beside + 1
            if proposal is not None:
                proposals.append(proposal)
            if len(proposals) == self.config.num_candidates:
                break
        lap('ik')
        if not proposals:                # nothing reachable from here: the step is spent, the next one samples anew
            return self._nothing_executed(stage, step_index, [], [], [], timings, 'no reachable candidate around the gripper'
                                          + (f' ({beside} came down beside the object)' if beside else ''))
        self.ports.feedback(stage='rollout', step=step_index, subtask=stage.subtask_index, num_candidates=len(proposals))
        facts = self.ports.rollout(proposals)
        lap('rollout')
        views = self.ports.render_for_scoring(proposals)
        lap('render')
        task = stage.task(objects, start)
        self.ports.feedback(stage='score', step=step_index, subtask=stage.subtask_index, num_candidates=len(proposals))
        text = f'{instruction} (current stage: {stage.describe()})'
        scores = self.ports.score(text, task, proposals, facts, views)
        lap('scoring')
        safe = [i for i, s in enumerate(scores) if not s['failed'] and not facts[i]['collisions']]
        usable = [i for i in safe if np.linalg.norm(np.subtract(facts[i]['ee_end'], proposals[i].end)) < self.config.blocked_distance]
        usable = usable or safe          # all blocked (pressing on something): the best safe one still moves on
        self.sampler.feedback([p.sample for p in proposals],
                              [s['total'] if not s['failed'] else np.nan for s in scores])
        if not usable:                   # nothing safe to execute: the step is spent, the next one samples anew
            return self._nothing_executed(stage, step_index, proposals, scores, facts, timings,
                                          'every candidate collided in the twin or failed scoring')
        ranked = sorted(usable, key=lambda i: -scores[i]['total'])
        totals = [s['total'] if not s['failed'] else 0.0 for s in scores]
        self.ports.show(proposals, totals, ranked[0])
        report_images = self.ports.render_scored(proposals, totals)
        lap('report_render')
        refused, failure = [], None     # the safety gate is the authority: a refused candidate gives way to the next
        for best in ranked[:1 + self.config.gate_retries] if execute else ranked[:1]:
            chosen, failure = proposals[best], None
            self.ports.feedback(stage='execute', step=step_index, subtask=stage.subtask_index, num_candidates=len(proposals),
                                best_score=scores[best]['total'], chosen_candidate=f'{chosen.id}: {chosen.description}',
                                backend=scores[best]['backend'])
            try:
                if execute:
                    self.ports.execute(chosen)
            except ExecutionFailed as exc:
                failure = exc
                if exc.before_motion:
                    refused.append(f'{chosen.id} ({exc})')
                    continue
            break
        note = f'{chosen.id}: {chosen.description}' + ('' if execute else ' (dry run: not executed)')
        if failure is not None:
            note += f' - not completed: {failure}'
        earlier = refused[:-1] if failure is not None and failure.before_motion else refused
        if earlier:
            note += f' (after the safety gate refused {"; ".join(earlier)})'
        lap('execution')
        record = StepRecord(stage.describe(), stage.subtask_index, step_index, _candidate_rows(proposals, scores, facts), chosen.id,
                            float(scores[best]['total']), scores[best]['backend'], {k: round(v, 4) for k, v in timings.items()},
                            report_images, note)
        self.records.append(record)
        self.log(f'step {step_index} [{stage.describe()}] {len(proposals)} candidates, chose {record.note} '
                 f'(score {record.best_score:.2f}); ' + ', '.join(f'{k} {v:.2f}s' for k, v in timings.items()))
        return record
