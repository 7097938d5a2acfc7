"""The template writer: the structured task (twinloop_core.task) turned into the code a VLM writes in
IKER (shared/seeds/002, Sec. III-A and Appendix B), without a VLM.

One sub-task is one stage: `write_code(task, keypoints, objects, stage)` returns the source of
`get_interaction_data(keypoint_coordinates)` for sub-task `stage`, in the sandbox's format
(twinloop_iker.sandbox: object_id, grasp, keypoint_indices, target_positions, done, plan), and
after the last stage of a multi-step task the code that returns done = True. Like the paper's VLM
code, the targets are computed from keypoints in the code: the moving object's keypoints are
translated as a set (its layout, hence its orientation, is kept; a reorientation turns the set
about the object's centre), and where it goes is measured from the keypoints of the objects that
stay put. The object geometry a keypoint set does not show (where an object's base or top lies
relative to its keypoints) comes from the perceived object states {id: (position, quat wxyz,
size xyz)}, written into the code as constants. An object with no keypoint drawn is referred to
by its perceived position.

- place / stack / sort in, on: onto the destination's top (on), or onto its floor (in: FLOOR above
  its base), at the destination's centre; on a top wide enough for several things, at a free spot
  (clear of what already stands there and of the hand, as near the arm as the top allows along x:
  a rack's far edge is at the arm's reach), a left item left of its right counterpart (the paper's
  prompt: "a left shoe should be placed on the left of the right shoe"); an item of a pair is turned
  about z, the shorter way, so its long side lies along x, across the pair's row (a pair of shoes
  side by side takes 2 widths of a rack, not 2 lengths).
- region relations (next to, left of, between, aligned with, at a distance, ...): at the spot of
  twinloop_core.regions (the sub-task's offset from its reference, computed once by the parser;
  computed here when the task has none), on the surface the object stands on.
- push: grasp False; towards a destination: beside it on the line from it to the object; to a
  region spot as above; without a destination: aside, along y on what it stands on.
- pick: raised by LIFT. reorient: its longest side turned upright, in place or on the destination.
- open / close have no keypoint form: TemplateError.

Every result is labelled LABEL: a template is not a VLM and results must say so.
"""

import re

import numpy as np

from twinloop_core.geometry import quat_matrix, wrap_angle, z_rotation
from twinloop_core.gripper import HAND_LENGTH, HAND_WIDTH
from twinloop_core.regions import GAP, REACH, RegionError, placement_offset, radius

LABEL = 'template writer (not a VLM)'
LIFT = 0.1  # [m] a pick raises the object's keypoints this much
FLOOR = 0.01  # [m] 'in': the object's base this far above the container's base (its floor)
EDGE_MARGIN = 0.01  # [m] an object put on a top stays this far inside its edges
CLEARANCE = 0.01  # [m] between an object put on a top and what already stands there
PAIR_GAP = 0.02  # [m] between the two items of a pair (left and right shoe)
STEP = 0.005  # [m] spacing of the spots tried on a top or when pushing aside
RESTING = 0.02  # [m] an object whose lowest point is this close to a top rests on it
SAFE = re.compile(r'[^A-Za-z0-9_ .,:;()+-]')  # characters kept in docstrings and plans


class TemplateError(ValueError):
    """The stage has no template (open, close, a place without a destination, no room); the message says why."""


def _corners(obj, rotation=np.eye(3)):
    """The 8 corners of an object's bounding box in the world (frame at its bottom face's centre),
    turned by `rotation` about the box's centre."""
    p, q, size = obj
    sx, sy, sz = (float(s) for s in size)
    local = np.array([[x, y, z] for x in (-sx / 2, sx / 2) for y in (-sy / 2, sy / 2) for z in (0.0, sz)])
    world = local @ quat_matrix(q).T + np.asarray(p, float)
    middle = world.mean(axis=0)
    return (world - middle) @ rotation.T + middle


def _bounds(obj, rotation=np.eye(3)):
    """World axis-aligned bounds (low (3,), high (3,)) of an object's bounding box."""
    corners = _corners(obj, rotation)
    return corners.min(axis=0), corners.max(axis=0)


def _text(value):
    """A string safe inside a docstring or a string literal of generated code."""
    return SAFE.sub('', str(value))


def _vector(v):
    """Source of a numpy vector, rounded to 0.1 mm."""
    return 'np.array([' + ', '.join(repr(round(float(x), 4) + 0.0) for x in v) + '])'


