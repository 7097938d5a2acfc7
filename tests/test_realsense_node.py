"""The RealSense node runs the real librealsense pipeline on a software-device recording of
rendered frames, and fails clearly when no camera is connected."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import rclpy  # noqa: F401  (before pyrealsense2)
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from twinloop_cameras import calibration, realsense
from twinloop_twin import cameras, scene, world
from twinloop_ros import conversions as ros_conversions
from twinloop_ros.topics import camera_topic

SCENE = os.path.join(os.environ['TWINLOOP_ROOT'], 'config', 'scenes', 'tabletop.yaml')


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    """A librealsense recording of the simulated front camera, plus its calibration YAML."""
    folder = tmp_path_factory.mktemp('realsense')
    sim = world.SimWorld(scene.SceneConfig.from_yaml(SCENE))
    frame = sim.render('front', 160, 120)
    sim.close()
    path = folder / 'front.db3'
    realsense.record_software_device(path, [(frame.rgb, frame.depth)] * 8, frame.intrinsics)
    quat = cameras.rotation_to_quat_xyzw(frame.rotation)
    calib = folder / 'calibration.yaml'
    calib.write_text(
        f'cameras:\n  front:\n    parent_frame: world\n    position: {[float(v) for v in frame.position]}\n'
        f'    quaternion_xyzw: {[float(v) for v in quat]}\n'
    )
    return path, calib, frame


def test_node_publishes_software_device_frames(spawn, ros_context, recording):
    path, calib, frame = recording
    spawn(
        '-m',
        'twinloop_cameras.realsense_camera_node',
        '--ros-args',
        '-p',
        'cameras:=[front]',
        '-p',
        f'front.playback_file:={path}',
        '-p',
        f'calibration_file:={calib}',
    )
    node = rclpy.create_node('realsense_test', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    got = {}
    for kind, msg_type in (('color', Image), ('depth', Image), ('color_info', CameraInfo)):
        node.create_subscription(
            msg_type, camera_topic('front', kind), lambda m, k=kind: got.__setitem__(k, m), qos_profile_sensor_data
        )
    node.create_subscription(
        PoseStamped,
        camera_topic('front', 'pose'),
        lambda m: got.__setitem__('pose', m),
        QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    deadline = time.monotonic() + 60
    while len(got) < 4 and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    executor.shutdown()
    node.destroy_node()
    assert len(got) == 4, f'topics received: {sorted(got)}'

    rgb, depth = ros_conversions.image_array(got['color']), ros_conversions.image_array(got['depth'])
    assert got['color'].encoding == 'rgb8' and rgb.shape == (120, 160, 3)
    assert got['depth'].encoding == '16UC1' and depth.shape == (120, 160)
    np.testing.assert_array_equal(rgb, frame.rgb)
    expected_mm = np.round(frame.depth * 1000).astype(int)
    valid = depth > 0  # rs.align leaves a few holes where reprojected pixels round apart
    assert valid.mean() > 0.9
    # rs.align reprojects every pixel; rounding may move a value by one pixel: compare within 3x3
    padded = np.pad(expected_mm, 1, mode='edge')
    shifted = np.stack([padded[1 + dv : 121 + dv, 1 + du : 161 + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)])
    error = np.abs(shifted - depth.astype(int)[None]).min(axis=0)
    assert error[valid].max() <= 1
    k = np.array(got['color_info'].k).reshape(3, 3)
    np.testing.assert_allclose(k, frame.intrinsics.matrix, rtol=1e-5)
    assert got['pose'].header.frame_id == 'world'
    p = got['pose'].pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], frame.position, atol=1e-6)


def test_no_device_is_a_clear_error_and_the_node_keeps_trying(tmp_path):
    env = dict(os.environ)
    process = subprocess.Popen(
        [
            'python',
            '-m',
            'twinloop_cameras.realsense_camera_node',
            '--ros-args',
            '-p',
            'cameras:=[wrist]',
            '-p',
            'wrist.serial:=000000000000',
            '-p',
            'reconnect_period:=0.5',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    time.sleep(4)
    assert process.poll() is None, 'the node must stay up and retry'
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=20)
    assert 'camera wrist' in output and ('no RealSense device connected' in output or 'not connected' in output), output
    assert process.returncode == 0


def test_calibration_errors(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('cameras:\n  front:\n    position: [1, 2]\n    quaternion_xyzw: [0, 0, 0, 1]\n')
    with pytest.raises(ValueError, match='front'):
        calibration.load(bad)
    bad.write_text('cameras:\n  front:\n    position: [1, 2, 3]\n    quaternion_xyzw: [0, 0, 0, 2]\n')
    with pytest.raises(ValueError, match='unit quaternion'):
        calibration.load(bad)
