"""sim_twin: the twin as a ROS node.

Services: ~/sync (twinloop_interfaces/SyncTwin), ~/rollout (RolloutTrajectories),
~/render (RenderViews). Keeps the latest detected objects and /joint_states so an empty sync
request uses them (malformed ones are dropped with a throttled warning).

Every request field is validated before the twin is touched: an invalid request is answered with
success=false and a message naming the field, the twin keeps its last good state, and sizes are
bounded by parameters (render size, candidates, simulated seconds) so no request can exhaust memory.
"""

import re
import time
import traceback

from twinloop_interfaces.msg import CandidateTrajectory, DetectedObjectArray, RenderedView
from twinloop_interfaces.srv import RenderViews, RolloutTrajectories, SyncTwin

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from twinloop_twin import markers, messages, overlays, scene
from twinloop_ros import codec, node_runner, topics
from twinloop_ros import conversions as ros_conversions
from twinloop_twin.twin import Candidate, Detection, MeshLibrary, SimTwin

OBJECT_ID = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}')  # becomes MuJoCo body, joint and geom names
MAX_OBJECTS = 64
MAX_LABEL = 256  # [characters]
MAX_POINTS = 10_000  # trajectory points or ee_path points of one candidate
MAX_POSITION = 100.0  # [m] from the world origin: objects and ee_path points
MAX_RENDER_SIZES = 4  # distinct render sizes whose renderers stay open (each holds a GL context)
GRIPPER_EVENTS = (
    CandidateTrajectory.GRIPPER_NONE,
    CandidateTrajectory.GRIPPER_OPEN,
    CandidateTrajectory.GRIPPER_CLOSE,
)


