"""realsense_camera: RealSense colour + depth aligned to colour + CameraInfo, several cameras by
serial number, with reconnect; extrinsics from the calibration YAML on /cameras/<name>/pose
(and as static transforms where tf2_ros exists). Topics match world_sim's, so everything
downstream runs unchanged on real cameras.
"""

import threading
import time

import rclpy  # noqa: I100  (before pyrealsense2, see realsense.py)
from geometry_msgs.msg import PoseStamped, TransformStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from twinloop_cameras import calibration, realsense
from twinloop_ros import conversions as ros_conversions, node_runner
from twinloop_ros.topics import LATCHED_QOS, SENSOR_QOS, camera_topic


def _doc(text, dynamic_typing=False):
    return ParameterDescriptor(description=text, dynamic_typing=dynamic_typing)


class RealSenseCameraNode(Node):
    """The realsense_camera node: one reader thread per camera, publishing on the world_sim topics."""

    def __init__(self):
        super().__init__('realsense_camera')
        self.running, self.threads = True, []
        names = self.declare_parameter('cameras', ['front'], _doc('camera names; each has <name>.serial etc.')).value
        self.depth_encoding = self.declare_parameter('depth_encoding', '16UC1', _doc('16UC1 (mm) or 32FC1 (m)')).value
        self.reconnect_period = self.declare_parameter(
            'reconnect_period', 2.0, _doc('seconds between reconnect attempts')
        ).value
        calibration_file = self.declare_parameter(
            'calibration_file', '', _doc('extrinsics YAML (empty: none published)')
        ).value
        ros_conversions.depth_for_encoding(__import__('numpy').zeros((1, 1)), self.depth_encoding)
        self.streams = []
        for name in names:
            p = lambda key, default, doc, n=name: self.declare_parameter(f'{n}.{key}', default, _doc(doc)).value  # noqa: E731
            # serial numbers are digits: typed dynamically so a YAML/CLI integer is accepted too
            serial = str(
                self.declare_parameter(
                    f'{name}.serial', '', _doc('device serial number (empty: the only device)', True)
                ).value
            )
            config = realsense.StreamConfig(
                name,
                serial,
                p('playback_file', '', 'play a recording instead of a device'),
                p('width', 640, 'colour and depth width [px]'),
                p('height', 480, '[px]'),
                p('fps', 30, 'frames per second'),
            )
            self.streams.append(realsense.RealSenseStream(config))
        self.pubs = {
            s.config.name: {
                k: self.create_publisher(t, camera_topic(s.config.name, k), SENSOR_QOS)
                for k, t in (('color', Image), ('depth', Image), ('color_info', CameraInfo), ('depth_info', CameraInfo))
            }
            for s in self.streams
        }
        self.publish_extrinsics(calibration.load(calibration_file) if calibration_file else {})
        self.threads = [threading.Thread(target=self.run, args=(s,), daemon=True) for s in self.streams]
        for thread in self.threads:
            thread.start()

    def publish_extrinsics(self, extrinsics):
        """Latch each camera pose on /cameras/<name>/pose and broadcast static transforms where tf2_ros exists."""
        self.pose_pubs = {}
        transforms = []
        for name, e in extrinsics.items():
            msg = PoseStamped(header=Header(stamp=self.get_clock().now().to_msg(), frame_id=e.parent_frame))
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = e.position
            q = msg.pose.orientation
            q.x, q.y, q.z, q.w = e.quaternion_xyzw
            self.pose_pubs[name] = self.create_publisher(PoseStamped, camera_topic(name, 'pose'), LATCHED_QOS)
            self.pose_pubs[name].publish(msg)
            t = TransformStamped(header=msg.header, child_frame_id=f'{name}_optical_frame')
            t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = e.position
            t.transform.rotation = msg.pose.orientation
            transforms.append(t)
        try:
            from tf2_ros import StaticTransformBroadcaster
        except ImportError:
            if transforms:
                self.get_logger().info('tf2_ros not available: extrinsics only on /cameras/<name>/pose')
            return
        self.tf_broadcaster = StaticTransformBroadcaster(self)
        self.tf_broadcaster.sendTransform(transforms)

    def run(self, stream):
        """Read and publish one camera; on any device error, close and retry after reconnect_period."""
        name = stream.config.name
        while self.running and rclpy.ok(context=self.context):
            try:
                if stream.pipeline is None:
                    stream.open()
                    self.get_logger().info(
                        f'camera {name}: streaming {stream.intrinsics.width}x{stream.intrinsics.height}'
                    )
                self.publish(name, stream.read())
            except (realsense.NoDevice, RuntimeError) as exc:
                self.get_logger().error(f'{exc}; retrying in {self.reconnect_period:.1f} s', throttle_duration_sec=10.0)
                stream.close()
                time.sleep(self.reconnect_period)
        stream.close()

    def publish(self, name, frame):
        """Publish a frame as colour, depth (depth_encoding) and CameraInfo, stamped with ROS time now."""
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=f'{name}_optical_frame')
        info = ros_conversions.camera_info_msg(frame.intrinsics, header)
        pubs = self.pubs[name]
        pubs['color'].publish(ros_conversions.image_msg(frame.rgb, 'rgb8', header))
        pubs['depth'].publish(
            ros_conversions.image_msg(
                ros_conversions.depth_for_encoding(frame.depth, self.depth_encoding), self.depth_encoding, header
            )
        )
        pubs['color_info'].publish(info)
        pubs['depth_info'].publish(info)

    def destroy_node(self):
        """Stop the reader threads, then the node."""
        self.running = False
        for thread in self.threads:
            thread.join(timeout=5.0)
        super().destroy_node()


def main(args=None):
    """Run the realsense_camera node."""
    node_runner.run(RealSenseCameraNode, args)


if __name__ == '__main__':
    main()
