"""Whether sub-tasks are done, judged on object states {id: (position, quat wxyz, size xyz)}:
picked objects raised, drawers pulled open, placed ones inside their destination's footprint or at their spot beside
it (region relations), pushed ones beside their destination (or aside when they have none), and
reoriented ones with their longest side upright (on their destination's top when they have one), and
objects the task must not move left where they were. Used on perceived state by the orchestrator and on ground truth by
evaluations. A task of a benchmark may add stricter checks on ground truth (CHECKS: a ring
threaded down a post, not resting on its top; a pair side by side, headings and toes in line; an object
standing on another's top; one stood upright)."""

import numpy as np

from twinloop_core.geometry import pull_axis, quat_matrix, wrap_angle, yaw_of
from twinloop_core.regions import radius, region_done
from twinloop_core.task import REGION_RELATIONS, SubTask

UNMOVED = 0.02  # [m] a do-not-move object displaced less than this is left alone
PUSHED_ASIDE = 0.05  # [m] a push without a destination moves the object at least this far, on its support
PUSHED_BESIDE = 0.05  # [m] largest gap between footprints of a pushed object and its destination
OPENED = 0.10  # [m] a drawer pulled out this far (along its own -x axis) is open
UPRIGHT = np.cos(np.radians(20))  # a reoriented object's longest side within 20 degrees of vertical stands upright


def _subtask(s):
    return SubTask(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()}) if isinstance(s, dict) else s


def judge_subtask(s, before, after):
    """(done, note) for one sub-task."""
    (p0, _, _), (p1, _, size) = before[s.object_id], after[s.object_id]
    if s.action == 'pick':
        return p1[2] - p0[2] > 0.05, f'{s.object_id} raised {100 * (p1[2] - p0[2]):.1f} cm'
    if s.action == 'open':  # along the axis as last perceived
        out = float(np.dot(np.subtract(p1, p0), pull_axis(after[s.object_id][1])))
        return out >= OPENED, f'{s.object_id} pulled out {100 * out:.1f} cm'
    if s.relation in REGION_RELATIONS:
        return region_done(s, before, after)
    if s.action == 'reorient':
        return upright(after, s.object_id, s.destination_id)
    if s.action == 'push' and not s.destination_id:
        moved = float(np.hypot(p1[0] - p0[0], p1[1] - p0[1]))
        return moved >= PUSHED_ASIDE and abs(p1[2] - p0[2]) < 0.02, f'{s.object_id} pushed {100 * moved:.1f} cm aside'
    d, _, d_size = after[s.destination_id]
    if s.action == 'pour':  # the container over the destination (what it held lands where a task's CHECKS look)
        centre = np.add(p1, quat_matrix(after[s.object_id][1]) @ (0.0, 0.0, size[2] / 2))
        off = float(np.hypot(centre[0] - d[0], centre[1] - d[1]))
        return off < max(d_size[0], d_size[1]) / 2, f'{s.object_id} {100 * off:.1f} cm from over {s.destination_id}'
    horizontal = float(np.hypot(p1[0] - d[0], p1[1] - d[1]))
    note = f'{s.object_id} {100 * horizontal:.1f} cm from {s.destination_id}'
    if s.action == 'push':
        return horizontal < radius(size) + radius(d_size) + PUSHED_BESIDE and abs(p1[2] - p0[2]) < 0.02, note
    return horizontal < max(d_size[0], d_size[1]) / 2 and p1[2] < d[2] + d_size[2] + 0.05, note


def upright(after, object_id, destination_id=''):
    """(done, note): object_id stands with its longest side upright, resting on destination_id's top if given."""
    p, q, size = after[object_id]
    rotation = quat_matrix(q)
    up = abs(float(rotation[2, int(np.argmax(size))]))
    note = f'{object_id} longest side {np.degrees(np.arccos(min(up, 1.0))):.0f} deg from vertical'
    if not destination_id:
        return up >= UPRIGHT, note
    d, _, d_size = after[destination_id]
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (0.0, 1.0)]) * size
    lowest = float(p[2] + (corners @ rotation.T)[:, 2].min())  # the object frame's origin: its bottom centre
    centre = np.asarray(p, float) + rotation @ (0.0, 0.0, size[2] / 2)
    horizontal = float(np.hypot(centre[0] - d[0], centre[1] - d[1]))
    on = horizontal < max(d_size[0], d_size[1]) / 2 and abs(lowest - (d[2] + d_size[2])) < 0.03
    return up >= UPRIGHT and on, f'{note}, {100 * horizontal:.1f} cm from {destination_id}'


def judge(subtasks, before, after, do_not_move=()):
    """(done, detail) for every sub-task (SubTasks or their dicts) between two object states; any
    do-not-move object displaced more than UNMOVED fails the task."""
    notes = []
    for s in map(_subtask, subtasks):
        ok, note = judge_subtask(s, before, after)
        notes.append(note)
        if not ok:
            return False, 'not done: ' + '; '.join(notes)
    for oid in do_not_move:
        moved = float(np.linalg.norm(np.subtract(after[oid][0], before[oid][0])))
        if moved > UNMOVED:
            return False, f'not done: {oid} was not to be moved and moved {100 * moved:.1f} cm; ' + '; '.join(notes)
    return True, 'done: ' + '; '.join(notes)


