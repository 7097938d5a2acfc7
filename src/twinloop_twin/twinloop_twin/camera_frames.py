"""Camera frames on ROS topics, as the simulated worlds (world_sim, libero_world) publish them:
colour, aligned depth, both CameraInfos and the optical frame's pose, on topics.camera_topic."""

from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from twinloop_twin import cameras
from twinloop_ros import conversions as ros_conversions
from twinloop_ros.topics import LATCHED_QOS, SENSOR_QOS, camera_topic

KINDS = (
    ('color', Image, SENSOR_QOS),
    ('color_info', CameraInfo, SENSOR_QOS),
    ('depth', Image, SENSOR_QOS),
    ('depth_info', CameraInfo, SENSOR_QOS),
    ('pose', PoseStamped, LATCHED_QOS),
)


def camera_publishers(node, camera):
    """{kind: publisher} of one camera's topics (images and infos best effort, the pose latched)."""
    return {kind: node.create_publisher(msg_type, camera_topic(camera, kind), qos) for kind, msg_type, qos in KINDS}


def publish_frame(pubs, frame, header, depth_msg):
    """One camera frame on its topics (camera_publishers): colour, the given depth Image, both
    CameraInfos and the optical frame's pose in the world."""
    info = ros_conversions.camera_info_msg(frame.intrinsics, header)
    pubs['color'].publish(ros_conversions.image_msg(frame.rgb, 'rgb8', header))
    pubs['color_info'].publish(info)
    pubs['depth'].publish(depth_msg)
    pubs['depth_info'].publish(info)
    pose = PoseStamped(header=Header(stamp=header.stamp, frame_id='world'))
    quat = cameras.rotation_to_quat_xyzw(frame.rotation)
    pose.pose = ros_conversions.pose_msg(frame.position, (quat[3], quat[0], quat[1], quat[2]))
    pubs['pose'].publish(pose)