def _short(value, limit=40):
    """repr of a value cut to limit characters (a request's strings can be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + '...'


class SimTwinNode(Node):
    """The sim_twin node: the twin behind the ~/sync, ~/rollout and ~/render services."""

    def __init__(self):
        super().__init__('sim_twin')
        scene_path = self.declare_parameter(
            'scene',
            '',
            ParameterDescriptor(description='scene YAML: the mesh library (known objects) and the twin cameras'),
        ).value
        self.width = self.declare_parameter(
            'render_width', 224, ParameterDescriptor(description='default render width [px]')
        ).value
        self.height = self.declare_parameter(
            'render_height', 224, ParameterDescriptor(description='default render height [px]')
        ).value
        self.settle = self.declare_parameter(
            'settle', 0.5, ParameterDescriptor(description='simulated time after a candidate [s]')
        ).value
        objects_topic = self.declare_parameter(
            'objects_topic', topics.OBJECTS, ParameterDescriptor(description='DetectedObjectArray topic for sync')
        ).value

        def limit(name, default, doc):
            return self.declare_parameter(name, default, ParameterDescriptor(description=doc)).value

        self.max_render_size = limit('max_render_size', 2048, 'largest ~/render width or height [px]')
        self.max_candidates = limit('max_candidates', 64, 'most candidates in one ~/rollout or ~/render request')
        self.max_duration = limit('max_duration', 20.0, "longest candidate: last point's time plus settle [s]")
        self.max_batch_seconds = limit(
            'max_batch_seconds', 400.0, 'most simulated time per ~/rollout: candidates x the longest duration [s]'
        )
        if not scene_path:
            raise ValueError('parameter "scene" (the scene YAML with the known objects and cameras) is required')
        config = scene.SceneConfig.from_yaml(scene_path)
        self.twin = SimTwin(MeshLibrary.from_scene(config), config.cameras)
        base = scene.build_spec(scene.SceneConfig([], list(config.cameras))).compile()  # the twin without objects
        self.reserved_names = {base.body(b).name for b in range(base.nbody)}  # no object may take these names
        self.reserved_names |= {base.geom(g).name for g in range(base.ngeom)}
        self.arm_limits = np.array([base.joint(j).range for j in scene.ARM_JOINTS])
        self.render_sizes, self.render_world = set(), None
        self.latest_objects = self.latest_joints = None
        self.create_subscription(DetectedObjectArray, objects_topic, self.on_objects, topics.STATE_QOS)
        self.create_subscription(JointState, topics.JOINT_STATES, self.on_joints, topics.STATE_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, '~/markers', topics.STATE_QOS)
        self.create_service(SyncTwin, '~/sync', self.on_sync)
        self.create_service(RolloutTrajectories, '~/rollout', self.on_rollout)
        self.create_service(RenderViews, '~/render', self.on_render)
        self.get_logger().info(
            f'sim_twin ready: {len(config.objects)} known objects, cameras {[c.name for c in config.cameras]}'
        )

    def on_objects(self, msg):
        """Keep the latest well-formed DetectedObjectArray for an empty sync; drop others with a warning."""
        try:
            self._detections(msg)
        except ValueError as exc:
            self.get_logger().warning(f'objects message dropped: {exc}', throttle_duration_sec=5.0)
            return
        self.latest_objects = msg

    def on_joints(self, msg):
        """Keep the latest usable arm JointState for an empty sync; drop others with a warning."""
        try:
            ros_conversions.checked_arm_state(msg, self.arm_limits)
        except ValueError as exc:
            self.get_logger().warning(f'joint state dropped: {exc}', throttle_duration_sec=5.0)
            return
        self.latest_joints = msg

    def on_sync(self, request, response):
        """Sync the twin to the request's objects and joints (else the latest on the topics); publish it as markers."""
        return self._answer(self._sync, request, response)

    def on_rollout(self, request, response):
        """Play the requested candidates in the twin from its synced state."""
        return self._answer(self._rollout, request, response)

    def on_render(self, request, response):
        """Render the requested cameras of the synced twin, with candidate paths and object axes drawn in."""
        return self._answer(self._render, request, response)

    def _answer(self, handler, request, response):
        """handler's answer; ValueError: an invalid request, anything else a bug - answered, never fatal."""
        try:
            return handler(request, response)
        except ValueError as exc:
            message = str(exc)
        except Exception as exc:
            self.get_logger().error(f'{handler.__name__[1:]} failed unexpectedly:\n{traceback.format_exc()}')
            message = f'internal error: {type(exc).__name__}: {exc}'[:500]
        self.get_logger().error(message[:500], throttle_duration_sec=1.0)
        return type(response)(success=False, message=message)  # nothing half-filled

    def _sync(self, request, response):
        objects = request.objects if request.objects.objects else self.latest_objects
        joints = request.joint_state if request.joint_state.name else self.latest_joints
        if objects is None or joints is None:
            response.message = 'no objects or joint state yet (neither in the request nor on the topics)'
            return response
        detections = self._detections(objects)
        try:
            arm, width = ros_conversions.checked_arm_state(joints, self.arm_limits)
        except ValueError as exc:
            raise ValueError(f'joint_state: {exc}') from None
        try:
            self.twin.sync(detections, arm, width)
        except (KeyError, ValueError) as exc:
            raise ValueError(f'sync failed: {exc}') from None
        self.marker_pub.publish(
            markers.objects(
                'twin',
                [
                    (oid, f'twin: {oid}', *self.twin.world.object_pose(oid), self._extents(oid), (0.4, 0.6, 0.9, 0.35))
                    for oid in self.twin.world.object_ids
                ],
                self.get_clock().now().to_msg(),
            )
        )
        response.success, response.num_objects = True, len(objects.objects)
        response.message = f'twin synced with {len(objects.objects)} objects'
        return response

    def _detections(self, msg):
        """Twin Detections of a DetectedObjectArray; ValueError naming the first bad object field."""
        if len(msg.objects) > MAX_OBJECTS:
            raise ValueError(f'objects: {len(msg.objects)} objects, at most {MAX_OBJECTS}')
        seen = set()
        detections = []
        for i, o in enumerate(msg.objects):
            what = f'objects[{i}]'
            if not OBJECT_ID.fullmatch(o.id) or o.id.startswith('panda_') or o.id in self.reserved_names:
                raise ValueError(
                    f'{what}.id: {_short(o.id)} is not an object id (1-64 of A-Z a-z 0-9 _ . : -, '
                    'not a robot or scene name)'
                )
            if o.id in seen:
                raise ValueError(f'{what}.id: {_short(o.id)} given twice')
            seen.add(o.id)
            if o.mesh_id not in self.twin.library.entries:
                raise ValueError(
                    f'{what}.mesh_id: unknown {_short(o.mesh_id)}; known: {sorted(self.twin.library.entries)}'
                )
            if len(o.label) > MAX_LABEL:
                raise ValueError(f'{what}.label: longer than {MAX_LABEL} characters')
            position, quat = ros_conversions.checked_pose(o.pose, f'{what}.pose', MAX_POSITION)
            detections.append(Detection(o.id, o.mesh_id, tuple(position), tuple(quat), o.label))
        return detections

    def _rollout(self, request, response):
        if self.twin.world is None:
            response.message = 'the twin is empty: call ~/sync first'
            return response
        started = time.monotonic()
        settle = request.settle
        if not np.isfinite(settle) or not 0.0 <= settle <= self.max_duration:
            raise ValueError(f'settle: must be finite, in [0, {self.max_duration}] s (0: the default), not {settle}')
        settle = settle if settle > 0 else self.settle
        self._check_candidates(request.candidates, need_one=True)
        paths = []
        for i, c in enumerate(request.candidates):
            if len(c.trajectory.points) > MAX_POINTS:
                raise ValueError(f'candidates[{i}]: {len(c.trajectory.points)} trajectory points, at most {MAX_POINTS}')
            if any(e not in GRIPPER_EVENTS for e in c.gripper_events):
                raise ValueError(f'candidates[{i}].gripper_events: each must be GRIPPER_NONE, _OPEN or _CLOSE')
            try:
                path = codec.timed_path(c)
            except ValueError as exc:
                raise ValueError(f'candidates[{i}]: {exc}') from None
            if path.times[0] < 0 or path.times[-1] + settle > self.max_duration:
                raise ValueError(
                    f'candidates[{i}]: times from {path.times[0]:g} to {path.times[-1]:g} s plus settle {settle:g} s '
                    f'must lie in [0, {self.max_duration}] s'
                )
            paths.append(path)
        longest = max(p.times[-1] for p in paths) + settle
        if len(paths) * longest > self.max_batch_seconds:
            raise ValueError(
                f'candidates: {len(paths)} x {longest:.1f} s is more than max_batch_seconds {self.max_batch_seconds}'
            )
        results = self.twin.rollout_batch([Candidate(p.times, p.positions, p.gripper, settle) for p in paths])
        response.results = [messages.rollout_msg(p.id, r) for p, r in zip(paths, results)]
        response.success, response.wall_time = True, time.monotonic() - started
        return response

    def _check_candidates(self, candidates, need_one=False):
        """ValueError unless there are 1 (need_one) or 0 to max_candidates candidates with unique, non-empty ids."""
        if need_one and not candidates:
            raise ValueError('candidates: need at least one')
        if len(candidates) > self.max_candidates:
            raise ValueError(f'candidates: {len(candidates)} candidates, at most {self.max_candidates}')
        ids = [c.id for c in candidates]
        for i, cid in enumerate(ids):
            if not cid or len(cid) > 128:
                raise ValueError(f'candidates[{i}].id: must be 1 to 128 characters')
            if cid in ids[:i]:
                raise ValueError(f'candidates[{i}].id: {_short(cid)} given twice')

    def _render(self, request, response):
        if self.twin.world is None:
            response.message = 'the twin is empty: call ~/sync first'
            return response
        known = [c.name for c in self.twin.cameras]
        names = list(request.cameras) or known
        unknown = sorted({n for n in names if n not in known})
        if unknown:
            raise ValueError(f'cameras: unknown cameras {_short(unknown, 200)}; the twin has {known}')
        if len(set(names)) != len(names):
            raise ValueError('cameras: each camera at most once')
        for field in ('width', 'height'):
            if getattr(request, field) > self.max_render_size:
                raise ValueError(
                    f'{field}: {getattr(request, field)} px is more than max_render_size {self.max_render_size}'
                )
        width, height = request.width or self.width, request.height or self.height
        self._check_candidates(request.candidates)
        paths = []
        for i, c in enumerate(request.candidates):
            if len(c.ee_path) > MAX_POINTS:
                raise ValueError(f'candidates[{i}].ee_path: {len(c.ee_path)} points, at most {MAX_POINTS}')
            path = [(p.x, p.y, p.z) for p in c.ee_path]
            ros_conversions.check_finite(path, f'candidates[{i}].ee_path', MAX_POSITION)
            paths.append(path)
        scores = list(request.scores)
        if scores and len(scores) != len(paths):
            raise ValueError(f'scores: {len(scores)} scores for {len(paths)} candidates (one each, or none)')
        if scores and (not np.all(np.isfinite(scores)) or min(scores) < 0.0 or max(scores) > 1.0):
            raise ValueError('scores: each must be in [0, 1]')
        axes = list(request.axes_objects)
        unknown = sorted({o for o in axes if o not in self.twin.world.object_ids})
        if unknown:
            raise ValueError(f'axes_objects: unknown objects {_short(unknown, 200)}')
        if len(set(axes)) != len(axes):
            raise ValueError('axes_objects: each object at most once')
        overlay = overlays.combine(
            overlays.candidate_overlay(paths, scores or None) if paths else None,
            self._axes_overlay(axes) if axes else None,
        )
        self._bound_renderers(width, height)
        for name in names:
            frame = self.twin.render(name, width, height, depth=request.depth, overlay=overlay, fast=not request.pretty)
            info = ros_conversions.camera_info_msg(frame.intrinsics, Header(frame_id=f'{name}_optical_frame'))
            response.views.append(
                RenderedView(
                    camera_name=name,
                    candidate_ids=[c.id for c in request.candidates],
                    image=ros_conversions.image_msg(frame.rgb, 'rgb8', info.header),
                    camera_info=info,
                )
            )
            if request.depth:
                response.depths.append(ros_conversions.image_msg(frame.depth, '32FC1', info.header))
            if request.segmentation:
                seg = (self.twin.segmentation(name, width, height) + 1).astype(np.uint16)
                response.segmentations.append(ros_conversions.image_msg(seg, '16UC1', info.header))
        response.object_ids = list(self.twin.world.object_ids)
        response.success, response.message = True, f'{len(names)} views'
        return response

    def _bound_renderers(self, width, height):
        """The twin's world keeps a renderer (a GL context) per size: past MAX_RENDER_SIZES distinct sizes
        release them all (they are made again on demand), so requests of ever new sizes cannot pile them up."""
        if self.render_world is not self.twin.world:
            self.render_world, self.render_sizes = self.twin.world, set()
        if (width, height) not in self.render_sizes and len(self.render_sizes) >= MAX_RENDER_SIZES:
            self.twin.world.close()
            self.render_sizes.clear()
        self.render_sizes.add((width, height))

    def _extents(self, object_id):
        entry = next(o for o in self.twin.world.config.objects if o.id == object_id)
        return self.twin.library.shape(entry.mesh_id).extents

    def _axes_overlay(self, object_ids):
        data = self.twin.data

        def draw(scene):
            for oid in object_ids:
                body = data.body(oid)
                overlays.add_axes(scene, body.xipos, body.xmat.reshape(3, 3))  # from the centre of mass

        return draw

    def destroy_node(self):
        """Close the twin's renderers, then the node."""
        self.twin.close()
        super().destroy_node()


def main(args=None):
    """Run the sim_twin node."""
    node_runner.run(SimTwinNode, args)


if __name__ == '__main__':
    main()