def threaded(after, object_id, destination_id):
    """(done, note): object_id hangs around destination_id (a ring down a post): its centre inside the
    destination's footprint and its base below the destination's mid height."""
    p, _, _ = after[object_id]
    d, _, d_size = after[destination_id]
    horizontal = float(np.hypot(p[0] - d[0], p[1] - d[1]))
    low = p[2] - d[2] < d_size[2] / 2
    return horizontal < max(d_size[0], d_size[1]) / 2 and low, (
        f'{object_id} {100 * (p[2] - d[2]):.1f} cm above the foot of {destination_id} '
        f'({"down it" if low else "not down it"}), {100 * horizontal:.1f} cm off its axis'
    )


def side_by_side(after, object_id, reference_id, max_turn_deg=20.0, max_stagger=0.03, max_gap=0.06):
    """(done, note): a pair side by side (slippers): the same heading within max_turn_deg, level along
    it (toes in line) within max_stagger [m], beside each other with at most max_gap [m] between them."""
    p, quat, size = after[object_id]
    r, reference_quat, reference_size = after[reference_id]
    heading = yaw_of(reference_quat)
    turn = float(np.degrees(abs(wrap_angle(yaw_of(quat) - heading))))
    offset = np.subtract(p[:2], r[:2])
    along = float(offset @ (np.cos(heading), np.sin(heading)))
    gap = abs(float(offset @ (-np.sin(heading), np.cos(heading)))) - (size[1] + reference_size[1]) / 2
    ok = turn < max_turn_deg and abs(along) < max_stagger and -0.01 < gap < max_gap
    note = (
        f'{object_id} turned {turn:.0f} deg from {reference_id}, {100 * along:+.1f} cm along it, gap {100 * gap:.1f} cm'
    )
    return ok, note


def on_top_of(after, object_id, destination_id, resting=0.02):
    """(done, note): object_id stands on destination_id's top: its centre over the destination's footprint
    (in the destination's frame) and its base within `resting` [m] of the top (the object a benchmark
    names, whatever the instruction was parsed into)."""
    p, _, _ = after[object_id]
    d, d_quat, d_size = after[destination_id]
    local = quat_matrix(d_quat).T @ np.subtract(p, d)
    over = bool(np.all(np.abs(local[:2]) <= np.asarray(d_size[:2]) / 2))
    height = float(p[2] - (d[2] + d_size[2]))
    ok = over and abs(height) < resting
    where = 'over' if over else 'not over'
    return ok, f'{object_id} {where} {destination_id}, its base {100 * height:+.1f} cm from the top'


def inside(after, object_id, destination_id):
    """(done, note): object_id went down into destination_id (a block through the hole of a shape
    sorter): its centre inside the destination's footprint (in its frame) and its top below the rim."""
    p, _, size = after[object_id]
    d, d_quat, d_size = after[destination_id]
    local = quat_matrix(d_quat).T @ np.subtract(p, d)
    within = bool(np.all(np.abs(local[:2]) <= np.asarray(d_size[:2]) / 2))
    below = float(p[2] + size[2] - (d[2] + d_size[2]))
    ok = within and below < 0.0
    return (
        ok,
        f'{object_id} {"within" if within else "outside"} {destination_id}, its top {100 * below:+.1f} cm from the rim',
    )


def poured(after, contents, destination_id, share=0.5):
    """(done, note): at least `share` of the objects whose ids start with `contents` (a cup's marbles) lie in
    destination_id: over its footprint (in its frame) and below its rim."""
    d, d_quat, d_size = after[destination_id]
    items = [oid for oid in after if oid.startswith(contents)]
    if not items:
        raise ValueError(f'no object ids start with {contents!r}')
    local = [quat_matrix(d_quat).T @ np.subtract(after[oid][0], d) for oid in items]
    landed = sum(bool(np.all(np.abs(p[:2]) <= np.asarray(d_size[:2]) / 2) and p[2] < d_size[2]) for p in local)
    return landed >= share * len(items), f'{landed} of {len(items)} {contents} in {destination_id}'


CHECKS = {  # name -> check(after, **args)
    'threaded': threaded,
    'side_by_side': side_by_side,
    'on_top_of': on_top_of,
    'inside': inside,
    'poured': poured,
    'upright': upright,
}


def extra_checks(checks, after):
    """(done, detail) of a benchmark task's checks [{name: {argument: value}}] on a state; ValueError
    for an unknown check."""
    notes = []
    for item in checks:
        ((name, arguments),) = item.items()
        if name not in CHECKS:
            raise ValueError(f'unknown check {name!r}; known: {sorted(CHECKS)}')
        ok, note = CHECKS[name](after, **arguments)
        notes.append(note)
        if not ok:
            return False, 'not done: ' + '; '.join(notes)
    return True, '; '.join(notes)
