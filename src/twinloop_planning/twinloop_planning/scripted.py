"""The scripted pick-and-place strategy: grasp from above across the object's narrower side,
lift, place above the destination and release. NOT AntiGrounding - no candidate is scored; it is
the baseline the MPC planner replaces, and it says so in its results."""
import numpy as np

from twinloop_planning.grounding import SubTask

LABEL = 'scripted_pick_place (not AntiGrounding: no candidates are scored)'
HOME_GRIP = (0.0, 0.7071068, 0.7071068, 0.0)   # w x y z: gripper down, fingers closing along world y
OPEN, CLOSED, KEEP = 0.08, 0.0, -1.0


PALM_CLEARANCE = 0.03   # [m] deepest grip below an object's top: the Panda's palm sits ~4 cm above the grip site


def grip_height(size):
    """Where the fingers should hold an object above its base [m]: mid height, at most 3 cm up,
    but high enough on a tall object that the palm stays above its top."""
    return float(max(min(size[2] / 2, 0.03), size[2] - PALM_CLEARANCE))


def _z_rotation(angle):
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def _quat_multiply(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def grasp_yaw(quat_wxyz, size_x, size_y):
    """Yaw of the grasp so the fingers close across the object's narrower horizontal side, with
    the least joint-7 rotation among the equivalent yaws."""
    w, x, y, z = quat_wxyz
    theta = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    if abs(size_x - size_y) < 1e-3:            # square footprint: every quarter turn grasps it
        options = theta + np.pi / 2 * np.arange(-4, 5)
    else:
        base = theta if size_y <= size_x else theta + np.pi / 2
        options = base + np.pi * np.arange(-2, 3)  # the fingers are symmetric under half turns
    return float(options[np.argmin(np.abs(options))])


def grasp_orientation(quat_wxyz, size):
    """The gripper's orientation (w x y z) for a grasp from above across the object's narrower side."""
    return _quat_multiply(_z_rotation(grasp_yaw(quat_wxyz, size[0], size[1])), HOME_GRIP)


def motions(subtask: SubTask, objects):
    """[(label, position, quat wxyz or None, gripper_before, gripper_after)] for one sub-task.

    objects: {id: (position, quat wxyz, size xyz)} as perceived."""
    if subtask.action not in ('pick', 'place'):
        raise ValueError(f'the scripted strategy does {subtask.action!r} not: only pick and place')
    position, quat, size = objects[subtask.object_id]
    p = np.asarray(position, float)
    grasp = grasp_orientation(quat, size)
    grasp_z = p[2] + grip_height(size)
    steps = [('above the object', p + (0, 0, 0.15), grasp, OPEN, KEEP),
             ('down to grasp, close', np.array([p[0], p[1], grasp_z]), grasp, KEEP, CLOSED),
             ('lift', p + (0, 0, 0.2), grasp, KEEP, KEEP)]
    if subtask.action == 'place':
        d_pos, _, d_size = objects[subtask.destination_id]
        top = np.asarray(d_pos, float) + (0, 0, d_size[2])
        steps += [('above the destination', top + (0, 0, 0.12 + size[2]), grasp, KEEP, KEEP),
                  ('lower into the destination, release', top + (0, 0, 0.03 + size[2] / 2), grasp, KEEP, OPEN),
                  ('retreat', top + (0, 0, 0.12 + size[2]), grasp, KEEP, KEEP)]
    return steps
