"""twinloop_core ports on a LIBERO task, in process (no ROS): the LiberoWorld is the arm and the
world, its simulator state is the perception ("privileged perception": LIBERO's objects are not
in twinloop's mesh library), a LiberoTwin (LIBERO's own scene) rolls out and renders, and
execution steps LIBERO's JOINT_POSITION controller along ruckig-timed joint paths at its 20 Hz
(no safety gate, as SimPorts: a simulated arm in process; never use this on a real arm).

Objects are reported in twinloop's convention (frame at the centre of the bottom face of the
colliding geometry, upright), converted from LIBERO's body frames with per-object offsets.
The episode ends (EpisodeEnded) the moment LIBERO's success predicate holds or its step limit
is reached, as in LIBERO's standard evaluation.
"""

import dataclasses

import numpy as np

from twinloop_core.ports import PerceivedState
from twinloop_planning.ports.in_process import SimPorts
from twinloop_twin import facts as rollout_facts
from twinloop_twin.twin import Candidate, Detection

PERCEPTION = 'privileged (LIBERO simulator state, in process)'


class EpisodeEnded(Exception):
    """LIBERO's episode is over: success (its BDDL goal holds) or its step limit."""

    def __init__(self, success, reason):
        super().__init__(reason)
        self.success = success


class LiberoPorts(SimPorts):
    """SimPorts on a LiberoWorld and its LiberoTwin."""

    def __init__(
        self,
        world,
        twin,
        prompt_config,
        agents,
        urdf,
        limits_yaml,
        max_steps,
        views=('agentview', 'wrist'),
        size=224,
        velocity_scale=0.5,
    ):
        super().__init__(world, twin, prompt_config, agents, urdf, limits_yaml, list(views), size, velocity_scale)
        self.max_steps = max_steps

    def _object_info(self, world):
        return dict(self.twin.extents), {}

    def state(self):
        """LIBERO's simulator state, in twinloop's object convention, with LIBERO's labels."""
        fingers = self.world.finger_positions()
        return PerceivedState(
            self.twin.planner_objects(self.world.objects()),
            self.world.arm_positions(),
            float(fingers[0] - fingers[1]),
            labels=self.labels(),
        )

    def labels(self):
        """{object id: LIBERO's label}."""
        return {name: label for name, label, _, _ in self.world.objects()}

    def sync(self, believed=None):
        """Privileged state: nothing is believed."""
        detections = [Detection(name, '', p, q) for name, _, p, q in self.world.objects()]
        fingers = self.world.finger_positions()
        self.twin.sync(detections, self.world.arm_positions(), float(fingers[0] - fingers[1]), fingers)
        self.twin.set_joints(self.world.scene_joints())

    def rollout(self, paths, settle):
        """Facts in twinloop's object convention."""
        base = {oid: self.twin.world.object_pose(oid) for oid in self.twin.world.object_ids}
        results = self.twin.rollout_batch([Candidate(p.times, p.positions, p.gripper, settle) for p in paths])
        self.results = dict(zip((p.id for p in paths), results))
        return [rollout_facts.rollout_facts(self._converted(r, base)) for r in results]

    def _converted(self, result, base):
        final = {
            oid: (self.twin.bottom_centre_position(oid, *pose), pose[1]) for oid, pose in result.final_poses.items()
        }
        return dataclasses.replace(
            result,
            final_poses=final,
            displacements={oid: final[oid][0] - self.twin.bottom_centre_position(oid, *base[oid]) for oid in final},
        )

    def _follow(self, path):
        """Step LIBERO's controller along the path at its control rate (ruckig's default period, 0.05 s)."""
        freq = self.world.control_freq
        for t in np.arange(1, int(np.ceil((path.duration + 0.15) * freq)) + 1) / freq:
            self._step(arm_target=path.sample(t))

    def _gripper(self, width, seconds=0.5):
        for k in range(int(round(seconds * self.world.control_freq))):
            self._step(gripper_closed=width < 0.04 if k == 0 else None)

    def _step(self, **command):
        self.world.step(**command)
        if self.world.success():
            raise EpisodeEnded(True, f'LIBERO success predicate holds after {self.world.steps} steps')
        if self.world.steps >= self.max_steps:
            raise EpisodeEnded(False, f'LIBERO step limit {self.max_steps} reached')
