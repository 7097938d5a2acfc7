"""A via point for a push whose straight way would drive the object into another one: the keypoint
twin plans with the pushed object alone, so the engine first pushes to a point beside what is in
the way when the straight way is not clear, and the next iteration pushes on from there.

Footprints are oriented rectangles on the table (x, y, yaw, size x y), swept along the way with
the yaw turning linearly from the object's to the target's; they overlap when no separating axis
lies between them."""

import math

import numpy as np

SWEEP_STEP = 0.01  # [m] between the footprints checked along a way
END_SKIP = (
    0.03  # [m] the way's first and last stretch are not checked (touching at the start; the target is the writer's)
)
ANGLES = 16  # candidate via points around the blocking object
RINGS = (0.0, 0.04, 0.08)  # [m] ... at these distances beyond the two footprints' radii plus the clearance


def corners(xy, yaw, size):
    """(4, 2) corners of a rectangle of size (x, y) centred at xy, turned by yaw."""
    c, s = math.cos(yaw), math.sin(yaw)
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * np.asarray(size[:2], float) / 2
    return np.asarray(xy[:2], float) + half @ np.array([[c, s], [-s, c]])


def overlap(a, b):
    """Whether two convex polygons (n, 2) overlap (the separating axis test over their edge normals)."""
    for polygon in (a, b):
        edges = np.roll(polygon, -1, axis=0) - polygon
        for normal in np.stack([-edges[:, 1], edges[:, 0]], axis=1):
            pa, pb = a @ normal, b @ normal
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def clear_at(xy, yaw, size, obstacles, clearance):
    """Whether the footprint of size at xy turned by yaw, inflated by clearance, is off every obstacle."""
    footprint = corners(xy, yaw, np.asarray(size[:2], float) + 2 * clearance)
    return not any(overlap(footprint, corners(*obstacle)) for obstacle in obstacles)


def way_is_clear(start, end, yaws, size, obstacles, clearance):
    """Whether the footprint of size, inflated by clearance, moved straight from start to end (x, y) while
    its yaw turns yaws = (from, to), stays off every obstacle (x, y, yaw, size) past the ends' END_SKIP."""
    start, end = np.asarray(start[:2], float), np.asarray(end[:2], float)
    length = float(np.linalg.norm(end - start))
    if length <= 2 * END_SKIP:
        return True
    turn = math.remainder(yaws[1] - yaws[0], 2 * math.pi)
    for along in np.arange(END_SKIP, length - END_SKIP + 1e-9, SWEEP_STEP):
        f = along / length
        if not clear_at(start + f * (end - start), yaws[0] + f * turn, size, obstacles, clearance):
            return False
    return True


def via_point(start, end, yaws, size, obstacles, clearance, low, high):
    """A point (x, y) to push the object to first when the straight way start -> end is not clear:
    around the first obstacle in the way, free itself and both legs clear (the object turns to the
    target's yaw on the first leg: it is pushed to the targets shifted there), inside the box
    low..high (x, y), the shortest detour; None when the way is clear or no such point is found
    (then straight on)."""
    if way_is_clear(start, end, yaws, size, obstacles, clearance):
        return None
    start, end = np.asarray(start[:2], float), np.asarray(end[:2], float)
    blocking = [o for o in obstacles if not way_is_clear(start, end, yaws, size, [o], clearance)]
    xy, _, other = min(blocking, key=lambda o: np.linalg.norm(np.asarray(o[0][:2], float) - start))
    radius = 0.5 * (math.hypot(*size[:2]) + math.hypot(*other[:2])) + clearance
    best = None
    for ring in RINGS:
        for angle in np.linspace(0.0, 2 * math.pi, ANGLES, endpoint=False):
            via = np.asarray(xy[:2], float) + (radius + ring) * np.array([math.cos(angle), math.sin(angle)])
            if np.any(via < np.asarray(low[:2])) or np.any(via > np.asarray(high[:2])):
                continue
            length = float(np.linalg.norm(via - start) + np.linalg.norm(end - via))
            if best is not None and length >= best[0]:
                continue
            if (
                clear_at(via, yaws[1], size, obstacles, clearance)
                and way_is_clear(start, via, yaws, size, obstacles, clearance)
                and way_is_clear(via, end, (yaws[1], yaws[1]), size, obstacles, clearance)
            ):
                best = (length, via)
        if best is not None:
            return best[1]
    return None
