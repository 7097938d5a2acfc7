"""AntiGrounding's stages (no rclpy): each sub-task is split into grasp, lift, carry and release
(a pour: grasp, lift, carry over the destination, tilt; opening a drawer: grasp its handle, pull, release);
a stage says where the sampler is pointed (its sub-goal), what the scorer judges candidates
against (its task) and when it is done - on the perceived state, which is the paper's sub-task
transition signal."""

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from twinloop_core.geometry import grasp_of, handle_of, pull_axis, quat_angle
from twinloop_core.gripper import HAND_LENGTH, OPEN_WIDTH, closed_on_something, is_open
from twinloop_core.judging import judge
from twinloop_core.regions import region_target
from twinloop_core.task import SubTask

APPROACH_RADIUS = 0.015  # [m] the grip descends to its grasp point once within this of it horizontally
HOVER = 0.03  # [m] until then the grasp sub-goal is this far above the object's top
POUR_CLEARANCE = 0.04  # [m] a container carried to pour goes this far above the destination's top (room to tilt)
POUR_RISE = 0.05  # [m] ... and the tilt's candidates head this much higher (the turned wrist comes down)
POUR_TILT = float(np.radians(120))  # the tilt a pour aims at, from the grip's orientation when the tilt began
POURED_TILT = float(np.radians(100))  # ... and the tilt at which it counts as poured (Python floats: reports are JSON)
PULL = 0.13  # [m] how far a pull aims to draw a drawer out (judging.OPENED counts it open)
TUG = 0.03  # [m] a close on a drawer's handle pulls this far (a close on anything else lifts)


