"""The camera image IKER's code writer is shown through ROS (RosPorts.camera_image): the newest colour image,
CameraInfo and optical pose of the orchestrator's query_camera, in RGB whatever the encoding, and None - a schematic
view then - while a part is missing or unusable. Messages built in process; no DDS."""

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image

from twinloop_core.geometry import quat_matrix, z_rotation
from twinloop_core.ports import CancelToken
from twinloop_planning.ports.ros import LatestState, RosClients, RosPorts
from twinloop_ros.conversions import pose_msg

K = [200.0, 0.0, 16.0, 0.0, 200.0, 12.0, 0.0, 0.0, 1.0]
QUAT = tuple(z_rotation(0.3))


def _image(rgb, encoding='rgb8'):
    data = rgb[..., ::-1] if encoding == 'bgr8' else rgb
    height, width = rgb.shape[:2]
    return Image(height=height, width=width, encoding=encoding, step=3 * width, data=data.tobytes())


def _ports(parts, camera='front'):
    latest = LatestState(camera)
    for part, msg in parts.items():
        latest.on_camera(part, msg)
    return RosPorts(RosClients(latest, None, None, None, None, None), CancelToken())


def _parts(rgb, encoding='rgb8', width=32):
    return {
        'color': _image(rgb, encoding),
        'color_info': CameraInfo(width=width, height=24, k=K),
        'pose': PoseStamped(pose=pose_msg((1.0, 0.0, 1.2), QUAT)),
    }


def test_the_query_camera_image_comes_with_its_model_in_rgb():
    rgb = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    for encoding in ('rgb8', 'bgr8'):
        image = _ports(_parts(rgb, encoding)).camera_image()
        assert image.name == 'front' and np.array_equal(image.rgb, rgb)
        assert np.allclose(image.K, np.reshape(K, (3, 3))) and np.allclose(image.position, (1.0, 0.0, 1.2))
        assert np.allclose(image.rotation, quat_matrix(np.asarray(QUAT)))


def test_no_usable_query_camera_image_is_none():
    rgb = np.zeros((24, 32, 3), np.uint8)
    parts = _parts(rgb)
    assert _ports(parts, camera='').camera_image() is None  # no query camera configured
    assert _ports({k: v for k, v in parts.items() if k != 'pose'}).camera_image() is None  # no extrinsics yet
    assert _ports(_parts(rgb, width=64)).camera_image() is None  # CameraInfo of another size
    mono = Image(height=24, width=32, encoding='mono8', step=32, data=bytes(24 * 32))
    assert _ports({**parts, 'color': mono}).camera_image() is None  # not a colour image
    bad = PoseStamped(pose=pose_msg((1.0, 0.0, 1.2), (0.0, 0.0, 0.0, 0.0)))
    assert _ports({**parts, 'pose': bad}).camera_image() is None  # not a unit quaternion