class _Code:
    """Expressions for object geometry measured from the keypoints in the code."""

    def __init__(self, keypoints, objects):
        self.keypoints, self.objects = keypoints, objects
        self.numbers = {}
        for number, (oid, _) in sorted(keypoints.items()):
            self.numbers.setdefault(oid, []).append(number)

    def point(self, object_id, world, what, name=None):
        """(source, comment) of a world point of an object: its keypoints' mean plus a constant, or a
        constant where none of its keypoints is drawn; name: a variable holding its keypoint numbers."""
        numbers = self.numbers.get(object_id)
        if not numbers:
            return _vector(world), f'{what} (no keypoint of {object_id} is drawn: its perceived position)'
        mean = np.mean([self.keypoints[n][1] for n in numbers], axis=0)
        return f'centroid(keypoint_coordinates, {name or numbers}) + {_vector(np.asarray(world) - mean)}', what

    def base(self, object_id):
        """An object's frame position (x, y) at the height of its lowest point."""
        p, _, _ = self.objects[object_id]
        low, _ = _bounds(self.objects[object_id])
        return np.array([p[0], p[1], low[2]])


def _side(object_id):
    """+1 for a left item (it goes to +y, the robot's left), -1 for a right one, 0 otherwise."""
    words = set(re.split(r'[_\s]+', object_id.lower()))
    return 1 if 'left' in words else -1 if 'right' in words else 0


def _counterpart(object_id):
    """The id of the other item of a pair: left_shoe <-> right_shoe."""
    swap = {'left': 'right', 'right': 'left'}
    return '_'.join(swap.get(part, part) for part in object_id.split('_'))


def _resting_on(support_id, objects, exclude):
    """Ids of the objects whose lowest point lies on the support's top, over its footprint."""
    low, high = _bounds(objects[support_id])
    out = []
    for oid, obj in objects.items():
        if oid in exclude or oid == support_id:
            continue
        olow, ohigh = _bounds(obj)
        middle = (olow + ohigh) / 2
        if abs(olow[2] - high[2]) < RESTING and np.all(low[:2] <= middle[:2]) and np.all(middle[:2] <= high[:2]):
            out.append(oid)
    return out


def _support(object_id, objects):
    """The object this one stands on ('' for the table)."""
    for oid in objects:
        if oid != object_id and object_id in _resting_on(oid, objects, ()):
            return oid
    return ''


def _gap(centre_a, half_a, centre_b, half_b):
    """Separation of two axis-aligned footprints [m] (negative: they overlap)."""
    return float(np.max(np.abs(np.subtract(centre_a, centre_b)) - np.add(half_a, half_b)))


def _free_stretch(low, high, intervals):
    """(low, high) of the longest free stretch of [low, high] outside the given (low, high) intervals."""
    edges, start, best = sorted(intervals), low, (0.0, ((low + high) / 2,) * 2)
    for a, b in edges + [(high, high)]:
        if a - start > best[0]:
            best = (a - start, (start, a))
        start = max(start, b)
    return best[1]


def _obstacles(object_id, destination_id, objects, half, height):
    """Footprints (centre, half extents) on the destination's top a moving object (half extents
    `half`, `height` tall) keeps CLEARANCE from: one taller than the object will be there grown by how
    far the hand holding it reaches past it (its body lies along the object's narrower side, across
    which the fingers close; it passes about 1 cm over the object's own top)."""
    top = _bounds(objects[destination_id])[1][2] + height
    narrow = int(np.argmin(half))
    reach = np.array([HAND_LENGTH / 2, HAND_WIDTH / 2] if narrow == 0 else [HAND_WIDTH / 2, HAND_LENGTH / 2])
    overhang = np.maximum(reach - np.asarray(half), 0.0)
    out = []
    for other in _resting_on(destination_id, objects, (object_id,)):
        low, high = _bounds(objects[other])
        out.append(
            ((low[:2] + high[:2]) / 2, (high[:2] - low[:2]) / 2 + (overhang if high[2] > top + CLEARANCE else 0.0))
        )
    return out


