"""pose_estimation: known objects' 6D poses from the cameras' colour + aligned depth.

Subscribes, per camera in `cameras`: /cameras/<cam>/color/image_raw, .../aligned_depth_to_color/
image_raw, .../color/camera_info and /cameras/<cam>/pose (latched extrinsics), plus /joint_states
(the robot is cut out of the cloud). Frames are used only as a synchronised set (every camera's
colour and depth - and the pose of `moving_cameras` - with the same stamp, within sync_tolerance).
Publishes DetectedObjectArray on `objects_topic` stamped with the frames' capture time: found
objects with their confidence, known objects not seen in this set with their last pose and
confidence 0 (as the message defines). Tracks continuously and re-detects globally when an object
is lost or on ~/redetect (std_srvs/Trigger). Where tf2_ros is installed each seen object is also a
frame on /tf. When no fresh synchronised set arrives for `stale_after` seconds nothing is
published and /diagnostics says which camera is missing - never a silent stale pose.

Each message is validated on arrival (image encoding, size, step and data length; a pinhole
CameraInfo; a finite camera pose with a unit quaternion; finite joint positions): a malformed one
is dropped with a throttled warning naming the topic, and the previous good message stays in use.
A frame set whose parts disagree (colour, depth and CameraInfo sizes) is not used.
"""

import threading
import time

from twinloop_interfaces.msg import DetectedObject, DetectedObjectArray

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from twinloop_perception import pose_estimation as pe
from twinloop_twin import markers, scene
from twinloop_ros import conversions as ros_conversions, node_runner, topics


COLOR_ENCODINGS = ('rgb8', 'bgr8')
DEPTH_ENCODINGS = ('32FC1', '16UC1')


def _stamp(header):
    return ros_conversions.seconds(header.stamp)


