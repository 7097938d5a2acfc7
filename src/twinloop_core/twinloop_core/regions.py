"""Placement regions for relations such as "next to the bowl", "left of the plate" or "between the
mug and the box": a free spot on the table, computed once from the perceived footprints and kept
as an offset from the reference, so that it follows the reference if that moves.

Frame (REP 103, the robot's base on the table top): x forward, y to the robot's left. "left of X"
is +y of X, "in front of X" is towards the robot (-x), "behind X" is away from it (+x). Footprints
are circles around the bounding box (any yaw), so a spot never touches its neighbours."""

import numpy as np

GAP = 0.03  # [m] between the footprints of the object and its reference
CLEARANCE = 0.005  # [m] between the spot's footprint and any other object's
TOLERANCE = 0.04  # [m] an object this close to its spot (horizontally) is there
REACH = ((0.30, 0.75), (-0.40, 0.40))  # [m] x and y range where the arm puts objects down on the table
SIDES = {'left_of': (0.0, 1.0), 'right_of': (0.0, -1.0), 'in_front_of': (-1.0, 0.0), 'behind': (1.0, 0.0)}


class RegionError(ValueError):
    """No free, reachable spot satisfies the relation; the message says where it looked."""


def radius(size):
    """Radius of the circle around an object's footprint [m]."""
    return float(np.hypot(size[0], size[1]) / 2)


def _xy(obj):
    return np.asarray(obj[0][:2], float)


def _candidates(relation, obj, refs, distance):
    """Offsets from the anchor to try, best first."""
    anchor = np.mean([_xy(r) for r in refs], axis=0)
    beside = radius(refs[0][2]) + radius(obj[2]) + GAP
    nearest_first = lambda offsets: sorted(offsets, key=lambda o: np.linalg.norm(anchor + o - _xy(obj)))  # noqa: E731
    if relation == 'between':
        return [np.zeros(2)]
    if relation in SIDES:
        return [np.multiply(SIDES[relation], beside)]
    if relation == 'next_to':
        return nearest_first([np.multiply(side, beside) for side in SIDES.values()])
    if relation == 'aligned_with':  # in line with it across the table (same x), on the nearer side
        return nearest_first([np.multiply(SIDES[s], beside) for s in ('left_of', 'right_of')])
    if relation == 'at_distance':
        away = _xy(obj) - anchor
        norm = np.linalg.norm(away)
        direction = away / norm if norm > 1e-6 else np.array([-1.0, 0.0])
        reach = max(float(distance or 0.0), radius(refs[0][2]) + radius(obj[2]) + CLEARANCE)
        turns = [0, 30, -30, 60, -60, 90, -90, 135, -135, 180]
        return [
            reach * np.array([np.cos(a), np.sin(a)]) for a in np.arctan2(direction[1], direction[0]) + np.radians(turns)
        ]
    raise ValueError(f'{relation!r} is not a region relation')


def free(spot, object_id, objects, ignore=()):
    """Whether the object's footprint at `spot` (x, y) is inside REACH and clear of every other object."""
    (x0, x1), (y0, y1) = REACH
    if not (x0 <= spot[0] <= x1 and y0 <= spot[1] <= y1):
        return False
    r = radius(objects[object_id][2])
    return all(
        np.linalg.norm(_xy(other) - spot) >= r + radius(other[2]) + CLEARANCE
        for oid, other in objects.items()
        if oid != object_id and oid not in ignore
    )


def placement_offset(relation, object_id, references, objects, distance=None):
    """(dx, dy) [m] from the anchor (the reference, or the midpoint of two for between) to the first
    free, reachable spot that satisfies the relation; RegionError when there is none.
    objects: {id: (position, quat, size)}."""
    obj, refs = objects[object_id], [objects[r] for r in references]
    anchor = np.mean([_xy(r) for r in refs], axis=0)
    ignore = tuple(references) if relation == 'between' else ()
    if relation == 'between':
        half = np.linalg.norm(_xy(refs[0]) - _xy(refs[1])) / 2
        if half < max(radius(r[2]) for r in refs) + radius(obj[2]) + CLEARANCE:
            raise RegionError(f'no room for {object_id} between {references[0]} and {references[1]}')
    for offset in _candidates(relation, obj, refs, distance):
        if free(anchor + offset, object_id, objects, ignore):
            return tuple(round(float(v), 4) for v in offset)
    where = ' and '.join(references)
    raise RegionError(f'no free spot on the table {relation.replace("_", " ")} {where} for {object_id}')


def region_target(subtask, objects):
    """The (x, y) spot of a region sub-task on the current object states."""
    references = [subtask.destination_id] + ([subtask.reference2_id] if subtask.reference2_id else [])
    return np.mean([_xy(objects[r]) for r in references], axis=0) + np.asarray(subtask.offset, float)


def region_done(subtask, before, after):
    """(done, note): the object within its tolerance of the spot, resting on what it stood on before."""
    target = region_target(subtask, after)
    p0, p1 = np.asarray(before[subtask.object_id][0], float), np.asarray(after[subtask.object_id][0], float)
    off = float(np.linalg.norm(p1[:2] - target))
    resting = abs(p1[2] - p0[2]) < 0.02
    ok = off < (subtask.tolerance or TOLERANCE) and resting
    return ok, f'{subtask.object_id} {100 * off:.1f} cm from its spot {subtask.relation} {subtask.destination_id}' + (
        '' if resting else f' ({100 * (p1[2] - p0[2]):+.1f} cm off the table)'
    )