@dataclass
class Stage:
    """One stage of a sub-task: what the critic is told, where the sampler is pointed, and when it is done."""

    name: str  # grasp, lift, carry, release, tilt, pull
    subtask_index: int
    subtask: SubTask
    avoid: tuple = ()  # objects not to touch or move (the task's constraint), for the scorer
    rim_side: float = field(default=0.0, compare=False)  # a rim grasp's side, kept once chosen
    upright_grip: tuple = field(default=(), compare=False)  # a tilt's grip orientation (w x y z) when it began

    @property
    def object_id(self):
        """The object this stage moves."""
        return self.subtask.object_id

    @property
    def destination_id(self):
        """The destination object ('' for a pick)."""
        return self.subtask.destination_id

    @property
    def object_ids(self):
        """Every object this stage's checks read: the moved one, the destination and a second reference."""
        return tuple(dict.fromkeys(o for o in (self.object_id, self.destination_id, self.subtask.reference2_id) if o))

    def describe(self):
        """Short label of the stage, e.g. 'carry bowl to plate' or 'release cube next_to bowl'."""
        if self.name not in ('carry', 'release', 'tilt') or not self.destination_id:
            return f'{self.name} {self.object_id}'
        relation = (
            f' {self.subtask.relation}' if self.subtask.is_region else (' over' if self.name == 'tilt' else ' to')
        )
        return f'{self.name} {self.object_id}{relation} {self.destination_id}'

    def drop_point(self, objects, start):
        """Where the held object's base goes down: on top of the destination, or at the region's spot on
        the surface the object started on."""
        if self.subtask.is_region:
            return np.array([*region_target(self.subtask, objects), start[self.object_id][0][2]])
        d, _, d_size = objects[self.destination_id]
        return np.asarray(d, float) + (0, 0, d_size[2])

    def sub_goal(self, objects, start, ee=None):
        """Grip-site position this stage is after, in the perceived world (object frames sit at the
        centre of their bottom face). Grasping comes down from above: while the grip (ee) is not yet
        over the grasp point the sub-goal is above the object's top (low sideways moves push it).
        Lifting, carrying and releasing aim the held object, not the grip."""
        p, _, size = objects[self.object_id]
        if self.name == 'grasp':
            grasp_point = self.grasp_point(objects)
            if ee is not None and np.linalg.norm(np.subtract(ee, grasp_point)[:2]) > APPROACH_RADIUS:
                return grasp_point + (0, 0, p[2] + size[2] + HOVER - grasp_point[2])
            return grasp_point
        # the grip keeps its offset from the held object (a sponge held off its centre, a bowl by its rim)
        grip_from_base = np.subtract(ee, p) if ee is not None else self.grasp(objects).point - p
        if self.subtask.action == 'open':  # pull the drawer out; let go where it is, rising off the handle
            return self._opened(start) + grip_from_base + (0, 0, 0.03 if self.name == 'release' else 0.0)
        if self.name == 'lift':
            return np.asarray(start[self.object_id][0], float) + grip_from_base + (0, 0, 0.15)
        if self.subtask.action == 'pour':  # carry over the destination, tilt there rising (room for the wrist)
            rise = POUR_RISE if self.name == 'tilt' else 0.0
            return self.drop_point(objects, start) + (0, 0, POUR_CLEARANCE + rise) + grip_from_base
        clearance = 0.05 if self.name == 'carry' else 0.015  # object base above the destination's top
        return self.drop_point(objects, start) + (0, 0, clearance) + grip_from_base

    def _opened(self, start):
        """Where an open sub-task's drawer is after a full pull [m]."""
        p, quat, _ = start[self.object_id]
        return np.asarray(p, float) + PULL * pull_axis(quat)

    def grasp(self, objects):
        """How the grip holds this stage's object (twinloop_core.geometry.grasp_of); a rim grasp keeps
        the side it chose first, so the sub-goal does not flip between rims as objects shift. A drawer
        to open is held by its handle."""
        if self.subtask.action == 'open':
            return grasp_of(handle_of(objects[self.object_id]))
        obj = objects[self.object_id]
        others = [o for oid, o in objects.items() if oid != self.object_id]
        grasp = grasp_of(obj, [o[0] for o in others], self.rim_side, _walls_spanned(obj, others))
        self.rim_side = grasp.side
        return grasp

    def tug(self, objects):
        """Where a close candidate moves the grip after closing [m]: a drawer's handle is pulled TUG along
        the drawer's axis (it cannot be lifted); None: lifted as usual."""
        if self.subtask.action != 'open':
            return None
        return TUG * pull_axis(objects[self.object_id][1])

    def grasp_point(self, objects):
        """Where the grip site holds this stage's object (world) [m]."""
        return self.grasp(objects).point

    def in_reach(self, objects, ee):
        """Is the grasp point in reach of the grip (a grasp stage only)? Yes when the grip is within the
        grasp tolerance across the object (object frame) and between the tolerance below the grasp
        point and the hover above the object's top: a straight move to the grasp point and a close
        there grasp it."""
        if self.name != 'grasp':
            return False
        obj, grasp = objects[self.object_id], self.grasp(objects)
        offset, tolerance = grip_offset(obj, grasp.point, ee), grasp.tolerance
        above = obj[0][2] + obj[2][2] + HOVER + tolerance[2] - grasp.point[2]
        return bool(np.all(np.abs(offset[:2]) <= tolerance[:2]) and -tolerance[2] <= offset[2] <= above)

    def comes_down_beside(self, objects, ee, positions):
        """Would a grasp candidate's path come down beside the object, where a finger lands on its
        rim or side and pushes or tips it? True if a grip position lower than the object's top +
        HOVER/2 (and not above where the grip starts: rising out is always allowed) is within a
        finger's reach of the object but not over its grasp point."""
        if self.name != 'grasp':
            return False
        p, _, size = objects[self.object_id]
        grasp_point = self.grasp_point(objects)
        low = min(p[2] + size[2] + HOVER / 2, ee[2] + 0.005)
        reach = max(size[0], size[1]) / 2 + OPEN_WIDTH / 2 + 0.01
        return any(
            point[2] < low
            and np.hypot(point[0] - grasp_point[0], point[1] - grasp_point[1]) > APPROACH_RADIUS
            and np.hypot(point[0] - p[0], point[1] - p[1]) < reach
            for point in positions
        )

    def task(self, objects, start):
        """The goal specification the scorer judges this stage's candidates against."""
        p, _, size = objects[self.object_id]
        if self.subtask.action == 'open':
            goal = self._opened(start)
        elif self.name in ('grasp', 'lift'):
            goal = np.asarray(start[self.object_id][0], float) + (0, 0, 0.15)
        else:
            goal = self.drop_point(objects, start) + (0, 0, 0.05 if self.name == 'carry' else 0.0)
        return {
            'stage': self.name,
            'object': self.object_id,
            'destination': self.destination_id,
            'object_size': [float(v) for v in size],
            'grasp_offset': [float(v) for v in self.grasp_point(objects) - np.asarray(p, float)],
            'goal_position': [float(v) for v in goal],
            'holding': {'grasp': 'wanted', 'release': 'unwanted'}.get(self.name, 'required'),
            'avoid': list(self.avoid),
            **({'tilt': float(POURED_TILT)} if self.name == 'tilt' else {}),
            **({'moves_with': self.contents(start)} if self.subtask.action == 'open' else {}),
        }

    def contents(self, start):
        """The objects that stood inside this stage's object at the start (a drawer's: they move with it)."""
        return [oid for oid, o in start.items() if oid != self.object_id and _inside(start[self.object_id], o[0])]

    def done(self, objects, start, gripper_width, ee_position, ee_quat=None):
        """(done, note) on perceived state (ee_quat: the grip's orientation, w x y z, which a tilt reads)."""
        p, _, size = objects[self.object_id]
        held = _held(objects[self.object_id], gripper_width, ee_position)
        if self.name == 'tilt':  # the held container turned over the destination (what it holds may be unseen)
            known = len(self.upright_grip) and ee_quat is not None
            tilt = quat_angle(self.upright_grip, ee_quat) if known else 0.0
            return bool(held and tilt >= POURED_TILT), f'tilted {np.degrees(tilt):.0f} degrees'
        if self.name == 'grasp':  # a firm grasp: the grip at the object's grasp point, within its tolerance
            grasp = self.grasp(objects)
            offset = grip_offset(objects[self.object_id], grasp.point, ee_position)
            return (
                held and bool(np.all(np.abs(offset) <= grasp.tolerance)),
                f'gripper {gripper_width * 100:.1f} cm, grip {np.round(offset * 100, 1).tolist()} cm '
                'from the grasp point (object frame)',
            )
        if self.name == 'pull':
            opened, note = judge([self.subtask], start, objects)
            return held and opened, note
        rise = p[2] - start[self.object_id][0][2]
        if self.name == 'lift':
            return held and rise > 0.1, f'raised {rise * 100:.1f} cm'  # above the clutter before carrying
        if self.name == 'carry':
            drop = self.drop_point(objects, start)
            horizontal = float(np.hypot(p[0] - drop[0], p[1] - drop[1]))
            if self.subtask.is_region:
                return held and horizontal < 0.02 and p[2] > drop[
                    2
                ] + 0.01, f'{horizontal * 100:.1f} cm from above its spot'
            d_size = objects[self.destination_id][2]
            ok = held and horizontal < max(0.01, min(d_size[0], d_size[1]) / 4) and p[2] > drop[2]  # stacks: precision
            return ok, f'{horizontal * 100:.1f} cm from above {self.destination_id}'
        placed, note = judge([self.subtask], start, objects)
        return placed and (is_open(gripper_width) or not held), note  # on its destination and let go

    def done_in_twin(self, objects, start, fact):
        """The done check on a candidate's end state in the twin (rollout facts): the objects where the
        rollout left them (orientations as perceived), the grip at its end, the fingers closed on
        what the twin says is held (HELD_WIDTH) or open. Hindsight labels for offline optimisation."""
        final = fact.get('final_positions', {})
        if self.name == 'tilt':  # the held object's own turn in the rollout is the tilt
            turned = float(fact.get('rotations', {}).get(self.object_id, 0.0))
            return fact.get('holding') == self.object_id and turned >= POURED_TILT
        moved = {oid: (final.get(oid, o[0]), o[1], o[2]) for oid, o in objects.items()}
        width = HELD_WIDTH if fact.get('holding') in objects else OPEN_WIDTH
        return bool(self.done(moved, start, width, fact['ee_end'])[0])


