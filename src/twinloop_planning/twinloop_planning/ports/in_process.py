"""twinloop_core ports on in-process parts, for benchmarks and debugging without ROS: a SimWorld is
the arm and the world (its ground-truth object poses are the perception: "privileged
perception"), a SimTwin rolls out and renders, the structured VQA scores with the configured
agents, execution follows ruckig-timed joint paths and SimStreamer plays streamed chunks as they
come (no safety gate: never use this on a real arm). The ROS path, with the safety gate, is
ports.ros. Both share one encoding: engines hand TimedPaths and JointSegments, rollouts become
facts with twinloop_twin.facts, scores come from ScoringResult.candidate_scores."""

import contextlib
from types import SimpleNamespace

import numpy as np

from twinloop_core.gripper import KEEP
from twinloop_core.outcomes import ExecutionFailed
from twinloop_core.ports import CameraImage, CancelToken, PerceivedState, Ports, QuietProgress, StreamReply
from twinloop_execution import trajectory
from twinloop_execution.safety import JointLimits
from twinloop_execution.streaming import ChunkRefused, JointStream, StreamConfig
from twinloop_scoring import vqa
from twinloop_twin import facts as rollout_facts
from twinloop_twin import objects, overlays, scene
from twinloop_twin.twin import Candidate, Detection
from twinloop_twin.world import SimWorld

PERCEPTION = 'privileged (SimWorld ground truth, in process)'


def scoring_batches(ids, render):
    """[(ids, render(ids))] in batches of at most as many candidates as there are distinct colours."""
    n = len(overlays.DISTINCT)
    return [(list(ids[i : i + n]), render(list(ids[i : i + n]))) for i in range(0, len(ids), n)]


class SimStreamer:
    """The streamer port on a SimWorld: the execution node's stream (twinloop_execution.streaming.JointStream:
    splices, continuity, braking tails) with no safety gate, on the world's clock; the world moves only while
    wait() steps it. Counts chunks and stops and keeps each chunk's last joints."""

    def __init__(self, world, limits, jerk):
        self.world, self.limits, self.jerk = world, limits, jerk
        self.config = StreamConfig(start_lead=0.05)  # nothing to wait for: no gate, no service call
        self.streams, self.started = {}, {}
        self.chunks, self.stops, self.ends = 0, 0, []

    def clock(self):
        """The world's simulated time [s]."""
        return float(self.world.data.time)

    def send_chunk(self, stream_id, times, positions, splice_time=-1.0, velocities=None):
        """Splice one chunk into the stream (a new one starts where the arm is); refused as the node refuses."""
        if stream_id not in self.streams:
            accept = lambda *_: SimpleNamespace(ok=True, reason='', check='')  # noqa: E731 (no gate in process)
            self.streams[stream_id] = JointStream(
                stream_id, self.world.arm_positions(), self.limits.acceleration, self.jerk, accept, self.config
            )
            self.started[stream_id] = self.clock()
        stream, now = self.streams[stream_id], self.clock() - self.started[stream_id]
        try:
            path = stream.splice(now, splice_time, times, positions, velocities)
        except ChunkRefused as refused:
            return StreamReply(False, str(refused), refused.check, now)
        self._follow(self.started[stream_id], path)
        end = stream.last_chunk_end
        commanded = stream.commanded(end)
        self.ends.append(commanded[0])
        self.chunks += 1
        return StreamReply(True, '', '', now, end, commanded[0], commanded[1])

    def stop_stream(self, stream_id):
        """Brake to rest now and end the stream."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            started = self.started.pop(stream_id)
            self._follow(started, stream.brake(self.clock() - started))
        self.stops += 1
        return StreamReply(True)

    def wait(self, seconds):
        """Step the world `seconds` of simulated time along the committed motion."""
        self.world.step(max(0, int(round(seconds / self.world.model.opt.timestep))))

    def _follow(self, started, path):
        """Have the arm follow a committed path (stream times from `started`, the world time the stream began)."""
        times, positions, _ = path
        self.world.follow_trajectory(times - times[0], positions, started + times[0])


@contextlib.contextmanager
def held_out_layout(root, scene_name, seed, friction=None, mass_scale=None):
    """(layout, world, ports, streamer, progress) of a random layout (seed) of config/scenes/<scene_name>.yaml
    under the repository root in a SimWorld, with friction and mass drawn as world_sim draws them
    (scene.seeded_layout), the arm's ports in process (ground-truth poses, SimStreamer); the world closed after."""
    config = scene.SceneConfig.from_yaml(f'{root}/config/scenes/{scene_name}.yaml')
    layout = scene.seeded_layout(config, seed, friction, mass_scale)
    world = SimWorld(layout)
    world.reset()
    try:
        urdf, limits = f'{root}/urdf/panda.urdf', f'{root}/config/panda_joint_limits.yaml'
        arm = SimPorts(world, None, None, [], urdf, limits, views=['front'])
        streamer, progress = SimStreamer(world, arm.limits, arm.jerk), QuietProgress()
        ports = Ports(perception=arm, executor=arm, streamer=streamer, progress=progress, cancel=arm.cancel)
        yield layout, world, ports, streamer, progress
    finally:
        world.close()


