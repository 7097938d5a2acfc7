"""Markers drawn into the 3D scene before a render, so they are right in every view:
candidate trajectories as tubes coloured by score, numbered keypoints and object axes. Keypoint
numbers are written at each marker's projected pixel, only where the depth image shows the marker
is not hidden.
"""

import mujoco
import numpy as np
from PIL import Image, ImageDraw

AXIS_RGBA = ((0.9, 0.1, 0.1, 1.0), (0.1, 0.8, 0.1, 1.0), (0.1, 0.3, 0.95, 1.0))  # x red, y green, z blue
DISTINCT = ((0.95, 0.6, 0.1, 1), (0.6, 0.2, 0.9, 1), (0.1, 0.75, 0.85, 1), (0.9, 0.2, 0.6, 1), (0.5, 0.5, 0.1, 1))
DISTINCT_NAMES = ('orange', 'purple', 'cyan', 'pink', 'olive')  # what a VLM is told the colours are


def score_rgba(score):
    """Red (0) through yellow to green (1)."""
    s = float(np.clip(score, 0.0, 1.0))
    return (min(1.0, 2 * (1 - s)), min(1.0, 2 * s), 0.1, 0.9)


def _new_geom(scene):
    if scene.ngeom >= scene.maxgeom:
        raise RuntimeError(f'overlay needs more than maxgeom={scene.maxgeom} marker geoms')
    geom = scene.geoms[scene.ngeom]
    scene.ngeom += 1
    return geom


def add_segment(scene, start, end, rgba, radius=0.004):
    """Add a capsule from start to end [m, world] to an mjvScene."""
    geom = _new_geom(scene)
    mujoco.mjv_initGeom(
        geom, mujoco.mjtGeom.mjGEOM_CAPSULE, np.zeros(3), np.zeros(3), np.eye(3).flatten(), np.asarray(rgba, np.float32)
    )
    mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, radius, np.asarray(start, float), np.asarray(end, float))


def add_sphere(scene, centre, rgba, radius=0.01):
    """Add a sphere at centre [m, world] to an mjvScene."""
    geom = _new_geom(scene)
    mujoco.mjv_initGeom(
        geom,
        mujoco.mjtGeom.mjGEOM_SPHERE,
        np.array([radius, 0, 0]),
        np.asarray(centre, float),
        np.eye(3).flatten(),
        np.asarray(rgba, np.float32),
    )


def add_path(scene, points, rgba, radius=0.004, max_segments=40):
    """A tube along points (subsampled to at most max_segments), with a ball at the end."""
    points = np.asarray(points, float)
    if len(points) < 2:
        return
    index = np.unique(np.linspace(0, len(points) - 1, min(len(points), max_segments + 1)).astype(int))
    for a, b in zip(index[:-1], index[1:]):
        if np.linalg.norm(points[b] - points[a]) > 1e-6:
            add_segment(scene, points[a], points[b], rgba, radius)
    add_sphere(scene, points[-1], rgba, radius * 2.5)


def add_axes(scene, origin, rotation, length=0.08, radius=0.004):
    """Coordinate axes of a frame (e.g. an object), x red, y green, z blue."""
    origin = np.asarray(origin, float)
    for axis, rgba in zip(np.asarray(rotation).T, AXIS_RGBA):
        add_segment(scene, origin, origin + length * axis, rgba, radius)


def combine(*overlays):
    """One overlay drawing all the given ones (None entries skipped); None if there are none."""
    present = [o for o in overlays if o is not None]
    if not present:
        return None

    def draw(scene):
        for overlay in present:
            overlay(scene)

    return draw


def candidate_overlay(paths, scores=None):
    """An overlay function for SimWorld.render drawing candidate paths (coloured by score)."""

    def draw(scene):
        for i, path in enumerate(paths):
            rgba = (
                score_rgba(scores[i])
                if scores is not None and len(scores) == len(paths)
                else DISTINCT[i % len(DISTINCT)]
            )
            add_path(scene, path, rgba)

    return draw


def keypoint_overlay(points, rgba=(1.0, 0.85, 0.1, 1.0), radius=0.008):
    """An overlay function for SimWorld.render drawing a sphere at each keypoint."""

    def draw(scene):
        for p in points:
            add_sphere(scene, p, rgba, radius)

    return draw


def label_keypoints(frame, points_world, labels, radius=0.008):
    """Write each keypoint's number next to its marker in frame.rgb, skipping hidden ones.

    frame: a CameraFrame rendered with keypoint_overlay (its depth shows the markers)."""
    image = Image.fromarray(frame.rgb)
    draw = ImageDraw.Draw(image)
    optical = (np.atleast_2d(points_world) - frame.position) @ frame.rotation
    drawn = []
    for point, label in zip(optical, labels):
        if point[2] <= 0:
            continue
        u, v = frame.intrinsics.project(point)[0]
        col, row = int(round(u)), int(round(v))
        if not (0 <= col < frame.intrinsics.width and 0 <= row < frame.intrinsics.height):
            continue
        if frame.depth is not None and frame.depth[row, col] < point[2] - 2 * radius:
            continue  # something is in front of the marker
        draw.text((col + 5, row - 12), str(label), fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        drawn.append(label)
    frame.rgb = np.asarray(image)
    return drawn