class PoseEstimationNode(Node):
    """The pose_estimation node: detects and tracks the known objects in synchronised multi-camera RGB-D."""

    def __init__(self):
        super().__init__('pose_estimation')
        p = lambda name, default, doc: self.declare_parameter(name, default, ParameterDescriptor(description=doc)).value  # noqa: E731
        scene_path = p('scene', '', 'scene YAML whose objects are the known objects (meshes, labels, colours)')
        self.camera_names = list(p('cameras', ['front', 'left'], 'cameras to fuse'))
        self.moving = set(
            p(
                'moving_cameras',
                ['wrist'],
                'cameras whose pose changes (e.g. on the wrist): their pose must match the frame stamp',
            )
        )
        self.objects_topic = p('objects_topic', topics.OBJECTS, 'where the detected objects are published')
        self.rate = p('rate', 10.0, 'processing rate [Hz] (tracking; a detection takes longer)')
        self.sync_tolerance = p('sync_tolerance', 0.02, 'largest stamp difference within a frame set [s]')
        self.stale_after = p(
            'stale_after', 1.0, 'no fresh synchronised frames for this long: error, nothing published [s]'
        )
        self.use_robot_filter = p('robot_filter', True, 'cut the robot (at /joint_states) out of the cloud')
        voxel = p('voxel', 0.004, 'cloud resolution [m]')
        if not scene_path:
            raise ValueError('parameter "scene" (the scene YAML with the known objects) is required')
        config = scene.SceneConfig.from_yaml(scene_path)
        estimator_config = pe.EstimatorConfig(voxel=voxel)
        robot = None
        if self.use_robot_filter:
            model = scene.build_spec(scene.SceneConfig([], [])).compile()
            robot = pe.RobotFilter(model, scene.ARM_JOINTS, scene.FINGER_JOINTS, estimator_config.robot_margin)
        known = [o for o in config.objects if o.perceived]
        self.estimator = pe.PoseEstimator(pe.build_models(known, estimator_config), estimator_config, robot)
        self.latest = {name: {} for name in self.camera_names}
        self.joints = pe.JointHistory()
        self.lock = threading.Lock()
        self.redetect = True
        self.last_stamp, self.last_fresh = None, time.monotonic()
        self.last_seen = {}
        for name in self.camera_names:
            for kind, msg_type, qos in (
                ('color', Image, topics.SENSOR_QOS),
                ('depth', Image, topics.SENSOR_QOS),
                ('color_info', CameraInfo, topics.SENSOR_QOS),
                ('pose', PoseStamped, topics.LATCHED_QOS),
            ):
                self.create_subscription(msg_type, topics.camera_topic(name, kind), self._keeper(name, kind), qos)
        self.create_subscription(JointState, topics.JOINT_STATES, self.on_joints, topics.STATE_QOS)
        self.publisher = self.create_publisher(DetectedObjectArray, self.objects_topic, topics.STATE_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, '~/markers', topics.STATE_QOS)
        self.diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, topics.STATE_QOS)
        self.create_service(Trigger, '~/redetect', self.on_redetect)
        self.tf = _transform_broadcaster(self)
        self.create_timer(1.0 / self.rate, self.process, callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f'pose_estimation ready: {len(known)} known objects, cameras {self.camera_names}, '
            f'publishing {self.objects_topic}'
        )

    def _keeper(self, name, kind):
        check = {
            'color': lambda m: ros_conversions.check_image(m, COLOR_ENCODINGS),
            'depth': lambda m: ros_conversions.check_image(m, DEPTH_ENCODINGS),
            'color_info': ros_conversions.check_camera_info,
            'pose': lambda m: ros_conversions.checked_pose(m.pose),
        }[kind]
        logger = self.get_logger().get_child(f'{name}_{kind}')  # its own warning throttle per topic
        topic = topics.camera_topic(name, kind)

        def keep(msg):
            try:
                check(msg)
            except ValueError as exc:
                logger.warning(f'{topic}: message dropped: {exc}', throttle_duration_sec=5.0)
                return
            with self.lock:
                self.latest[name][kind] = msg

        return keep

    def on_redetect(self, _request, response):
        """Forget everything (e.g. a new episode) and detect from scratch on the next frame set: images
        that arrive after this request (those kept from before a world reset show the old scene; camera
        info and latched poses stay)."""
        with self.lock:
            for parts in self.latest.values():
                parts.pop('color', None), parts.pop('depth', None)
        self.redetect, self.last_seen = True, {}
        self.estimator.previous, self.estimator.predicted = {}, {}
        response.success, response.message = True, 'a full detection runs on the next frame set'
        return response

    def frame_set(self):
        """The newest synchronised frames of every camera, or (None, reason)."""
        with self.lock:
            latest = {name: dict(parts) for name, parts in self.latest.items()}
        missing = [
            f'{name}/{kind}'
            for name, parts in latest.items()
            for kind in ('color', 'depth', 'color_info', 'pose')
            if kind not in parts
        ]
        if missing:
            return None, f'no messages yet on {", ".join(missing)}'
        stamps = {
            f'{name}/{kind}': _stamp(parts[kind].header)
            for name, parts in latest.items()
            for kind in (('color', 'depth', 'pose') if name in self.moving else ('color', 'depth'))
        }
        if max(stamps.values()) - min(stamps.values()) > self.sync_tolerance:
            newest = max(stamps.values())
            behind = [k for k, s in stamps.items() if newest - s > self.sync_tolerance]
            return (
                None,
                f'frames not synchronised: {", ".join(behind)} behind by up to {newest - min(stamps.values()):.3f} s',
            )
        frames = []
        for name, parts in latest.items():
            color, depth, info = parts['color'], parts['depth'], parts['color_info']
            sizes = {(m.width, m.height) for m in (color, depth, info)}
            if len(sizes) > 1:
                return None, (
                    f'{name}: colour {color.width}x{color.height}, depth {depth.width}x{depth.height} and '
                    f'camera_info {info.width}x{info.height} differ'
                )
            rgb = ros_conversions.rgb_array(color)
            position, quat = ros_conversions.checked_pose(parts['pose'].pose)
            R = pe.Rotation.from_quat([*quat[1:], quat[0]]).as_matrix()
            frames.append(
                pe.Frame(rgb, ros_conversions.depth_metres(depth), np.array(info.k).reshape(3, 3), position, R)
            )
        return (frames, latest[self.camera_names[0]]['color'].header.stamp), ''

    def process(self):
        """Timer tick: detect or track on a fresh synchronised frame set; publish objects, markers, /tf, diagnostics."""
        result, reason = self.frame_set()
        if result is not None and (self.last_stamp is None or result[1] != self.last_stamp):
            self.last_fresh = time.monotonic()
        elif time.monotonic() - self.last_fresh > self.stale_after:
            self._diagnose(
                DiagnosticStatus.ERROR,
                f'no fresh synchronised frames for {time.monotonic() - self.last_fresh:.1f} s'
                + (f': {reason}' if reason else ''),
                {},
            )
            return
        if result is None or result[1] == self.last_stamp:
            return
        frames, stamp = result
        joints = self._joints_at(ros_conversions.seconds(stamp))
        if joints is None:
            return  # no joint state at the frames' capture time yet: the next tick tries again
        arm, fingers = joints
        self.last_stamp = stamp
        started = time.perf_counter()
        # taken before the work: a request during it is kept for the next set
        redetect, self.redetect = self.redetect, False
        mode = 'detect' if redetect else 'track'
        found = self.estimator.detect(frames, arm, fingers) if redetect else self.estimator.track(frames, arm, fingers)
        elapsed = time.perf_counter() - started
        message = self._message(found, stamp)
        self.publisher.publish(message)
        if self.tf is not None:  # object frames on /tf where tf2_ros is installed (a workstation)
            self.tf.sendTransform([_transform_msg(o) for o in message.objects if o.confidence > 0])
        self.marker_pub.publish(
            markers.objects(
                'perceived',
                [
                    (
                        o.id,
                        f'{o.label} {o.confidence:.2f}',
                        ros_conversions.pose_position(o.pose),
                        ros_conversions.pose_quat(o.pose),
                        (o.size.x, o.size.y, o.size.z),
                        (*self.estimator.models[o.id].color, 0.9 if o.confidence > 0 else 0.3),
                    )
                    for o in message.objects
                ],
                stamp,
            )
        )
        unseen = sorted(set(self.estimator.models) - set(found))
        level = DiagnosticStatus.WARN if unseen else DiagnosticStatus.OK
        self._diagnose(
            level,
            f'{len(found)}/{len(self.estimator.models)} objects ({mode}, {elapsed * 1000:.0f} ms)'
            + (f'; not seen: {", ".join(unseen)}' if unseen else ''),
            {'mode': mode, 'ms': f'{elapsed * 1000:.0f}'},
        )

    def on_joints(self, msg):
        """Record the arm and finger joints by stamp, to cut the robot out of frames captured then."""
        try:
            arm, width = ros_conversions.checked_arm_state(msg)
        except ValueError as exc:  # another robot's joints (or a malformed message): not the arm to cut out
            self.get_logger().warning(f'joint state ignored: {exc}', throttle_duration_sec=5.0)
            return
        with self.lock:
            self.joints.add(_stamp(msg.header), arm, (width / 2, width / 2))  # the Panda's fingers move together

    def _joints_at(self, stamp):
        """(arm, fingers) when the frames were captured, (None, open fingers) with no robot joints at
        all, or None while the joint state for that time has not arrived."""
        with self.lock:
            if not self.joints.samples:
                return None, (0.04, 0.04)
            joints, newest = self.joints.at(stamp), self.joints.samples[-1][0]
        if joints is None and newest < stamp - self.stale_after:
            self._diagnose(
                DiagnosticStatus.WARN,
                f"no joint state near the frames' capture time ({stamp:.2f} s): "
                'waiting for /joint_states to cut the robot out',
                {},
            )
        return joints

    def _message(self, found, stamp):
        msg = DetectedObjectArray(header=Header(stamp=stamp, frame_id='world'))
        for oid, model in self.estimator.models.items():
            estimate = found.get(oid) or self.estimator.predicted.get(oid) or self.last_seen.get(oid)
            if estimate is None:
                continue
            self.last_seen[oid] = estimate
            detected = DetectedObject(
                header=msg.header,
                id=oid,
                label=model.label,
                mesh_id=model.mesh_id,
                pose=ros_conversions.pose_msg(estimate.position, estimate.quat),
                confidence=float(estimate.confidence) if oid in found else 0.0,
                symmetry=model.symmetry,
                source=DetectedObject.SOURCE_PERCEPTION,
            )
            detected.size.x, detected.size.y, detected.size.z = (float(v) for v in model.extents)
            msg.objects.append(detected)
        return msg

    def _diagnose(self, level, message, values):
        status = DiagnosticStatus(level=level, name='twinloop/pose_estimation', message=message, hardware_id='cameras')
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        self.diagnostics.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))
        if level == DiagnosticStatus.ERROR:
            self.get_logger().error(message, throttle_duration_sec=5.0)


def _transform_broadcaster(node):
    try:
        from tf2_ros import TransformBroadcaster
    except ImportError:
        node.get_logger().info('tf2_ros not installed: object frames only on the objects topic')
        return None
    return TransformBroadcaster(node)


def _transform_msg(detected):
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped(header=detected.header, child_frame_id=detected.id)
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = ros_conversions.pose_position(
        detected.pose
    )
    t.transform.rotation = detected.pose.orientation
    return t


def main(args=None):
    """Run the pose_estimation node (two executor threads)."""
    node_runner.run(PoseEstimationNode, args, threads=2)


if __name__ == '__main__':
    main()
