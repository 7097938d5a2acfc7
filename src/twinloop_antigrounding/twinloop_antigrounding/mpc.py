"""The AntiGrounding MPC loop (no rclpy): sample -> IK -> twin rollouts -> renders -> scores ->
execute the best -> perceive again, stage by stage until the grounded sub-tasks hold.

Method after AntiGrounding (Real2Sim2Real MPC with structured-VQA scoring of rendered
candidates, shared/seeds/000). Each sub-task is split into stages (stages.py); a stage
transition resets the annealed sampler (the paper's sub-task transition signal). Everything that
talks to the outside world goes through twinloop_core ports (ROS or in process), so this module
is the algorithm only.

One addition to the paper, documented in README.md (The AntiGrounding planner): besides the experience of
well-scored directions, the sampler is pointed at the stage's sub-goal from the grounded task
(the target object for a grasp, the destination for a carry), and its radius is capped at twice
the distance to that sub-goal. With the twin_critic scorer this prior is what makes the search
converge in a few steps; it can be turned off (goal_prior: 0). One candidate goes straight to the
sub-goal (goal_candidate; the critic still has to prefer it): random samples land within the
grasp tolerance of a grasp point only by luck, and LIBERO's step limits leave no steps to hover
(a rim grasp of a bowl hovered six steps without it). With a grasp point in reach of the
grip (Stage.in_reach) a close there is always among the candidates, and more closes around it once
the stage stalled in reach; a needed object that fell off the table (or is no longer perceived)
ends the run at once with where it is.
"""

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from twinloop_antigrounding import candidates, rotation
from twinloop_antigrounding.candidates import CandidateBuilder
from twinloop_antigrounding.rotation import RotationUnavailable
from twinloop_antigrounding.sampler import GRIPPER_CLOSE, GRIPPER_NONE, AnnealedSampler, Sample
from twinloop_antigrounding.stages import POUR_TILT, lost, next_stage, stages_for
from twinloop_core.gripper import closed_on_something, is_open
from twinloop_core.outcomes import ExecutionFailed, GoalEnded, Outcome

STAGE_GRIPPER = {  # P(none, open, close) of a candidate's gripper event in each stage
    'grasp': (0.6, 0.0, 0.4),
    'lift': (1.0, 0.0, 0.0),
    'carry': (1.0, 0.0, 0.0),
    'release': (0.5, 0.5, 0.0),
    'tilt': (1.0, 0.0, 0.0),
    'pull': (1.0, 0.0, 0.0),
}
STALL_CLOSES = 3  # extra close candidates around a grasp point in reach once the stage stalled there


def _candidate_rows(proposals, scores, facts, reaches=None):
    """The report's row per candidate: description, scores, what the twin saw (reaches: the stage
    is done at the end of its rollout, Stage.done_in_twin; None: not judged)."""
    return [
        {
            'id': p.id,
            'description': p.description,
            'total': round(s['total'], 4),  # at 3 digits, totals 1e-5 apart (ROS vs in process) could read 1e-3 apart
            'failed': s['failed'],
            'dimensions': s['dimensions'],
            'collisions': f['collisions'],
            'holding': f['holding'],
            'reaches': r,
        }
        for p, s, f, r in zip(proposals, scores, facts, reaches or [None] * len(facts))
    ]


def _standing_contacts(facts, object_id):
    """Collisions of the robot with the object a stage works on that every rollout has: the hand
    already touches it (an object tipped against the palm), whatever the candidate does. They do not
    make a candidate unsafe, or no candidate, not even the grasp, could ever move again."""
    shared = set.intersection(*(set(f['collisions']) for f in facts)) if facts else set()
    return {c for c in shared if object_id in c.split('|') and any(b.startswith('panda_') for b in c.split('|'))}


@dataclass
class StepRecord:
    """One MPC step for the report: the candidates, the one chosen and the time spent per stage."""

    stage: str
    subtask: int
    step: int
    candidates: list  # [{id, description, total, dimensions, failed, rollout summary}]
    chosen: str
    best_score: float
    backend: str
    timings: dict  # stage of the MPC step -> [s]
    images: list = field(default_factory=list)  # [(view name, rgb)] with candidates coloured by score
    note: str = ''
    weights: dict = field(default_factory=dict)  # the dimension weights the totals were computed with


