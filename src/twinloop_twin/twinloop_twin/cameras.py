"""Camera models of MuJoCo cameras in ROS conventions (CameraInfo intrinsics, optical frames)."""

from dataclasses import dataclass

import mujoco
import numpy as np

# MuJoCo cameras look along -z with y up; ROS optical frames look along +z with y down.
MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a camera image [px], as in a ROS CameraInfo."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def matrix(self):
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def project(self, points_optical):
        """Pixel coordinates (u, v) of points in the optical frame, pixel centres at integers."""
        p = np.atleast_2d(points_optical)
        return np.column_stack([self.fx * p[:, 0] / p[:, 2] + self.cx, self.fy * p[:, 1] / p[:, 2] + self.cy])


def intrinsics(model, camera, width, height):
    """Pinhole intrinsics of a MuJoCo camera rendered at width x height (square pixels)."""
    fovy = np.deg2rad(model.cam(camera).fovy[0])
    f = 0.5 * height / np.tan(fovy / 2)
    return Intrinsics(width, height, f, f, (width - 1) / 2, (height - 1) / 2)


def optical_pose(data, camera):
    """(position, rotation matrix) of the camera's optical frame in the world."""
    cam = data.cam(camera)
    rotation = cam.xmat.reshape(3, 3) @ MUJOCO_TO_OPTICAL
    return cam.xpos.copy(), rotation


def world_to_optical(data, camera, points_world):
    """World points (N x 3) [m] expressed in the camera's optical frame."""
    position, rotation = optical_pose(data, camera)
    return (np.atleast_2d(points_world) - position) @ rotation


def rotation_to_quat_xyzw(rotation):
    """Quaternion (x, y, z, w), ROS order, of a rotation matrix."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.asarray(rotation, float).flatten())
    return np.array([quat[1], quat[2], quat[3], quat[0]])


def realsense_noise(depth, rng, std_at_1m=0.001, dropout=0.0):
    """Depth with RealSense-like noise (sigma grows with z^2) and dropout (0 = no reading)."""
    if std_at_1m > 0:
        depth = depth + rng.normal(0.0, 1.0, depth.shape).astype(np.float32) * std_at_1m * depth**2
    if dropout > 0:
        depth = np.where(rng.random(depth.shape) < dropout, 0.0, depth)
    return depth.astype(np.float32)