HELD_WIDTH = OPEN_WIDTH / 2  # [m] fingers closed on a held object, for the twin's end states


def grip_offset(obj, grasp_point, ee_position):
    """The grip site relative to the object's grasp point, in the object's frame [m]."""
    return _local(obj, ee_position) - _local(obj, grasp_point)


HELD_MARGIN = 0.02  # [m] the grip of a held object is within its bounding box grown by this


def _local(obj, point):
    """A world point in the object's frame (origin at the centre of its bottom face) [m]."""
    p, quat, _ = obj
    return Rotation.from_quat([*quat[1:], quat[0]]).inv().apply(np.subtract(point, p))


def _walls_spanned(obj, others):
    """Height [m] above obj's base of the top of a container it stands in that the hand cannot fit
    between (narrower than the hand's length: a drawer, a bowl); 0 when there is none."""
    base = np.asarray(obj[0], float)
    tops = [
        o[0][2] + o[2][2] - base[2] for o in others if min(o[2][0], o[2][1]) < HAND_LENGTH and _inside(o, base, 0.005)
    ]
    return max(tops, default=0.0)


def _inside(obj, point, margin=0.0):
    """Is a point within an object's bounding box (its own frame) grown by margin [m]?"""
    size, local = obj[2], _local(obj, point)
    half = np.asarray(size[:2], float) / 2 + margin
    return bool(np.all(np.abs(local[:2]) <= half) and -margin <= local[2] <= size[2] + margin)