class AntiGroundingMpc:
    """The loop over twinloop_core Ports: perception, twin, scorer, executor, progress and cancel.
    arm: a twinloop_execution.kinematics.Arm; rotation_backend: the VLM answering the rotation
    module (None: the module is off)."""

    def __init__(self, ports, arm, config, rotation_backend=None):
        self.ports, self.arm, self.config, self.rotation_backend = ports, arm, config, rotation_backend
        self.log = ports.progress.log
        self.ee_position = arm.ee_position
        self.builder = CandidateBuilder(arm.ik, config)
        self.sampler = AnnealedSampler(config.sampler, config.seed)
        self.records = []
        self.labels = {}
        self.gripper_targets = {}  # object id -> gripper orientation (wxyz) from the rotation module, or None
        self.believed = {}  # object id -> (position, quat) believed instead of perceived (held, unseen)
        self.grip_offsets = {}  # object id -> grip site - object position when last seen held [m]
        self.stalled = 0  # consecutive steps of this stage with its grasp point in reach

    def run(self, instruction, subtasks, max_steps=0, deadline=None, dry_run=False, avoid=()):
        """(success, reason): done on the perceived state, or why not. avoid: ids of objects the task
        must not move (the scorers are told).

        Why not: an object the remaining stages need fell off the table or is no longer perceived, a
        stage's step limit, max_steps or the deadline (time.monotonic() [s]) reached.
        """
        stages = stages_for(subtasks, avoid)
        objects, q, width = self._perceive()
        start = dict(objects)
        # min_height is above what the objects stand on (LIBERO's table top is 1.2 cm below its robot's base)
        self.builder.surface = min((float(p[2]) for p, _, _ in start.values()), default=0.0)
        index, stage_steps, total = 0, 0, 0
        self.sampler.reset()
        self.stalled = 0
        while True:
            ee = self.ee_position(q)
            index, events = next_stage(stages, index, objects, start, width, ee, self.arm.ee_quat(q))
            for event in events:
                self.log(event)
            if index == len(stages):
                break
            stage = stages[index]
            gone = lost(stages[index:], objects, start, self.config.fell_below)
            if gone:  # no step brings it back: fail now, with where it is
                return False, f'stage "{stage.describe()}" cannot be done: {gone}'
            if events:  # the sub-task transition signal (or a step back): explore again
                stage_steps, self.stalled = 0, 0
                self.sampler.reset(self.config.stage_r0.get(stage.name))
            if stage_steps >= self.config.max_steps_per_stage:
                why = stage.done(objects, start, width, ee, self.arm.ee_quat(q))[1]
                return False, f'stage "{stage.describe()}" not done after {stage_steps} steps ({why})'
            if max_steps and total >= max_steps:
                return False, f'max_steps {max_steps} reached in stage "{stage.describe()}"'
            if deadline is not None and time.monotonic() > deadline:
                return False, f'timeout reached in stage "{stage.describe()}"'
            record = self.step(instruction, stage, objects, start, q, width, total, execute=not dry_run)
            if dry_run:
                return (
                    (True, f'dry run: one step planned, best {record.chosen} ({record.best_score:.2f})')
                    if record.chosen
                    else (False, f'dry run: {record.note}')
                )
            objects, q, width = self._perceive(stages[index])
            stage_steps, total = stage_steps + 1, total + 1
        return True, 'all stages done on the perceived state'

    def _perceive(self, stage=None):
        """The perceived state; an object held in a lift or carry that the cameras lost (occluded
        by the hand) is believed to be where the grip holds it (rigid coupling: at the grip's offset
        from it when last seen held, else at its grasp)."""
        state = self.ports.perception.state()
        objects, q, width, unseen = dict(state.objects), state.arm, state.gripper_width, state.unseen
        self.labels = state.labels
        self.believed = {}
        held = stage is not None and stage.name in ('lift', 'carry', 'release', 'pull') and closed_on_something(width)
        if held and stage.object_id not in unseen:
            self.grip_offsets[stage.object_id] = self.ee_position(q) - np.asarray(objects[stage.object_id][0], float)
        elif held and stage.object_id in objects:
            p, quat, size = objects[stage.object_id]
            offset = self.grip_offsets.get(stage.object_id)
            if offset is None:
                offset = stage.grasp(objects).point - np.asarray(p, float)
            objects[stage.object_id] = (self.ee_position(q) - offset, quat, size)
            self.believed[stage.object_id] = objects[stage.object_id][:2]
            self.log(f'{stage.object_id} not seen: believed in the gripper')
        return objects, q, width

    def _rotation(self, instruction, stage, objects, grasp_quat):
        """The rigid-coupled rotation module: a gripper orientation for carrying, or None (skipped)."""
        object_id, object_quat = stage.object_id, objects[stage.object_id][1]
        try:
            answer = self._ask_rotation(instruction, stage, objects)
        except RotationUnavailable as exc:
            self.log(str(exc))
            return None
        wxyz_to_matrix = lambda q: Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()  # noqa: E731
        turned = Rotation.from_matrix(
            answer.gripper_rotation(wxyz_to_matrix(object_quat), wxyz_to_matrix(grasp_quat))
        ).as_quat()
        self.log(
            f'rotation module ({answer.backend}): turn {object_id} about its {answer.axis} axis by '
            f'{np.degrees(answer.angle):.0f} degrees while carrying'
        )
        return np.array([turned[3], *turned[:3]])

    def _ask_rotation(self, instruction, stage, objects):
        """The held object's axes drawn in a twin view, asked of the rotation backend; without a VLM
        the twin's geometric answer where the task gives an orientation (rotation.geometric)."""
        object_id, subtask = stage.object_id, stage.subtask
        if self.rotation_backend is None or not self.rotation_backend.is_vlm:
            if subtask.relation in rotation.ORIENTED_RELATIONS and subtask.destination_id in objects:
                return rotation.geometric(objects[object_id][1], objects[subtask.destination_id][1])
            who = 'no rotation_agent configured' if self.rotation_backend is None else self.rotation_backend.label
            raise RotationUnavailable(
                f'rotation module skipped: {who} cannot read axes in an image, and the task gives no orientation'
            )
        label = self.labels.get(object_id) or object_id.replace('_', ' ')
        return rotation.ask(self.rotation_backend, instruction, label, self.ports.twin.render_axes(object_id))

    def _closes(self, stage, objects, ee):
        """Close candidates for a grasp point in reach: one at the grasp point and, once the stage stalled
        in reach (an earlier step here did not grasp: the perceived pose may be off), STALL_CLOSES more at
        random points within half the grasp tolerance around it (object frame, never below it)."""
        quat, grasp = objects[stage.object_id][1], stage.grasp(objects)
        grasp_point = grasp.point
        goals = [grasp_point]
        if self.stalled:
            half = grasp.tolerance / 2
            rotation = Rotation.from_quat([*quat[1:], quat[0]])
            low, high = -half * (1, 1, 0), half
            goals += [grasp_point + rotation.apply(self.sampler.rng.uniform(low, high)) for _ in range(STALL_CLOSES)]
        out = []
        for goal in goals:
            goal = np.array([goal[0], goal[1], max(goal[2], self.builder.surface + self.config.min_height)])
            move = goal - ee
            radius = float(np.linalg.norm(move))
            direction = move / radius if radius > 1e-9 else np.array([0, 0, -1.0])
            out.append(Sample(goal, direction, radius, GRIPPER_CLOSE))
        return out

    def _nothing_executed(self, stage, step_index, proposals, scores, facts, timings, why):
        record = StepRecord(
            stage.describe(),
            stage.subtask_index,
            step_index,
            _candidate_rows(proposals, scores, facts),
            '',
            0.0,
            scores[0]['backend'] if scores else '',
            {k: round(v, 4) for k, v in timings.items()},
            [],
            f'{why}: none executed',
        )
        self.records.append(record)
        self.ports.progress.record(record)
        self.log(f'step {step_index} [{stage.describe()}] {len(proposals)} candidates: {record.note}')
        return record

    def step(self, instruction, stage, objects, start, q, width, step_index, execute=True):
        """One MPC step: sample, IK, twin rollouts, renders, scores, then execute the best (unless dry)."""
        timings = {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now

        progress, twin = self.ports.progress, self.ports.twin
        self.ports.cancel.check()
        progress.feedback('sync_twin', step_index, stage.subtask_index, stage.describe())
        twin.sync(self.believed)
        lap('sync')
        ee = self.ee_position(q)
        grasp = stage.grasp(objects).quat
        if stage.name == 'carry' and stage.object_id not in self.gripper_targets:
            self.gripper_targets[stage.object_id] = self._rotation(instruction, stage, objects, grasp)
        if stage.name in ('carry', 'release') and self.gripper_targets.get(stage.object_id) is not None:
            grasp = self.gripper_targets[stage.object_id]
        self.sampler.config.gripper_probabilities = STAGE_GRIPPER[stage.name]
        to_goal = stage.sub_goal(objects, start, ee) - ee
        distance = float(np.linalg.norm(to_goal))
        prior, cap = None, np.inf
        if self.config.goal_prior > 0 and distance > 1e-3:  # towards the sub-goal, and not far past it
            prior, cap = to_goal / distance, max(2.0 * distance, 2.0 * self.sampler.config.r_min)
        samples = self.sampler.sample(
            ee, self.config.num_candidates * 2, prior=prior, prior_weight=self.config.goal_prior, radius_cap=cap
        )
        if self.config.goal_candidate and distance > 1e-3:
            samples = [Sample(ee + to_goal, to_goal / distance, distance, GRIPPER_NONE)] + samples
        if stage.in_reach(objects, ee):  # the close event is always a candidate, more of them once stalled here
            samples = self._closes(stage, objects, ee) + samples
            self.stalled += 1
        else:
            self.stalled = 0
        lap('sampling')
        q_full = self.arm.q_full(q)
        open_first = stage.name == 'grasp' and not is_open(width)
        quats, turn_from = [grasp], None
        if stage.name == 'tilt':  # turn the grip about the fingers' axis, one way or the other
            turn_from = self.arm.ee_quat(q)
            stage.upright_grip = stage.upright_grip or tuple(turn_from)
            quats = [candidates.turned_about_fingers(stage.upright_grip, s * POUR_TILT) for s in (1.0, -1.0)]
        proposals, beside = [], 0
        for i, sample in enumerate(samples):
            self.ports.cancel.check()
            quat = quats[i % len(quats)]
            proposal = self.builder.build(
                f'c{len(proposals):02d}', sample, q_full, ee, quat, open_first, turn_from, stage.tug(objects)
            )
            if proposal is not None and stage.comes_down_beside(objects, ee, proposal.positions()):
                proposal, beside = None, beside + 1
            if proposal is not None:
                proposals.append(proposal)
            if len(proposals) == self.config.num_candidates:
                break
        lap('ik')
        if not proposals:  # nothing reachable from here: the step is spent, the next one samples anew
            return self._nothing_executed(
                stage,
                step_index,
                [],
                [],
                [],
                timings,
                'no reachable candidate around the gripper'
                + (f' ({beside} came down beside the object)' if beside else ''),
            )
        progress.feedback('rollout', step_index, stage.subtask_index, stage.describe(), num_candidates=len(proposals))
        ids = [p.id for p in proposals]
        facts = twin.rollout([candidates.timed_path(p, q) for p in proposals], self.config.settle)
        lap('rollout')
        batches = twin.render_for_scoring(ids)
        lap('render')
        task = stage.task(objects, start)
        progress.feedback('score', step_index, stage.subtask_index, stage.describe(), num_candidates=len(proposals))
        text = f'{instruction} (current stage: {stage.describe()})'
        scores = self.ports.scorer.score(text, task, ids, facts, batches)
        lap('scoring')
        if all(s['failed'] for s in scores):  # no scorer answered at all: nothing to plan with
            raise GoalEnded(
                Outcome.ERROR,
                f'the scorer failed on every candidate ({scores[0]["backend"]}): '
                f'{scores[0].get("rationale", "")[:300]}',
            )
        standing = _standing_contacts(facts, stage.object_id)
        safe = [i for i, s in enumerate(scores) if not s['failed'] and not set(facts[i]['collisions']) - standing]
        usable = [
            i
            for i in safe
            if np.linalg.norm(np.subtract(facts[i]['ee_end'], proposals[i].end)) < self.config.blocked_distance
        ]
        usable = usable or safe  # all blocked (pressing on something): the best safe one still moves on
        self.sampler.feedback(
            [p.sample for p in proposals], [s['total'] if not s['failed'] else np.nan for s in scores]
        )
        if not usable:  # nothing safe to execute: the step is spent, the next one samples anew
            return self._nothing_executed(
                stage,
                step_index,
                proposals,
                scores,
                facts,
                timings,
                'every candidate collided in the twin or failed scoring',
            )
        ranked = sorted(usable, key=lambda i: -scores[i]['total'])
        totals = [s['total'] if not s['failed'] else 0.0 for s in scores]
        progress.show(twin.grip_paths(ids), totals, ranked[0])
        report_images = twin.render_report(ids, totals)  # drawn while the arm moves where the twin can
        refused, failure = [], None  # the safety gate is the authority: a refused candidate gives way to the next
        for best in ranked[: 1 + self.config.gate_retries] if execute else ranked[:1]:
            chosen, failure = proposals[best], None
            progress.feedback(
                'execute',
                step_index,
                stage.subtask_index,
                stage.describe(),
                num_candidates=len(proposals),
                best_score=scores[best]['total'],
                chosen_candidate=f'{chosen.id}: {chosen.description}',
                backend=scores[best]['backend'],
            )
            try:
                if execute:
                    self.ports.executor.execute(candidates.segments(chosen))
            except ExecutionFailed as exc:
                failure = exc
                if exc.before_motion and not exc.stale_state:  # stale state: every candidate is refused alike
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
        report_images = report_images()
        lap('report_render')  # the wait for it, after the motion
        record = StepRecord(
            stage.describe(),
            stage.subtask_index,
            step_index,
            _candidate_rows(proposals, scores, facts, [stage.done_in_twin(objects, start, f) for f in facts]),
            chosen.id,
            float(scores[best]['total']),
            scores[best]['backend'],
            {k: round(v, 4) for k, v in timings.items()},
            report_images,
            note,
            scores[best].get('weights', {}),
        )
        self.records.append(record)
        self.ports.progress.record(record)
        self.log(
            f'step {step_index} [{stage.describe()}] {len(proposals)} candidates, chose {record.note} '
            f'(score {record.best_score:.2f}); ' + ', '.join(f'{k} {v:.2f}s' for k, v in timings.items())
        )
        return record
