"""Motion requests to timed joint paths: IK for poses (mink), ruckig timing. No rclpy."""

import numpy as np

from twinloop_execution import trajectory
from twinloop_execution.kinematics import PandaIk

MAX_IK_JUMP = 1.5  # [rad] between consecutive Cartesian waypoints' solutions: larger means a flip


class PlanningError(ValueError):
    """The request cannot be turned into motion (unreachable, malformed); the message says why."""


def joint_waypoints_for_poses(ik: PandaIk, q_full, poses):
    """Arm joints for each (position, quat wxyz), each IK seeded from the previous solution."""
    q_full = np.array(q_full, float)
    out = []
    for i, (position, quat) in enumerate(poses):
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))) or np.linalg.norm(quat) < 1e-6:
            raise PlanningError(f'pose {i} is not finite or has a zero quaternion')
        result = ik.solve(q_full, position, np.asarray(quat) / np.linalg.norm(quat))
        if not result.converged:
            raise PlanningError(
                f'pose {i} at ({position[0]:.3f}, {position[1]:.3f}, {position[2]:.3f}) m is unreachable '
                f'(IK error {result.position_error * 1000:.0f} mm, {np.degrees(result.orientation_error):.0f} deg)'
            )
        if out and np.abs(result.positions - out[-1]).max() > MAX_IK_JUMP:
            raise PlanningError(f'pose {i} needs a joint flip from pose {i - 1}; add intermediate poses')
        out.append(result.positions)
        q_full[ik.arm_qpos] = result.positions
    return out


def plan(current, waypoints, velocity, acceleration, jerk, scale):
    """TimedPath from the current arm joints through the waypoints (rest at each)."""
    try:
        return trajectory.parametrize(np.vstack([current, *waypoints]), velocity, acceleration, jerk, scale)
    except ValueError as exc:
        raise PlanningError(str(exc)) from exc