def _spot_on_top(object_id, destination_id, objects, half, height):
    """(x, y) of the middle of the moving object's footprint (half extents `half`, `height` tall) on
    the destination's top: the free spot nearest the preferred one (as near the arm as the top allows
    along x, the middle along y; the first of a pair at its side's end of the longest free stretch, the second
    beside it); TemplateError when none is free."""
    low, high = _bounds(objects[destination_id])
    others = _obstacles(object_id, destination_id, objects, half, height)
    room = np.maximum((high[:2] - low[:2]) / 2 - np.asarray(half) - EDGE_MARGIN, 0.0)  # how far off the middle
    axes = [(low[i] + high[i]) / 2 + STEP * np.arange(-(room[i] // STEP), room[i] // STEP + 1) for i in range(2)]
    middle = (low[:2] + high[:2]) / 2
    preferred = np.array([np.clip(0.0, middle[0] - room[0], middle[0] + room[0]), middle[1]])  # near the arm's base
    side = _side(object_id)
    partner = _counterpart(object_id)
    if side and partner in _resting_on(destination_id, objects, (object_id,)):
        plow, phigh = _bounds(objects[partner])
        preferred = np.array([(plow[0] + phigh[0]) / 2, (plow[1] + phigh[1]) / 2])
        preferred[1] += side * ((phigh[1] - plow[1]) / 2 + half[1] + PAIR_GAP)
    elif side:  # the first of a pair at the end of the longest free stretch on its side: the rest is its partner's
        stretch = _free_stretch(low[1], high[1], [(c[1] - h[1], c[1] + h[1]) for c, h in others])
        preferred[1] = stretch[int(side > 0)]
    spots = [np.array([x, y]) for x in axes[0] for y in axes[1]]
    spots = [s for s in spots if all(_gap(s, half, c, h) >= CLEARANCE for c, h in others)]
    if not spots:
        raise TemplateError(f'no free spot on the top of {destination_id} for {object_id}')
    return min(spots, key=lambda s: float(np.linalg.norm(s - preferred))), float(high[2])


def _aside(object_id, objects):
    """Shift (dx, dy) pushing an object aside along y: as far as its own width plus GAP, on what it
    stands on (a top, or the table within reach) and clear of everything else; the side with more
    room (ties: -y)."""
    low, high = _bounds(objects[object_id])
    centre, half = (low[:2] + high[:2]) / 2, (high[:2] - low[:2]) / 2
    support = _support(object_id, objects)
    if support:
        slow, shigh = _bounds(objects[support])
        area = (slow[:2] + half + EDGE_MARGIN, shigh[:2] - half - EDGE_MARGIN)
    else:
        area = (np.array([REACH[0][0], REACH[1][0]]), np.array([REACH[0][1], REACH[1][1]]))
    others = [_bounds(o) for oid, o in objects.items() if oid not in (object_id, support)]
    others = [((a[:2] + b[:2]) / 2, (b[:2] - a[:2]) / 2) for a, b in others if b[2] > low[2] + 0.005]
    best = (0.0, -1.0)
    for direction in (-1.0, 1.0):
        reach = 0.0
        for step in np.arange(STEP, 2 * half[1] + GAP + STEP / 2, STEP):
            spot = centre + (0.0, direction * step)
            inside = np.all(area[0] - 1e-9 <= spot) and np.all(spot <= area[1] + 1e-9)
            if not inside or any(_gap(spot, half, c, h) < CLEARANCE for c, h in others):
                break
            reach = float(step)
        if reach > best[0]:
            best = (reach, direction)
    if best[0] < 2 * STEP:
        raise TemplateError(f'no room to push {object_id} aside')
    return np.array([0.0, best[1] * best[0]])


def _upright(obj):
    """Rotation (3x3) turning an object's longest side upright (identity when it already is): the end that is
    higher goes up, of a flat object the end farther from the robot's base (x = y = 0), so that a hand holding
    it from above turns its fingertips away from the robot, as an arm reaches best."""
    p, q, size = obj
    axis = quat_matrix(q)[:, int(np.argmax(size))]
    radial = np.asarray(p[:2], float) / max(float(np.linalg.norm(p[:2])), 1e-9)
    axis = axis if axis[2] + float(np.dot(axis[:2], radial)) >= 0 else -axis
    turn = np.cross(axis, (0.0, 0.0, 1.0))
    sine, cosine = np.linalg.norm(turn), float(axis[2])
    if sine < 1e-6:
        return np.eye(3)
    k = turn / sine
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sine * skew + (1 - cosine) * skew @ skew


def _across_the_row(obj):
    """Rotation (3x3) about z laying an item of a pair with its long side along x, across the row the
    pair forms along y: the shorter of the two turns (at most a quarter turn)."""
    _, q, size = obj
    axis = quat_matrix(q)[:, int(np.argmax(size[:2]))]
    return quat_matrix(z_rotation(-wrap_angle(2 * np.arctan2(axis[1], axis[0])) / 2))


def _stage(code, task, index, objects):
    """(body lines, grasp, plan of this stage) of get_interaction_data for sub-task `index`."""
    s = task.subtasks[index]
    oid = s.object_id
    if s.action in ('open', 'close'):
        raise TemplateError(f'{s.action} has no keypoint template: the keypoints of {oid} do not say how it opens')
    if s.action == 'place' and not s.destination_id:
        raise TemplateError(f'place {oid} has no destination')
    if not code.numbers.get(oid):
        raise TemplateError(f'no keypoint of {oid} is drawn in the query image: it cannot be moved by its keypoints')
    moving = code.numbers[oid]
    lines = [f'moving = {moving}  # the keypoints of {oid}']
    grasp = s.action != 'push'
    if s.action == 'reorient':
        return lines + _turned(code, s, objects, _upright(objects[oid]), 'its longest side turned upright'), grasp
    if s.action == 'place' and s.relation == 'on' and _side(oid):
        turn = _across_the_row(objects[oid])
        return lines + _turned(code, s, objects, turn, 'its long side across the row of the pair'), grasp
    base_src, base_note = code.point(oid, code.base(oid), f"{oid}'s base: its position, at its lowest point", 'moving')
    lines.append(f'base = {base_src}  # {base_note}')
    if s.action == 'pick':
        lines.append(f'shift = np.array([0.0, 0.0, {LIFT}])  # raised {100 * LIFT:.0f} cm')
    elif s.is_region:
        lines += _region(code, s, objects)
    elif s.action == 'push' and not s.destination_id:
        shift = _aside(oid, objects)
        lines.append(f'shift = {_vector([*shift, 0.0])}  # aside along y, staying on what it stands on')
    elif s.action == 'push' or s.relation == 'towards':
        lines += _beside(code, s, objects)
    else:
        lines += _onto(code, s, objects)
    lines.append('target_positions = [(keypoint_coordinates[i] + shift).tolist() for i in moving]')
    return lines, grasp


def _region(code, s, objects):
    """Lines computing `shift` to the region spot (twinloop_core.regions) on the surface the object stands on."""
    references = [s.destination_id] + ([s.reference2_id] if s.reference2_id else [])
    offset = s.offset
    if not offset:
        try:
            offset = placement_offset(s.relation, s.object_id, references, objects)
        except RegionError as error:
            raise TemplateError(str(error)) from None
    lines = []
    for i, ref in enumerate(references):
        p = objects[ref][0]
        src, note = code.point(ref, (p[0], p[1], code.base(ref)[2]), f"{ref}'s position")
        lines.append(f'reference{i + 1} = {src}  # {note}')
    anchor = 'reference1' if len(references) == 1 else '(reference1 + reference2) / 2'
    where = f'{s.relation.replace("_", " ")} {" and ".join(references)}'
    lines.append(f'spot = {anchor} + {_vector([*offset, 0.0])}  # {where}: the offset of twinloop_core.regions')
    lines.append('shift = np.array([spot[0] - base[0], spot[1] - base[1], 0.0])  # on the surface it stands on')
    return lines


def _beside(code, s, objects):
    """Lines computing `shift` to beside the destination, on the line from it to the object."""
    d = s.destination_id
    p = objects[d][0]
    src, note = code.point(d, (p[0], p[1], code.base(d)[2]), f"{d}'s position")
    reach = radius(objects[s.object_id][2]) + radius(objects[d][2]) + GAP
    return [
        f'destination = {src}  # {note}',
        'away = np.array([base[0] - destination[0], base[1] - destination[1], 0.0])',
        f'spot = destination + away / np.linalg.norm(away) * {round(reach, 4)}  # footprints {100 * GAP:.0f} cm apart',
        'shift = np.array([spot[0] - base[0], spot[1] - base[1], 0.0])  # along the table',
    ]


def _onto(code, s, objects):
    """Lines computing `shift` onto the destination: its floor (in) or a free spot on its top (on)."""
    oid, d = s.object_id, s.destination_id
    low, high = _bounds(objects[d])
    if s.relation == 'in' or not s.relation:
        p = objects[d][0]
        spot = (p[0], p[1], low[2] + min(FLOOR, high[2] - low[2]))
        what = f'the middle of the floor of {d}'
    else:
        olow, ohigh = _bounds(objects[oid])
        middle, top = _spot_on_top(oid, d, objects, (ohigh[:2] - olow[:2]) / 2, ohigh[2] - olow[2])
        p = objects[oid][0]
        spot = (middle[0] - (olow[0] + ohigh[0]) / 2 + p[0], middle[1] - (olow[1] + ohigh[1]) / 2 + p[1], top)
        what = f'a free spot on the top of {d}'
    src, note = code.point(d, spot, what)
    return [f'spot = {src}  # {note}', 'shift = spot - base']


def _turned(code, s, objects, rotation, why):
    """Lines turning the keypoints by `rotation` about the object's centre: in place (standing on what
    it stands on) or onto a free spot of the destination's top."""
    oid, obj = s.object_id, objects[s.object_id]
    low, high = _bounds(obj)
    middle = (low + high) / 2
    new_low, new_high = _bounds(obj, rotation)
    half = (new_high - new_low) / 2
    if s.destination_id:
        xy, top = _spot_on_top(oid, s.destination_id, objects, half[:2], 2 * half[2])
        pair = {1: ' (a left item left of the right one)', -1: ' (a right item right of the left one)'}
        where = f'a free spot on the top of {s.destination_id}' + pair.get(_side(oid), '')
        src, note = code.point(s.destination_id, (*xy, top + half[2]), where)
        goal = [f'new_centre = {src}  # {note}']
    else:
        lift = low[2] + half[2] - middle[2]
        goal = [f'new_centre = centre + np.array([0.0, 0.0, {round(float(lift), 4) + 0.0}])  # standing where it lies']
    centre_src, centre_note = code.point(oid, middle, f"{oid}'s centre", 'moving')
    rows = ', '.join('[' + ', '.join(repr(round(float(v), 4) + 0.0) for v in row) + ']' for row in rotation)
    return [
        f'centre = {centre_src}  # {centre_note}',
        f'rotation = np.array([{rows}])  # {why}',
        *goal,
        'target_positions = [',
        '    (np.dot(rotation, keypoint_coordinates[i] - centre) + new_centre).tolist() for i in moving',
        ']',
    ]


def plan_text(task):
    """The overall plan: the sub-tasks, numbered."""
    return ' '.join(f'{i + 1}. {_text(s.describe())}.' for i, s in enumerate(task.subtasks))


def write_code(task, keypoints, objects, stage=0, multi_step=None):
    """Source of get_interaction_data for sub-task `stage` of a TaskSpec; past the last stage of a
    multi-step task, the code returning done = True.

    keypoints: number -> (object id, (x, y, z)), the keypoints drawn in the query image;
    objects: perceived states {id: (position, quat wxyz, size xyz)}; multi_step: default when the
    task has more than one sub-task. TemplateError when the stage has no template.
    """
    multi_step = len(task.subtasks) > 1 if multi_step is None else multi_step
    plan = plan_text(task)
    header = f'"""Written by the {LABEL} from the structured task. Plan: {plan}"""\n\n\n'
    if stage >= len(task.subtasks):
        if not multi_step:
            raise TemplateError(f'stage {stage + 1}: the task has {len(task.subtasks)} sub-task(s)')
        done = f'all {len(task.subtasks)} stages done. {plan}'
        return (
            header
            + 'def get_interaction_data(keypoint_coordinates):\n'
            + f'    """{done}"""\n'
            + f"    return {{'done': True, 'plan': {done!r}}}\n"
        )
    s = task.subtasks[stage]
    body, grasp = _stage(_Code(keypoints, objects), task, stage, objects)
    current = f'Stage {stage + 1} of {len(task.subtasks)}: {_text(s.describe())}'
    result = [
        'return {',
        f"    'object_id': {s.object_id!r},",
        f"    'grasp': {grasp},",
        "    'keypoint_indices': moving,",
        "    'target_positions': target_positions,",
        "    'done': False,",
        f"    'plan': {(plan + ' ' + current + '.')!r},",
        '}',
    ]
    lines = [f'"""{current} ({"grasp and place" if grasp else "push"})."""', *body, *result]
    return (
        header
        + 'def centroid(keypoint_coordinates, indices):\n'
        + '    """The mean position of these keypoints."""\n'
        + '    return np.mean(np.array([keypoint_coordinates[i] for i in indices]), axis=0)\n\n\n'
        + 'def get_interaction_data(keypoint_coordinates):\n'
        + ''.join(f'    {line}\n' for line in lines)
    )