def _held(obj, gripper_width, ee_position):
    """Fingers stopped short on something, and the grip is inside the object's bounding box (its
    own frame, grown by HELD_MARGIN): true however it hangs (a bowl lifted by its rim tilts)."""
    return closed_on_something(gripper_width) and _inside(obj, ee_position, HELD_MARGIN)


STAGE_NAMES = {  # action -> its stages
    'pick': ('grasp', 'lift'),
    'place': ('grasp', 'lift', 'carry', 'release'),
    'pour': ('grasp', 'lift', 'carry', 'tilt'),
    'open': ('grasp', 'pull', 'release'),
}


def stages_for(subtasks, avoid=()):
    """The stages of grounded sub-tasks, in order: pick is grasp + lift, place adds carry + release
    (into or onto the destination, or to a spot beside it)."""
    out = []
    for index, s in enumerate(subtasks):
        if s.action not in STAGE_NAMES:
            raise ValueError(f'anti_grounding here plans {", ".join(STAGE_NAMES)}; {s.action!r} is not supported yet')
        names = STAGE_NAMES[s.action]
        out += [Stage(n, index, s, tuple(avoid)) for n in names]
    return out


def next_stage(stages, index, objects, start, gripper_width, ee_position, ee_quat=None):
    """(index of the stage to work on, [what changed]) on the perceived state: done stages pass on;
    an object no longer held in a lift, carry or release (dropped on the way, or let go off
    target) sends its sub-task back to its grasp. A stage with an object not perceived is not judged
    (see lost)."""
    events = []
    while index < len(stages):
        stage = stages[index]
        if any(oid not in objects for oid in stage.object_ids):
            break
        done, note = stage.done(objects, start, gripper_width, ee_position, ee_quat)
        if done:
            events.append(f'stage {stage.describe()} done ({note})')
            index += 1
        elif stage.name != 'grasp' and not _held(objects[stage.object_id], gripper_width, ee_position):
            index = max(
                i for i in range(index) if stages[i].name == 'grasp' and stages[i].subtask_index == stage.subtask_index
            )
            events.append(
                f'{stage.object_id} is no longer held ({stage.describe()}: {note}; '
                f'gripper {gripper_width * 100:.1f} cm, '
                f'grip {np.round(_local(objects[stage.object_id], ee_position) * 100, 1).tolist()} cm from its base '
                f'(object frame)): back to {stages[index].describe()}'
            )
            break
        else:
            break
    return index, events


def lost(stages, objects, start, drop):
    """'' or why the remaining stages (stages[0] the current one) cannot be done: an object they read
    lies more than `drop` [m] below the lowest object at the start (off the table it stood on), or
    one the current sub-task reads is no longer perceived at all (pose estimation drops an object
    that left its workspace; a later sub-task's may only be hidden for now)."""
    surface = min((float(p[2]) for p, _, _ in start.values()), default=0.0)
    why = []
    for s in stages:
        for oid in s.object_ids:
            if oid not in objects and s.subtask_index == stages[0].subtask_index:
                why.append(f"{oid} is no longer perceived (off the table, or out of the cameras' workspace)")
            elif oid in objects and objects[oid][0][2] < surface - drop:
                position = ', '.join(f'{v:.2f}' for v in objects[oid][0])
                why.append(
                    f'{oid} fell off the table (now at ({position}) m, '
                    f'{(surface - objects[oid][0][2]) * 100:.0f} cm below the table surface)'
                )
    return '; '.join(dict.fromkeys(why))
