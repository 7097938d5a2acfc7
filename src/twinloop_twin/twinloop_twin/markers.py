"""RViz markers (visualization_msgs) for what twinloop sees and plans: objects as boxes with
labels, candidate end-effector paths coloured by score (red 0 .. green 1), the chosen path,
numbered keypoints with the targets model-written code gives them (IKER)."""

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from twinloop_twin import overlays


def _colour(rgba):
    return ColorRGBA(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))


def objects(namespace, items, stamp, frame='world'):
    """items: [(id, label, position (base centre), quat wxyz, size xyz, rgba)] -> boxes and labels."""
    out = MarkerArray(
        markers=[Marker(header=Header(frame_id=frame, stamp=stamp), ns=namespace, action=Marker.DELETEALL)]
    )
    for i, (oid, label, position, quat, size, rgba) in enumerate(items):
        header = Header(frame_id=frame, stamp=stamp)
        w, x, y, z = quat
        up = np.array([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)])  # the object's z axis
        centre = np.asarray(position, float) + up * size[2] / 2
        box = Marker(header=header, ns=namespace, id=2 * i, type=Marker.CUBE, action=Marker.ADD, color=_colour(rgba))
        box.pose.position = Point(x=float(centre[0]), y=float(centre[1]), z=float(centre[2]))
        box.pose.orientation.w, box.pose.orientation.x, box.pose.orientation.y, box.pose.orientation.z = (
            float(v) for v in quat
        )
        box.scale.x, box.scale.y, box.scale.z = (max(float(s), 1e-3) for s in size)
        text = Marker(
            header=header,
            ns=namespace,
            id=2 * i + 1,
            type=Marker.TEXT_VIEW_FACING,
            action=Marker.ADD,
            text=label or oid,
            color=_colour((1, 1, 1, 1)),
        )
        text.pose.position = Point(x=float(centre[0]), y=float(centre[1]), z=float(centre[2] + size[2] / 2 + 0.03))
        text.scale.z = 0.025
        out.markers += [box, text]
    return out


def paths(namespace, path_list, scores, stamp, frame='world', width=0.004):
    """Candidate paths ([N x 3] each) as line strips coloured by score in [0, 1] (None: distinct colours)."""
    out = MarkerArray(
        markers=[Marker(header=Header(frame_id=frame, stamp=stamp), ns=namespace, action=Marker.DELETEALL)]
    )
    for i, points in enumerate(path_list):
        rgba = overlays.score_rgba(scores[i]) if scores is not None else overlays.DISTINCT[i % len(overlays.DISTINCT)]
        out.markers.append(path(namespace, i, points, rgba, stamp, frame, width))
    return out


def path(namespace, marker_id, points, rgba, stamp, frame='world', width=0.008):
    """One LINE_STRIP marker through points ([N x 3] [m] in frame), coloured rgba."""
    marker = Marker(
        header=Header(frame_id=frame, stamp=stamp),
        ns=namespace,
        id=marker_id,
        type=Marker.LINE_STRIP,
        action=Marker.ADD,
        color=_colour(rgba),
    )
    marker.pose.orientation.w = 1.0
    marker.scale.x = width
    marker.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in points]
    return marker


KEYPOINT_RGBA, TARGET_RGBA = (1.0, 1.0, 1.0, 1.0), (0.1, 0.9, 0.2, 1.0)


def keypoints(namespace, points, targets, stamp, frame='world', size=0.012):
    """points: {number: (x, y, z)}; targets: {number: (x, y, z)} for the keypoints the code moves ->
    white numbered spheres, green target spheres and an arrow from each moved keypoint to its target."""
    header = Header(frame_id=frame, stamp=stamp)
    out = MarkerArray(markers=[Marker(header=header, ns=namespace, action=Marker.DELETEALL)])

    def add(kind, position, rgba, **fields):
        marker = Marker(
            header=header, ns=namespace, id=len(out.markers), type=kind, action=Marker.ADD, color=_colour(rgba)
        )
        marker.pose.orientation.w = 1.0
        if position is not None:
            marker.pose.position = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
        for key, value in fields.items():
            setattr(marker, key, value)
        out.markers.append(marker)
        return marker

    def at(p):
        return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))

    for number, p in sorted(points.items()):
        add(Marker.SPHERE, p, KEYPOINT_RGBA).scale.x = size
        out.markers[-1].scale.y = out.markers[-1].scale.z = size
        label = add(Marker.TEXT_VIEW_FACING, (p[0], p[1], p[2] + 1.5 * size), KEYPOINT_RGBA, text=str(number))
        label.scale.z = 1.5 * size
    for number, t in sorted(targets.items()):
        target = add(Marker.SPHERE, t, TARGET_RGBA)
        target.scale.x = target.scale.y = target.scale.z = size
        if number in points:
            arrow = add(Marker.ARROW, None, TARGET_RGBA, points=[at(points[number]), at(t)])
            arrow.scale.x, arrow.scale.y, arrow.scale.z = size / 4, size / 2, size / 2  # shaft, head width, length
    return out