class SimPorts:
    """Perception, twin, scorer and executor on a SimWorld and a SimTwin (one object serves all four)."""

    def __init__(self, world, twin, prompt_config, agents, urdf, limits_yaml, views=None, size=224, velocity_scale=0.5):
        self.world, self.twin, self.config, self.agents = world, twin, prompt_config, agents
        self.views = views or [c.name for c in twin.cameras]
        self.size, self.velocity_scale = size, velocity_scale
        joints = list(scene.ARM_JOINTS)
        self.limits = JointLimits.from_description(urdf, limits_yaml, joints)
        self.jerk = trajectory.jerk_limits(limits_yaml, joints)
        self.extents, self.mesh_ids = self._object_info(world)
        self.results = {}
        self.cancel = CancelToken()

    def ports(self, progress=None):
        """The Ports bundle an engine is handed (this object as perception, twin, scorer and executor)."""
        return Ports(self, self, self, self, progress=progress or QuietProgress(), cancel=self.cancel)

    def _object_info(self, world):
        """({object id: extents}, {object id: mesh id}) of the objects pose estimation would look for."""
        perceived = [o for o in world.config.objects if o.perceived]
        return (
            {o.id: objects.make_shape(o.kind, **o.params).extents for o in perceived},
            {o.id: o.mesh_id for o in perceived},
        )

    # --- perception ----------------------------------------------------------------------------
    def state(self):
        """Ground truth: every object pose estimation would look for, seen."""
        objs = {oid: (*self.world.object_pose(oid), extents) for oid, extents in self.extents.items()}
        return PerceivedState(objs, self.world.arm_positions(), self.world.gripper_width())

    def newest(self):
        """Ground truth now (no frames to wait for: age 0)."""
        return self.state()

    def camera_image(self):
        """The first view's camera, rendered now at its configured size."""
        camera = next(c for c in self.world.config.cameras if c.name == self.views[0])
        frame = self.world.render(camera.name, camera.width, camera.height, depth=False)
        return CameraImage(camera.name, frame.rgb, frame.intrinsics.matrix, frame.position, frame.rotation)

    # --- twin --------------------------------------------------------------------------------------
    def sync(self, believed=None):
        """Ground truth: nothing is believed."""
        detections = [Detection(oid, mesh_id, *self.world.object_pose(oid)) for oid, mesh_id in self.mesh_ids.items()]
        self.twin.sync(detections, self.world.arm_positions(), self.world.gripper_width())

    def rollout(self, paths, settle):
        """Facts of each path played in the twin."""
        results = self.twin.rollout_batch([Candidate(p.times, p.positions, p.gripper, settle) for p in paths])
        self.results = dict(zip((p.id for p in paths), results))
        return [rollout_facts.rollout_facts(r) for r in results]

    def grip_paths(self, ids):
        """Grip-site paths of the last rollouts."""
        return [self.results[i].ee_path for i in ids]

    def render(self, ids, scores):
        """[(view name, rgb)] with the last rollouts drawn (coloured by score when scores are given)."""
        overlay = overlays.candidate_overlay(self.grip_paths(ids), scores)
        return [
            (name, self.twin.render(name, self.size, self.size, depth=False, overlay=overlay).rgb)
            for name in self.views
        ]

    def render_report(self, ids, scores):
        """Drawn when the returned function is called (the twin lives in this process's thread)."""
        return lambda: self.render(ids, scores)

    def render_for_scoring(self, ids):
        """Batches told apart by colour; nothing rendered for scorers that read no image (twin_critic)."""
        if not vqa.reads_images(self.agents):
            return scoring_batches(ids, lambda batch: [(vqa.TWIN_VIEW, None)])
        return scoring_batches(ids, lambda batch: self.render(batch, None))

    def render_axes(self, object_id):
        """The first view with the object's axes drawn at its centre of mass."""
        body = self.twin.data.body(object_id)
        overlay = lambda scn: overlays.add_axes(scn, body.xipos, body.xmat.reshape(3, 3))  # noqa: E731
        return self.twin.render(self.views[0], self.size, self.size, depth=False, overlay=overlay).rgb

    # --- scorer ------------------------------------------------------------------------------------
    def score(self, instruction, task, ids, facts, batches):
        """The structured VQA over each batch's views, fused."""
        by_id = dict(zip(ids, facts))
        out = {}
        for batch, images in batches:
            views = [vqa.View(name, rgb, dict(zip(batch, overlays.DISTINCT_NAMES))) for name, rgb in images]
            rollouts = {i: by_id[i] for i in batch}
            try:
                result = vqa.score(
                    self.config, instruction, views, batch, self.agents, {'task': task, 'rollouts': rollouts}
                )
                scores = result.candidate_scores(self.config)
            except ValueError as exc:  # every view failed for every agent
                scores = vqa.failed_scores(batch, str(exc), self.agents)
            out.update(zip(batch, scores))
        return [out[i] for i in ids]

    # --- executor ----------------------------------------------------------------------------------
    def execute(self, segments):
        """Each segment ruckig-timed from where the arm is, gripper commands around it."""
        for i, segment in enumerate(segments):
            self.cancel.check()
            try:
                path = trajectory.parametrize(
                    np.vstack([self.world.arm_positions(), segment.waypoints]),
                    self.limits.velocity,
                    self.limits.acceleration,
                    self.jerk,
                    self.velocity_scale,
                )
            except ValueError as exc:
                raise ExecutionFailed(str(exc), before_motion=i == 0, refused=True) from None
            if segment.gripper_before != KEEP:
                self._gripper(segment.gripper_before)
            self._follow(path)
            if segment.gripper_after != KEEP:
                self._gripper(segment.gripper_after)

    def _follow(self, path):
        """Play a timed joint path on the world, and 0.3 s more for the arm to settle."""
        self.world.follow_trajectory(path.times, path.positions)
        self.world.step(int((path.duration + 0.3) / self.world.model.opt.timestep))

    def _gripper(self, width, seconds=0.6):
        self.world.set_gripper(width)
        self.world.step(int(seconds / self.world.model.opt.timestep))
