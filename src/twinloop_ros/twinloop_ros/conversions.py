"""numpy <-> ROS message conversions for images, camera models and poses (no cv_bridge here)."""

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, Image

from twinloop_core.geometry import ObjectState
from twinloop_core.gripper import OPEN_WIDTH
from twinloop_core.robot import ARM_JOINTS, FINGER_JOINTS


def image_msg(array, encoding, header):
    """sensor_msgs/Image from an (h, w[, c]) array: rgb8, 32FC1 (metres) or 16UC1 (millimetres)."""
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0)
    array = np.ascontiguousarray(array)
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


IMAGE_ENCODINGS = {  # encoding -> (dtype, channels): what image_array reads
    'rgb8': (np.uint8, 3),
    'bgr8': (np.uint8, 3),
    'mono8': (np.uint8, 1),
    '32FC1': (np.float32, 1),
    '16UC1': (np.uint16, 1),
}
MAX_IMAGE_PIXELS = 4096 * 4096  # check_image's default bound


def image_array(msg):
    """The numpy view of a sensor_msgs/Image (rgb8, bgr8, mono8, 32FC1, 16UC1)."""
    dtypes = IMAGE_ENCODINGS
    if msg.encoding not in dtypes:
        raise ValueError(f'unsupported image encoding {msg.encoding!r}')
    dtype, channels = dtypes[msg.encoding]
    array = np.frombuffer(bytes(msg.data), dtype=dtype)
    row = msg.step // np.dtype(dtype).itemsize
    array = array.reshape(msg.height, row)[:, : msg.width * channels]
    return array.reshape(msg.height, msg.width, channels) if channels > 1 else array.reshape(msg.height, msg.width)


def rgb_array(msg):
    """An (h, w, 3) RGB uint8 array of a colour sensor_msgs/Image (rgb8 or bgr8); ValueError otherwise."""
    if msg.encoding not in ('rgb8', 'bgr8'):
        raise ValueError(f'{msg.encoding!r} is not a colour encoding (rgb8, bgr8)')
    array = image_array(msg)
    return np.ascontiguousarray(array[..., ::-1]) if msg.encoding == 'bgr8' else array


def depth_for_encoding(depth_m, encoding):
    """Depth in metres as the array for an encoding: 32FC1 (float32 metres) or 16UC1 (uint16 millimetres)."""
    if encoding == '32FC1':
        return depth_m.astype(np.float32)
    if encoding == '16UC1':
        return np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)
    raise ValueError(f'depth encoding must be 32FC1 or 16UC1, not {encoding!r}')


def depth_metres(msg):
    """Depth image in metres (float32) from 32FC1 (metres) or 16UC1 (millimetres, 0 = no reading)."""
    array = image_array(msg)
    if msg.encoding == '16UC1':
        return array.astype(np.float32) / 1000.0
    if msg.encoding == '32FC1':
        return array.astype(np.float32)
    raise ValueError(f'depth images must be 32FC1 or 16UC1, not {msg.encoding!r}')


