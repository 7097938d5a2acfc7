"""Placement regions for relations such as "next to the bowl", "left of the plate" or "between the
mug and the box": a free spot on the table, computed once from the perceived footprints and kept
as an offset from the reference, so that it follows the reference if that moves.

Frame (REP 103, the robot's base on the table top): x forward, y to the robot's left. "left of X"
is +y of X, "in front of X" is towards the robot (-x), "behind X" is away from it (+x). Footprints
are circles of half the larger horizontal extent, except for a pair ("side by side with the right
slipper"): beside the reference across its own heading, sides PAIR_GAP apart."""

import numpy as np

from twinloop_core.geometry import yaw_of

GAP = 0.03  # [m] between the footprints of the object and its reference
CLEARANCE = 0.005  # [m] wanted between the spot's footprint and any other object's
TIGHT = -0.015  # [m] a spot overlapping a neighbour's footprint circle by less than this is still taken
TOLERANCE = 0.04  # [m] an object this close to its spot (horizontally) is there
REACH = ((0.25, 0.80), (-0.45, 0.45))  # [m] x and y range where the arm puts objects down on the table
SIDES = {'left_of': (0.0, 1.0), 'right_of': (0.0, -1.0), 'in_front_of': (-1.0, 0.0), 'behind': (1.0, 0.0)}
PAIR_GAP = 0.03  # [m] between the sides of a pair (side_by_side: room for the fingers to open)
PAIRED = ('side_by_side',)  # relations placed against the reference's own sides, not its footprint circle
SHIFTS = (0.0, 0.02, -0.02, 0.04, -0.04, 0.06, -0.06, 0.08, -0.08)  # [m] along the side, to find a free spot
FARTHER = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)  # [m] away from the reference, likewise


class RegionError(ValueError):
    """No reachable spot satisfies the relation; the message says where it looked."""


def radius(size):
    """Radius of an object's footprint [m] (half its larger horizontal extent: exact for round things)."""
    return float(max(size[0], size[1]) / 2)


def _xy(obj):
    return np.asarray(obj[0][:2], float)


def _beside(direction, base):
    """Offsets on one side: `base` out along the direction, shifted along the side and farther out."""
    d = np.asarray(direction, float)
    across = np.array([-d[1], d[0]])
    return sorted(
        (d * (base + out) + across * shift for out in FARTHER for shift in SHIFTS), key=lambda o: np.linalg.norm(o)
    )


def _candidates(relation, obj, refs, distance):
    """Offsets from the anchor to try, best first."""
    anchor = np.mean([_xy(r) for r in refs], axis=0)
    base = radius(refs[0][2]) + radius(obj[2]) + GAP
    if relation == 'between':  # the middle of the gap between the two footprints, or beside it
        a, b = _xy(refs[0]), _xy(refs[1])
        axis = (b - a) / max(np.linalg.norm(b - a), 1e-9)
        gap = np.linalg.norm(b - a) - radius(refs[0][2]) - radius(refs[1][2])
        middle = a + axis * (radius(refs[0][2]) + gap / 2) - anchor
        across = np.array([-axis[1], axis[0]])
        return [middle + across * shift for shift in SHIFTS]
    if relation in SIDES:
        return _beside(SIDES[relation], base)
    if relation == 'side_by_side':  # a pair (slippers): across the reference's own heading, level along it
        heading = yaw_of(refs[0][1])
        along, lateral = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
        base = (refs[0][2][1] + obj[2][1]) / 2 + PAIR_GAP  # the objects' own y extents face each other
        sides = sorted((lateral, -lateral), key=lambda side: np.linalg.norm(anchor + side * base - _xy(obj)))
        return [side * base + along * shift for side in sides for shift in (0.0, 0.01, -0.01)]
    if relation in ('next_to', 'aligned_with'):  # aligned: in line across the table (same x)
        sides = SIDES.values() if relation == 'next_to' else (SIDES['left_of'], SIDES['right_of'])
        nearest = min(sides, key=lambda side: np.linalg.norm(anchor + np.multiply(side, base) - _xy(obj)))
        others = sorted(sides, key=lambda side: np.linalg.norm(anchor + np.multiply(side, base) - _xy(obj)))
        return [o for side in [nearest] + [s for s in others if s != nearest] for o in _beside(side, base)]
    if relation == 'at_distance':
        away = _xy(obj) - anchor
        norm = np.linalg.norm(away)
        direction = away / norm if norm > 1e-6 else np.array([-1.0, 0.0])
        reach = max(float(distance or 0.0), radius(refs[0][2]) + radius(obj[2]) + CLEARANCE)
        turns = np.radians([0, 20, -20, 40, -40, 60, -60, 90, -90, 135, -135, 180])
        angles = np.arctan2(direction[1], direction[0]) + turns
        return [reach * np.array([np.cos(a), np.sin(a)]) for a in angles]
    raise ValueError(f'{relation!r} is not a region relation')


def clearance(spot, object_id, objects, ignore=()):
    """Smallest gap [m] between the object's footprint at `spot` (x, y) and any other object's (inf: none)."""
    r = radius(objects[object_id][2])
    gaps = [
        np.linalg.norm(_xy(other) - spot) - r - radius(other[2])
        for oid, other in objects.items()
        if oid != object_id and oid not in ignore
    ]
    return float(min(gaps, default=np.inf))


def reachable(spot):
    """Whether (x, y) is inside REACH."""
    (x0, x1), (y0, y1) = REACH
    return bool(x0 <= spot[0] <= x1 and y0 <= spot[1] <= y1)


def placement_offset(relation, object_id, references, objects, distance=None):
    """(dx, dy) [m] from the anchor (the reference, or the midpoint of two for between) to the first
    reachable spot that satisfies the relation and is clear of every other object; failing that,
    the reachable spot with the most room if it overlaps no neighbour by more than TIGHT; otherwise
    RegionError. objects: {id: (position, quat, size)}."""
    obj, refs = objects[object_id], [objects[r] for r in references]
    anchor = np.mean([_xy(r) for r in refs], axis=0)
    ignore = references if relation in PAIRED else ()  # a pair's spacing comes from its own sides
    spots = [(o, clearance(anchor + o, object_id, objects, ignore)) for o in _candidates(relation, obj, refs, distance)]
    spots = [(o, room) for o, room in spots if reachable(anchor + o)]
    where = f'{relation.replace("_", " ")} {" and ".join(references)}'
    if not spots:
        raise RegionError(f'no spot {where} for {object_id} is within reach on the table')
    best = next((o for o, room in spots if room >= CLEARANCE), None)
    if best is None:
        best, room = max(spots, key=lambda s: s[1])
        if room < TIGHT:
            raise RegionError(
                f'no free spot on the table {where} for {object_id} (at best {-100 * room:.0f} cm too tight)'
            )
    return tuple(round(float(v), 4) for v in best)


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
