"""The AntiGrounding loop's ports on in-process parts, for benchmarks and debugging without ROS:
a SimWorld is the arm and the world (its ground-truth object poses are the perception:
"privileged perception"), a SimTwin rolls out and renders, the structured VQA scores with the
configured agents, and execution follows ruckig-timed joint paths (no safety gate: never use this
on a real arm). The ROS path, with the safety gate, is ros_ports.RosPorts."""
import numpy as np

from twinloop_execution import trajectory
from twinloop_execution.safety import JointLimits
from twinloop_planning import rotation
from twinloop_planning.anti_grounding import ExecutionFailed
from twinloop_planning.rotation import RotationUnavailable
from twinloop_scoring import facts as rollout_facts
from twinloop_scoring import vqa
from twinloop_twin import objects, overlays, scene
from twinloop_twin.twin import Candidate, Detection

PERCEPTION = 'privileged (SimWorld ground truth, in process)'


class SimPorts:
    def __init__(self, world, twin, prompt_config, agents, urdf, limits_yaml, views=None, size=224, velocity_scale=0.5,
                 settle=0.2, rotation_backend=None):
        self.world, self.twin, self.config, self.agents = world, twin, prompt_config, agents
        self.views = views or [c.name for c in twin.cameras]
        self.size, self.velocity_scale, self.settle, self.rotation_backend = size, velocity_scale, settle, rotation_backend
        joints = list(scene.ARM_JOINTS)
        self.limits = JointLimits.from_description(urdf, limits_yaml, joints)
        self.jerk = trajectory.jerk_limits(limits_yaml, joints)
        self.extents, self.mesh_ids = self._object_info(world)
        self.results = {}

    def _object_info(self, world):
        """({object id: extents}, {object id: mesh id})."""
        return ({o.id: objects.make_shape(o.kind, **o.params).extents for o in world.config.objects},
                {o.id: o.mesh_id for o in world.config.objects})

    def state(self):
        objs = {oid: (*self.world.object_pose(oid), self.extents[oid]) for oid in self.world.object_ids}
        return objs, self.world.arm_positions(), self.world.gripper_width(), set()   # ground truth sees everything

    def sync(self, believed=None):   # ground truth: nothing is believed
        detections = [Detection(oid, self.mesh_ids[oid], *self.world.object_pose(oid)) for oid in self.world.object_ids]
        self.twin.sync(detections, self.world.arm_positions(), self.world.gripper_width())

    def candidate(self, proposal):
        times, positions = list(proposal.times), [list(q) for q in proposal.waypoints()]
        gripper = [(t, 0.0 if w == 0.0 else 0.08) for (_, _, w), t in zip(proposal.segments, self._segment_ends(proposal)) if w is not None]
        if proposal.open_first:
            gripper.insert(0, (0.0, 0.08))
        return Candidate(times, positions, gripper, self.settle)

    @staticmethod
    def _segment_ends(proposal):
        ends, count = [], 0
        for waypoints, _, _ in proposal.segments:
            count += len(waypoints)
            ends.append(proposal.times[count - 1])
        return ends

    def rollout(self, proposals):
        self.results = dict(zip((p.id for p in proposals), self.twin.rollout_batch([self.candidate(p) for p in proposals])))
        return [rollout_facts.rollout_facts(self.results[p.id]) for p in proposals]

    def _render(self, proposals, scores):
        overlay = overlays.candidate_overlay([self.results[p.id].ee_path for p in proposals], scores)
        return [(name, self.twin.render(name, self.size, self.size, depth=False, overlay=overlay).rgb) for name in self.views]

    def render_for_scoring(self, proposals):
        n = len(overlays.DISTINCT)
        return [(proposals[i:i + n], self._render(proposals[i:i + n], None)) for i in range(0, len(proposals), n)]

    def render_scored(self, proposals, scores):
        return self._render(proposals, scores)

    def score(self, instruction, task, proposals, facts, batches):
        by_id = dict(zip((p.id for p in proposals), facts))
        out = {}
        for batch, images in batches:
            ids = [p.id for p in batch]
            views = [vqa.View(name, rgb, dict(zip(ids, overlays.DISTINCT_NAMES))) for name, rgb in images]
            result = vqa.score(self.config, instruction, views, ids, self.agents, {'task': task, 'rollouts': {i: by_id[i] for i in ids}})
            for j, cid in enumerate(ids):
                out[cid] = {'total': float(result.fused.totals[j]), 'failed': False, 'backend': ', '.join(result.backends),
                            'dimensions': {d.name: round(float(result.fused.dimension_scores[j, k]), 2)
                                           for k, d in enumerate(self.config.dimensions)}}
        return [out[p.id] for p in proposals]

    def execute(self, proposal):
        for i, (waypoints, _, width) in enumerate(proposal.segments):
            try:
                path = trajectory.parametrize(np.vstack([self.world.arm_positions(), waypoints]), self.limits.velocity,
                                              self.limits.acceleration, self.jerk, self.velocity_scale)
            except ValueError as exc:
                raise ExecutionFailed(str(exc), before_motion=i == 0) from None
            if i == 0 and proposal.open_first:
                self._gripper(0.08)
            self._follow(path)
            if width is not None:
                self._gripper(width)

    def _follow(self, path):
        """Play a timed joint path on the world, and 0.3 s more for the arm to settle."""
        self.world.follow_trajectory(path.times, path.positions)
        self.world.step(int((path.duration + 0.3) / self.world.model.opt.timestep))

    def _gripper(self, width, seconds=0.6):
        self.world.set_gripper(width)
        self.world.step(int(seconds / self.world.model.opt.timestep))

    def show(self, proposals, scores, chosen):
        pass   # nothing to visualise in process: the report has the images

    def rotation(self, instruction, object_id):
        if self.rotation_backend is None:
            raise RotationUnavailable('rotation module off: no rotation backend given')
        overlay = lambda scn: overlays.add_axes(scn, self.twin.data.body(object_id).xipos, self.twin.data.body(object_id).xmat.reshape(3, 3))  # noqa: E731
        image = self.twin.render(self.views[0], self.size, self.size, depth=False, overlay=overlay).rgb
        return rotation.ask(self.rotation_backend, instruction, object_id.replace('_', ' '), image)

    def feedback(self, **fields):
        pass
