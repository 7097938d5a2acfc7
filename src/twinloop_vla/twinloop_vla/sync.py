"""Observation synchronisation for a policy (no ROS): camera frames and joint states by stamp.

An observation is one colour frame per configured camera (and one depth frame each where the
policy uses depth), all stamped within `slop` seconds of each other, and the joint state closest
in stamp to the newest of those frames, also within `slop`. It is fresh when the newest frame is
at most `max_age` seconds older than the robot's clock (the newest stamp received, so a slowed
or paused simulation does not age frames). `latest` returns the newest such observation, or the
reason there is none.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Observation:
    """One synchronised observation: images uint8 (V, H, W, 3), depth float (V, H, W) [m] or None,
    state (twinloop_data.world_sim_expert.policy_state: joints, gripper width, joint velocities),
    stamp: the newest frame's stamp [s]."""

    images: np.ndarray
    depth: np.ndarray | None
    state: np.ndarray
    stamp: float
    joint_stamp: float


class ObservationSync:
    """Keeps the last `history` frames per stream and joint states; matches them by stamp."""

    def __init__(self, cameras, slop=0.02, max_age=0.5, use_depth=False, history=10):
        if not cameras:
            raise ValueError('a policy needs at least one camera')
        self.cameras, self.slop, self.max_age, self.use_depth = list(cameras), slop, max_age, use_depth
        kinds = ('color', 'depth') if use_depth else ('color',)
        self.frames = {(camera, kind): deque(maxlen=history) for camera in self.cameras for kind in kinds}
        self.joints = deque(maxlen=max(50, 5 * history))

    def add_frame(self, camera, kind, stamp, array):
        """A colour (uint8 H x W x 3) or depth (float H x W, metres) frame."""
        queue = self.frames.get((camera, kind))
        if queue is not None:
            queue.append((float(stamp), array))

    def add_joints(self, stamp, state):
        """A joint state: the policy state (policy_state: 7 joints, gripper width, 7 joint velocities)."""
        self.joints.append((float(stamp), np.asarray(state, float)))

    def now(self):
        """The robot's clock: the newest stamp received, joint state or frame (None before a joint state)."""
        if not self.joints:
            return None
        return max([self.joints[-1][0]] + [queue[-1][0] for queue in self.frames.values() if queue])

    def latest(self):
        """(Observation, '') for the newest synchronised fresh set, or (None, why not)."""
        if not self.joints:
            return None, 'no joint state received yet'
        empty = [f'{camera} {kind}' for (camera, kind), queue in self.frames.items() if not queue]
        if empty:
            return None, f'no frames received yet from {empty}'
        reference = self.frames[(self.cameras[0], 'color')]
        for stamp, _ in reversed(reference):
            matched = {key: _closest(queue, stamp) for key, queue in self.frames.items()}
            if any(abs(s - stamp) > self.slop for s, _ in matched.values()):
                continue
            newest = max(s for s, _ in matched.values())
            joint_stamp, state = _closest(self.joints, newest)
            if abs(joint_stamp - newest) > self.slop:
                continue
            age = self.now() - newest
            if age > self.max_age:
                return None, f'the newest synchronised frames are {age:.2f} s old (limit {self.max_age} s)'
            images = np.stack([matched[(camera, 'color')][1] for camera in self.cameras])
            depth = np.stack([matched[(camera, 'depth')][1] for camera in self.cameras]) if self.use_depth else None
            return Observation(images, depth, state, newest, joint_stamp), ''
        return None, f'no frames of {self.cameras} and joint states within {self.slop} s of each other'


def _closest(queue, stamp):
    """The (stamp, value) of queue nearest to stamp."""
    return min(queue, key=lambda item: abs(item[0] - stamp))