def camera_info_msg(intrinsics, header):
    """sensor_msgs/CameraInfo of pinhole intrinsics (fx, fy, cx, cy [px]; plumb_bob, no distortion)."""
    k = intrinsics
    return CameraInfo(
        header=header,
        width=k.width,
        height=k.height,
        distortion_model='plumb_bob',
        d=[0.0] * 5,
        k=[k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def pose_msg(position, quat_wxyz):
    """geometry_msgs/Pose from a position [m] and a quaternion (w, x, y, z)."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = (float(v) for v in quat_wxyz)
    return pose


def pose_position(pose):
    """(x, y, z) of a geometry_msgs/Pose [m]."""
    return (pose.position.x, pose.position.y, pose.position.z)


def pose_quat(pose):
    """(w, x, y, z) of a geometry_msgs/Pose."""
    return (pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z)


def stamp(seconds):
    """builtin_interfaces/Time of a time in seconds; rounding carries into the seconds (8.9999999997 -> 9.0)."""
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def seconds(time_msg):
    """Seconds of a builtin_interfaces/Time or Duration."""
    return time_msg.sec + time_msg.nanosec * 1e-9


def duration(t):
    """builtin_interfaces/Duration of t seconds (integer nanoseconds: no rounding carry)."""
    sec, nanosec = divmod(int(round(t * 1e9)), 1_000_000_000)
    return Duration(sec=sec, nanosec=nanosec)


def arm_state(msg, arm_joints=ARM_JOINTS, finger_joints=FINGER_JOINTS):
    """(arm positions [7], gripper width [m]) of a sensor_msgs/JointState, joints found by name.

    A state without the fingers reports the gripper open; a missing arm joint raises ValueError."""
    names = list(msg.name)
    if len(msg.position) != len(names):
        raise ValueError(f'joint state has {len(names)} names and {len(msg.position)} positions')
    missing = [j for j in arm_joints if j not in names]
    if missing:
        raise ValueError(f'joint state lacks {missing}')
    q = np.array([msg.position[names.index(j)] for j in arm_joints], float)
    fingers = [abs(msg.position[names.index(j)]) for j in finger_joints if j in names]
    width = float(sum(fingers)) if len(fingers) == len(finger_joints) else OPEN_WIDTH
    return q, width


def object_states(msg):
    """{id: ObjectState} of a twinloop_interfaces/DetectedObjectArray."""
    return {
        o.id: ObjectState(pose_position(o.pose), pose_quat(o.pose), (o.size.x, o.size.y, o.size.z)) for o in msg.objects
    }


# --- validation of received messages: ValueError says which field is wrong and why ------------------
def _short(value, limit=40):
    """repr of a value cut to limit characters (fuzzed strings can be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + '...'


def check_image(msg, encodings=None, max_pixels=MAX_IMAGE_PIXELS):
    """Raise ValueError unless image_array can read msg as it claims to be: a supported encoding (one of
    encodings if given), width and height > 0 with at most max_pixels, host byte order for multi-byte
    pixels, a step holding a whole row of whole pixels and exactly step x height bytes of data."""
    allowed = IMAGE_ENCODINGS if encodings is None else [e for e in encodings if e in IMAGE_ENCODINGS]
    if msg.encoding not in allowed:
        raise ValueError(f'encoding {_short(msg.encoding)} is not one of {list(allowed)}')
    dtype, channels = IMAGE_ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    if msg.width == 0 or msg.height == 0:
        raise ValueError(f'width and height must be > 0 (got {msg.width} x {msg.height})')
    if msg.width * msg.height > max_pixels:
        raise ValueError(f'{msg.width} x {msg.height} pixels is more than {max_pixels}')
    if itemsize > 1 and bool(msg.is_bigendian) == np.little_endian:
        raise ValueError(f'is_bigendian={msg.is_bigendian}: {msg.encoding} must be in host byte order')
    if msg.step < msg.width * channels * itemsize or msg.step % itemsize:
        raise ValueError(
            f'step {msg.step} does not hold a row of {msg.width} {msg.encoding} pixels in whole {itemsize}-byte values'
        )
    if len(msg.data) != msg.step * msg.height:
        raise ValueError(f'data has {len(msg.data)} bytes, not step x height = {msg.step * msg.height}')


def check_finite(values, what, max_abs=None):
    """values as a float array; ValueError naming `what` unless every one is finite (and |v| <= max_abs)."""
    try:
        array = np.asarray(values, float)
    except (TypeError, ValueError):
        raise ValueError(f'{what}: not numbers') from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f'{what}: NaN or inf')
    if max_abs is not None and np.any(np.abs(array) > max_abs):
        raise ValueError(f'{what}: beyond +-{max_abs:g}')
    return array


def checked_pose(pose, what='pose', max_abs=1e3, tolerance=0.01):
    """(position, quaternion w x y z normalised) of a geometry_msgs/Pose; ValueError naming `what` for a
    non-finite or farther than max_abs [m] position, or an orientation that is not a unit quaternion
    (|q|^2 off 1 by more than tolerance, the tf2 rule; a zero quaternion among them)."""
    position = check_finite(pose_position(pose), f'{what}.position', max_abs)
    quat = check_finite(pose_quat(pose), f'{what}.orientation')
    norm2 = float(np.dot(quat, quat))
    if abs(norm2 - 1.0) > tolerance:
        raise ValueError(f'{what}.orientation: not a unit quaternion (|q| = {np.sqrt(norm2):.3g})')
    return position, quat / np.sqrt(norm2)


def check_camera_info(msg, max_pixels=MAX_IMAGE_PIXELS):
    """Raise ValueError unless a sensor_msgs/CameraInfo is a usable pinhole model: width and height > 0
    (at most max_pixels), K finite with fx, fy > 0 and its last row 0 0 1."""
    if msg.width == 0 or msg.height == 0 or msg.width * msg.height > max_pixels:
        raise ValueError(f'width x height {msg.width} x {msg.height} must be > 0 and at most {max_pixels} pixels')
    k = check_finite(msg.k, 'k').reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], (0.0, 0.0, 1.0)):
        raise ValueError(f'k is not a pinhole camera matrix (fx {k[0, 0]:g}, fy {k[1, 1]:g}, last row {k[2].tolist()})')


def checked_arm_state(msg, arm_limits=None, max_width=2 * OPEN_WIDTH, tolerance=0.1):
    """arm_state(msg) when usable: ValueError for what arm_state rejects, non-finite values, arm joints
    beyond arm_limits ((7, 2) [rad]) by more than tolerance [rad], or a gripper width beyond max_width [m]."""
    q, width = arm_state(msg)
    check_finite(q, 'arm positions')
    check_finite(width, 'finger positions')
    if arm_limits is not None:
        limits = np.asarray(arm_limits, float)
        outside = np.nonzero((q < limits[:, 0] - tolerance) | (q > limits[:, 1] + tolerance))[0]
        if len(outside):
            raise ValueError(f'{[ARM_JOINTS[i] for i in outside]} beyond their limits')
    if width > max_width:
        raise ValueError(f'the fingers are {width:.3g} m apart, more than {max_width} m')
    return q, width
