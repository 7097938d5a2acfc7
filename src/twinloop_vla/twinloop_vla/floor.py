"""A floor for the hand (no ROS): joint targets whose grip site would go below a height are raised
to it before the gate sees them.

A learned joint-space policy misses the table by a centimetre or two (its error at the hand); in a
simulator the table stops the fingers and nothing happens, but the gate refuses any commanded
path that puts the fingers into the table or the grip site below the workspace, and the goal ends.
Like a virtual wall on an arm's controller, `GripFloor` lifts such targets straight up: the joint
change that raises the grip site to `height` and keeps its x, y and the hand's orientation (damped
least squares on the grip site's Jacobian, a few Newton steps). A chunk that would need more
than `tolerance` [m] of lift anywhere is left as it is: a dive is the gate's to refuse, not this
to hide. The splice point (the first point, already commanded) is never changed.

A chunk is also where the arm stops if no next chunk comes: the execution node brakes to rest
from its last point (twinloop_execution.streaming's braking tail), and the gate judges that tail
with the chunk. A policy that dives at the table at speed leaves a tail through it, though every
target is above the floor. `stoppable` finds the longest start of such a chunk whose braking tail
keeps the grip site above the floor (the same ruckig tail, through the same kinematics); the runner
sends that start, and the next chunk continues from it.
"""

import mujoco
import numpy as np

from twinloop_execution.kinematics import Arm
from twinloop_execution.streaming import ChunkRefused, StreamConfig, chunk_tail, point_velocities
from twinloop_twin import scene

NEWTON_STEPS = 4
TOLERANCE = 1e-4  # [m] raised this close to the floor is on it
DAMPING = 1e-6  # damped least squares near a singular configuration


class GripFloor:
    """Raises chunk targets whose grip site is below `height` [m] (world z) by up to `tolerance` [m],
    and finds how much of a chunk the arm can brake from above it (limits: the arm's JointLimits)."""

    def __init__(self, kinematics, height, tolerance, limits, stream=None):
        self.kinematics, self.height, self.tolerance = kinematics, float(height), float(tolerance)
        model = kinematics.model
        self.arm_dof = scene.dof_addresses(model)
        self._jacobian = np.zeros((6, model.nv))
        stream = stream or StreamConfig()
        self.braking = (
            np.asarray(limits.acceleration, float) * stream.braking_scale,
            np.asarray(limits.jerk, float) * stream.braking_scale,
            stream.period,
        )

    @classmethod
    def panda(cls, height, tolerance, limits):
        """The floor for the scene's Panda (the gate's model and world frame); None when height <= 0."""
        return cls(Arm.panda().kinematics, height, tolerance, limits) if height > 0 else None

    def stoppable(self, times, positions, start_velocity):
        """How many first points of a chunk to send: the longest start that stays on or above the floor
        and ends where the stream's braking tail keeps the grip site there (each start with its own
        point_velocities); 1 when none does (the splice point alone). A chunk that dives more than
        tolerance under the floor is left whole (len(times)), for the gate."""
        times, positions = np.asarray(times, float), np.asarray(positions, float)
        if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(start_velocity))):
            return len(times)  # the gate's to refuse
        heights = self.kinematics.grip_positions(positions[1:])[:, 2]
        if heights.min() < self.height - self.tolerance:
            return len(times)  # the chunk itself dives under the floor: the gate's to refuse
        under = np.flatnonzero(heights < self.height - TOLERANCE)  # the shaping can lag a raised target
        last = len(times) if len(under) == 0 else int(under[0]) + 1  # points before the first one under
        for end in range(last, 1, -1):
            velocities = point_velocities(times[:end], positions[:end], start_velocity)
            try:
                _, tail, _ = chunk_tail(times[:end], positions[:end], velocities, *self.braking)
            except ChunkRefused:  # no braking profile from there
                continue
            if len(tail) == 0 or self.kinematics.grip_positions(tail)[:, 2].min() >= self.height:
                return end
        return 1

    def _lift(self, q):
        """(grip site height at q, the joint change per metre that raises it and keeps x, y and orientation)."""
        k = self.kinematics
        k.data.qpos[k.arm_qpos] = q
        mujoco.mj_kinematics(k.model, k.data)
        mujoco.mj_comPos(k.model, k.data)
        mujoco.mj_jacSite(k.model, k.data, self._jacobian[:3], self._jacobian[3:], k.site)
        jacobian = self._jacobian[:, self.arm_dof]
        up = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
        step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + DAMPING * np.eye(6), up)
        return float(k.data.site_xpos[k.site][2]), step

    def apply(self, positions):
        """(positions with every target after the first at or above the floor, how many were raised);
        the given positions and 0 when one would need more than tolerance or any is not finite."""
        positions = np.asarray(positions, float)
        if not np.all(np.isfinite(positions)):
            return positions, 0
        out, raised = positions.copy(), 0
        for k in range(1, len(out)):
            z, step = self._lift(out[k])
            if z >= self.height:
                continue
            if self.height - z > self.tolerance:
                return positions, 0
            for _ in range(NEWTON_STEPS):
                out[k] += step * (self.height - z)
                z, step = self._lift(out[k])
                if z >= self.height - TOLERANCE:
                    break
            raised += 1
        return out, raised
