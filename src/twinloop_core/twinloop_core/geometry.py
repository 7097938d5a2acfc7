"""Object states and grasp geometry shared by engines, judges and executors (no ROS).

Objects are (position, quaternion w x y z, size x y z) with the frame at the centre of the
bottom face (REP 103: metres, z up)."""

import math
from typing import NamedTuple

import numpy as np

from twinloop_core.gripper import HAND_UNDERSIDE, OPEN_WIDTH

HOME_GRIP = (0.0, 0.7071068, 0.7071068, 0.0)  # w x y z: gripper down, fingers closing along world y
PALM_CLEARANCE = 0.03  # [m] deepest grip below an object's top: the Panda's palm sits ~4 cm above the grip site
WALL_CLEARANCE = 0.01  # [m] the hand's underside above the walls of a container it spans (a drawer's; perceived)
FINGER_HOLD = 0.012  # [m] least height of an object the finger pads keep hold of, below its top
SPAN_MARGIN = 0.005  # [m] an object grasped across must be this much narrower than the open fingers
RIM_INSET = 0.008  # [m] a rim grasp's grip site inside the object's outer edge: the fingers straddle the wall
RIM_DEPTH = 0.02  # [m] ... and this far below its top (at least 1 cm above its base)
RIM_TOLERANCE = (0.02, 0.02, 0.012)  # [m] largest grip offset of a firm rim grasp (x, y alike: round rims)
# A drawer is pulled by a tab handle: a flat bar sticking out of the middle of its front face (its
# own -x side) at the top, grasped from above across its width; the drawer slides along its -x axis.
HANDLE_SIZE = (0.07, 0.03, 0.015)  # [m] the tab: reach out of the front face (x), width (y), thickness (z)


class ObjectState(NamedTuple):
    """A perceived or simulated object: its pose and bounding-box size."""

    position: tuple
    quat: tuple  # w x y z
    size: tuple  # bounding box x y z [m]


def centre(obj):
    """Centre of an object's bounding box (its frame is at the bottom face; assumed upright)."""
    p, _, size = obj
    return np.asarray(p, float) + (0, 0, size[2] / 2)


def grip_height(size, walls=0.0):
    """Where the fingers should hold an object above its base [m]: mid height, at most 3 cm up,
    but high enough on a tall object that the palm stays above its top, and in a container whose
    walls the hand spans (their top `walls` [m] above the object's base) high enough that the hand
    clears them, as far as the fingers keep FINGER_HOLD of the object."""
    usual = max(min(size[2] / 2, 0.03), size[2] - PALM_CLEARANCE)
    clear = min(walls - HAND_UNDERSIDE + WALL_CLEARANCE, size[2] - FINGER_HOLD)
    return float(max(usual, clear))


