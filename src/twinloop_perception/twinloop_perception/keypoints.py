"""Keypoint proposal for IKER (shared/seeds/002, Sec. III-B), no rclpy.

Movable objects get keypoints at the extremities of their surface along their two main
principal axes through the object's centre; static objects (bins, racks) get keypoints spread
uniformly over their upward-facing surface (farthest-point sampling). Labels are numbered from 1,
grouped by object. Keypoints live in their object's frame, so they move with its pose. In a
camera view, keypoints hidden behind something (depth test) are not shown, and of keypoints that
would overlap in the image, background (static-object) ones are removed first, then the one with
the higher label.
"""

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation


@dataclass
class Keypoint:
    """A numbered keypoint on an object, in the object frame [m]."""

    label: int  # 1-based, grouped by object
    object_id: str
    local: np.ndarray  # in the object frame [m]
    static: bool  # on a static (background) object


def _principal_axes(points):
    centred = points - points.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(centred.T))
    return vectors[:, np.argsort(values)[::-1]]


def _extremities(mesh, samples=4000, seed=0):
    """Surface points farthest along +-(the two main principal axes), through the centre."""
    points, _ = trimesh.sample.sample_surface(mesh, samples, seed=seed)
    centre = mesh.bounds.mean(axis=0)
    axes = _principal_axes(points)
    out = []
    for axis in axes.T[:2]:
        offsets = points - centre
        along = offsets @ axis
        across = np.linalg.norm(offsets - np.outer(along, axis), axis=1)
        candidates = np.nonzero(across <= np.quantile(across, 0.1))[0]  # the samples nearest the axis
        out.append(points[candidates[np.argmax(along[candidates])]])
        out.append(points[candidates[np.argmin(along[candidates])]])
    return np.array(out)


def _spread(mesh, count, samples=4000, seed=0):
    """count points spread uniformly over the upward-facing surface (farthest-point sampling)."""
    points, faces = trimesh.sample.sample_surface(mesh, samples, seed=seed)
    up = points[mesh.face_normals[faces][:, 2] > 0.7]
    points = up if len(up) >= count else points
    chosen = [int(np.argmin(np.linalg.norm(points - points.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < count:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return points[chosen]


def propose(objects, static_count=6):
    """Keypoints for [(object id, trimesh mesh in the object frame, static)], numbered by object."""
    keypoints = []
    for object_id, mesh, static in objects:
        locals_ = _spread(mesh, static_count) if static else _extremities(mesh)
        for local in locals_:
            keypoints.append(Keypoint(len(keypoints) + 1, object_id, np.asarray(local, float), static))
    return keypoints


def world_positions(keypoints, poses):
    """(K, 3) world positions; poses: {object id: (position, quat wxyz)}."""
    out = np.empty((len(keypoints), 3))
    for i, k in enumerate(keypoints):
        position, quat = poses[k.object_id]
        rotation = Rotation.from_quat([quat[1], quat[2], quat[3], quat[0]]).as_matrix()
        out[i] = rotation @ k.local + np.asarray(position, float)
    return out


def project(points_world, K, camera_position, camera_rotation, depth=None, tolerance=0.01):
    """(pixels (K, 2), visible (K,)) in a camera (optical frame pose in the world); with a depth
    image a keypoint is visible only where nothing lies in front of it."""
    optical = (np.asarray(points_world) - camera_position) @ np.asarray(camera_rotation)
    z = optical[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        pixels = np.column_stack([K[0, 0] * optical[:, 0] / z + K[0, 2], K[1, 1] * optical[:, 1] / z + K[1, 2]])
    visible = z > 0.05
    if depth is not None:
        h, w = depth.shape
        u, v = np.round(pixels[:, 0]), np.round(pixels[:, 1])
        inside = visible & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        visible = inside.copy()
        ui, vi = u[inside].astype(int), v[inside].astype(int)
        seen = depth[vi, ui]
        visible[inside] = (seen <= 0) | ~np.isfinite(seen) | (seen > z[inside] - tolerance)
    return pixels, visible


def remove_overlaps(keypoints, pixels, visible, min_pixels=12.0):
    """Visible keypoints kept after removing image overlaps: object keypoints win over background
    ones, then the lower label wins. Returns the kept keypoints in label order."""
    order = sorted(
        (i for i in range(len(keypoints)) if visible[i]), key=lambda i: (keypoints[i].static, keypoints[i].label)
    )
    kept = []
    for i in order:
        if all(np.linalg.norm(pixels[i] - pixels[j]) >= min_pixels for j in kept):
            kept.append(i)
    return [keypoints[i] for i in sorted(kept, key=lambda i: keypoints[i].label)]
