"""sim_twin: the twin as a ROS node.

Services: ~/sync (twinloop_interfaces/SyncTwin), ~/rollout (RolloutTrajectories),
~/render (RenderViews). Keeps the latest detected objects and /joint_states so an empty sync
request uses them.
"""

import time

from twinloop_interfaces.msg import DetectedObjectArray, RenderedView
from twinloop_interfaces.srv import RenderViews, RolloutTrajectories, SyncTwin

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from twinloop_twin import markers, messages, objects, overlays, scene
from twinloop_ros import codec, node_runner, topics
from twinloop_ros import conversions as ros_conversions
from twinloop_twin.twin import Candidate, MeshLibrary, SimTwin


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
        if not scene_path:
            raise ValueError('parameter "scene" (the scene YAML with the known objects and cameras) is required')
        config = scene.SceneConfig.from_yaml(scene_path)
        self.twin = SimTwin(MeshLibrary.from_scene(config), config.cameras)
        self.latest_objects = self.latest_joints = None
        self.create_subscription(
            DetectedObjectArray, objects_topic, lambda m: setattr(self, 'latest_objects', m), topics.STATE_QOS
        )
        self.create_subscription(
            JointState, topics.JOINT_STATES, lambda m: setattr(self, 'latest_joints', m), topics.STATE_QOS
        )
        self.marker_pub = self.create_publisher(MarkerArray, '~/markers', topics.STATE_QOS)
        self.create_service(SyncTwin, '~/sync', self.on_sync)
        self.create_service(RolloutTrajectories, '~/rollout', self.on_rollout)
        self.create_service(RenderViews, '~/render', self.on_render)
        self.get_logger().info(
            f'sim_twin ready: {len(config.objects)} known objects, cameras {[c.name for c in config.cameras]}'
        )

    def on_sync(self, request, response):
        """Sync the twin to the request's objects and joints (else the latest on the topics); publish it as markers."""
        objects = request.objects if request.objects.objects else self.latest_objects
        joints = request.joint_state if request.joint_state.name else self.latest_joints
        if objects is None or joints is None:
            response.message = 'no objects or joint state yet (neither in the request nor on the topics)'
            return response
        try:
            arm, width = ros_conversions.arm_state(joints)
            self.twin.sync(messages.detections(objects), arm, width)
        except (KeyError, ValueError) as exc:
            response.message = f'sync failed: {exc}'
            self.get_logger().error(response.message)
            return response
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

    def on_rollout(self, request, response):
        """Play the requested candidates in the twin from its synced state."""
        if self.twin.world is None:
            response.message = 'the twin is empty: call ~/sync first'
            return response
        started = time.monotonic()
        settle = request.settle if request.settle > 0 else self.settle
        try:
            paths = [codec.timed_path(c) for c in request.candidates]
            results = self.twin.rollout_batch([Candidate(p.times, p.positions, p.gripper, settle) for p in paths])
            response.results = [messages.rollout_msg(p.id, r) for p, r in zip(paths, results)]
        except ValueError as exc:
            response.message = f'invalid candidate: {exc}'
            self.get_logger().error(response.message)
            return response
        response.success, response.wall_time = True, time.monotonic() - started
        return response

    def on_render(self, request, response):
        """Render the requested cameras of the synced twin, with candidate paths and object axes drawn in."""
        if self.twin.world is None:
            response.message = 'the twin is empty: call ~/sync first'
            return response
        names = list(request.cameras) or [c.name for c in self.twin.cameras]
        unknown = sorted(set(names) - {c.name for c in self.twin.cameras})
        if unknown:
            response.message = f'unknown cameras {unknown}'
            return response
        width, height = request.width or self.width, request.height or self.height
        paths = [[(p.x, p.y, p.z) for p in c.ee_path] for c in request.candidates]
        unknown = sorted(set(request.axes_objects) - set(self.twin.world.object_ids))
        if unknown:
            response.message = f'unknown objects for axes {unknown}'
            return response
        overlay = overlays.combine(
            overlays.candidate_overlay(paths, list(request.scores) or None) if paths else None,
            self._axes_overlay(request.axes_objects) if request.axes_objects else None,
        )
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

    def _extents(self, object_id):
        entry = next(o for o in self.twin.world.config.objects if o.id == object_id)
        return objects.make_shape(entry.kind, **entry.params).extents

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