def quat_multiply(a, b):
    """Hamilton product of two quaternions (w x y z)."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def quat_conjugate(quat):
    """The inverse rotation of a unit quaternion (w x y z)."""
    return np.array([quat[0], -quat[1], -quat[2], -quat[3]])


def quat_angle(q1, q2):
    """The angle between two orientations (w x y z, normalised here) [rad]."""
    dot = abs(float(np.dot(q1, q2)) / (np.linalg.norm(q1) * np.linalg.norm(q2)))
    return 2 * float(np.arccos(min(1.0, dot)))


def z_rotation(angle):
    """Quaternion (w x y z) of a rotation about world z."""
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def y_rotation(angle):
    """Quaternion (w x y z) of a rotation about y."""
    return np.array([np.cos(angle / 2), 0.0, np.sin(angle / 2), 0.0])


def lean_away(point, angle):
    """Quaternion (w x y z) of a tilt by angle [rad] about the horizontal axis across the line from the
    world origin (the robot's base) to point: what points down there tips its lower end away from the base."""
    heading = math.atan2(point[1], point[0])
    return np.array(
        [math.cos(angle / 2), math.sin(angle / 2) * math.sin(heading), -math.sin(angle / 2) * math.cos(heading), 0.0]
    )


def yaw_of(quat_wxyz):
    """Heading of an object's own x axis about world z [rad] (its yaw, for an upright object)."""
    w, x, y, z = quat_wxyz
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def wrap_angle(angle):
    """An angle in [-pi, pi) [rad]."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def grasp_yaw(quat_wxyz, size_x, size_y):
    """Yaw of the grasp so the fingers close across the object's narrower horizontal side, with
    the least joint-7 rotation among the equivalent yaws."""
    theta = yaw_of(quat_wxyz)
    if abs(size_x - size_y) < 1e-3:  # square footprint: every quarter turn grasps it
        options = theta + np.pi / 2 * np.arange(-4, 5)
    else:
        base = theta if size_y <= size_x else theta + np.pi / 2
        options = base + np.pi * np.arange(-2, 3)  # the fingers are symmetric under half turns
    return float(options[np.argmin(np.abs(options))])


def grasp_orientation(quat_wxyz, size):
    """The gripper's orientation (w x y z) for a grasp from above across the object's narrower side."""
    return quat_multiply(z_rotation(grasp_yaw(quat_wxyz, size[0], size[1])), HOME_GRIP)


def quat_matrix(quat):
    """Rotation matrix of a quaternion (w, x, y, z), normalised first."""
    w, x, y, z = np.asarray(quat, float) / np.linalg.norm(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def handle_of(obj):
    """The tab handle of a drawer (position, quat, size) as an object of its own: the front HANDLE_SIZE[0]
    of the drawer's bounding box (its own -x end), across its middle, at its top."""
    p, quat, size = obj
    local = (-(size[0] - HANDLE_SIZE[0]) / 2, 0.0, size[2] - HANDLE_SIZE[2])
    return ObjectState(tuple(np.asarray(p, float) + quat_matrix(quat) @ local), tuple(quat), HANDLE_SIZE)


def pull_axis(quat):
    """The world direction a drawer of this orientation opens: its own -x axis."""
    return -quat_matrix(quat)[:, 0]


class Grasp(NamedTuple):
    """How the grip site holds an object: where (world), the gripper's orientation (w x y z), the
    largest |offset| per object axis that still holds it, and the rim side (world y: +1, -1; 0 for a
    grasp across the object)."""

    point: np.ndarray
    quat: np.ndarray
    tolerance: np.ndarray
    side: float


def spans_open_fingers(size):
    """Is the object too wide for the open fingers across either horizontal side (a bowl, a plate)?"""
    return min(size[0], size[1]) > OPEN_WIDTH - SPAN_MARGIN


def grasp_of(obj, others=(), side=0.0, walls=0.0):
    """The grasp from above of obj (position, quat, size). Objects the fingers span are held across
    their narrower side over their base at grip_height (`walls`: see there); wider ones by the rim
    on the world +y or -y side, whichever is farther from the other objects' positions (`side` keeps
    an earlier choice), with the fingers closing across the wall."""
    p, quat, size = obj
    p = np.asarray(p, float)
    if not spans_open_fingers(size):  # tolerance: the footprint less a finger pad (>= 2 cm), 3 cm in height
        tolerance = np.array([max(size[0] / 2 - 0.01, 0.02), max(size[1] / 2 - 0.01, 0.02), 0.03])
        return Grasp(p + (0, 0, grip_height(size, walls)), grasp_orientation(quat, size), tolerance, 0.0)
    if not side:
        rims = {s: p + (0, s * size[1] / 2, 0) for s in (1.0, -1.0)}
        clearance = {s: min((np.linalg.norm((r - o)[:2]) for o in others), default=0.0) for s, r in rims.items()}
        side = max(clearance, key=clearance.get)
    point = p + (0, side * (size[1] / 2 - RIM_INSET), max(size[2] - RIM_DEPTH, 0.01))
    return Grasp(point, np.array(HOME_GRIP), np.array(RIM_TOLERANCE), side)
