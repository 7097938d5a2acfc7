"""IKER's query image (shared/seeds/002, Sec. III-A, III-B and Appendix B): a camera image with the
scene's keypoints drawn as numbered markers and the world axes drawn in a corner.

Keypoints come from twinloop_perception.keypoints: `propose` on each perceived object's mesh
(extremities of movable objects, points spread over static ones, numbered from 1 and grouped by
object), `world_positions` at the objects' poses, `project` through the camera (a MuJoCo camera of
world_sim or the twin, or a RealSense CameraInfo plus the optical frame's pose), hidden ones
dropped with the depth image and overlapping ones with `remove_overlaps` (background first, then the
higher number). The numbers are the proposal's labels, so a keypoint keeps its number from one
stage to the next even when others are hidden. Markers are white discs with a black outline and
the number, sized to the image (readable from 320 x 240 up), and never overlap: the overlap distance
is the marker's diameter plus 2 px.

The paper draws the axes at the bottom right for a camera behind the robot ("the vertical arrow
is +x, the horizontal one +y"). Here the legend is drawn from the camera itself: the world axes
projected at the middle of the keypoints, scaled together (an axis pointing at the camera comes
out short), labelled x, y and z; `axes` says in words where each points, for the prompt.
"""

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from twinloop_perception import keypoints as kp
from twinloop_twin import objects as catalog

AXIS_COLOURS = {'x': (220, 40, 40), 'y': (30, 160, 50), 'z': (40, 90, 230)}
FORESHORTENED = 0.35  # an axis drawn shorter than this fraction of the longest points mostly along the view
DIRECTIONS = (  # image directions by angle, counter-clockwise from the right, 45 degrees apart
    'right',
    'up and to the right',
    'up',
    'up and to the left',
    'left',
    'down and to the left',
    'down',
    'down and to the right',
)


@dataclass(frozen=True)
class CameraView:
    """A camera image and its model: RGB, intrinsics K (3x3), the optical frame's pose in the world,
    and optionally metric depth along the optical axis (hidden keypoints are then left out)."""

    rgb: np.ndarray  # (h, w, 3) uint8
    K: np.ndarray  # (3, 3) [px]
    position: np.ndarray  # optical frame origin in the world [m]
    rotation: np.ndarray  # optical frame axes in the world (3x3, columns)
    depth: np.ndarray = None  # (h, w) [m], 0 or non-finite where unknown

    @classmethod
    def from_frame(cls, frame):
        """From a rendered frame of twinloop_twin (SimWorld.render / SimTwin.render)."""
        return cls(frame.rgb, frame.intrinsics.matrix, frame.position, frame.rotation, frame.depth)

    @classmethod
    def from_camera_info(cls, rgb, k, position, rotation, depth=None):
        """From a CameraInfo's k (9 numbers, row-major) and the optical frame's pose in the world
        (a RealSense's extrinsics from config/calibration.yaml)."""
        return cls(rgb, np.asarray(k, float).reshape(3, 3), np.asarray(position, float), np.asarray(rotation), depth)


@dataclass(frozen=True)
class PerceivedObject:
    """An object the query image shows: its mesh in its own frame, whether it is static, its pose."""

    object_id: str
    mesh: object  # trimesh.Trimesh in the object frame
    static: bool
    position: tuple  # [m]
    quat: tuple  # w, x, y, z


@dataclass
class QueryImage:
    """The image the code writer sees and the keypoints drawn on it."""

    image: np.ndarray  # (h, w, 3) uint8
    keypoints: dict  # number -> (object id, (x, y, z) [m]), the keypoints drawn
    pixels: dict  # number -> (u, v) [px] where each is drawn
    axes: dict  # 'x' | 'y' | 'z' -> where the world axis points in the image, in words
    object_ids: tuple  # every object of the scene, drawn or not
    proposed: list = field(default_factory=list)  # every twinloop_perception Keypoint, drawn or not

    def positions(self):
        """number -> (x, y, z): the sandbox's `keypoints` argument."""
        return {n: xyz for n, (_, xyz) in self.keypoints.items()}

    def object_keypoints(self):
        """object id -> its drawn keypoint numbers (empty where none is drawn): the sandbox's `objects`."""
        out = {oid: [] for oid in self.object_ids}
        for number, (oid, _) in sorted(self.keypoints.items()):
            out[oid].append(number)
        return out


def scene_objects(config, poses):
    """PerceivedObjects of a twinloop_twin SceneConfig's objects at poses {id: (position, quat wxyz)}
    (objects without a pose are left out), with the catalog's meshes."""
    out = []
    for o in config.objects:
        if o.id in poses:
            shape = catalog.make_shape(o.kind, **o.params)
            position, quat = poses[o.id]
            out.append(PerceivedObject(o.id, catalog.shape_mesh(shape), shape.static, tuple(position), tuple(quat)))
    return out


def marker_radius(width, height):
    """Marker radius [px] for an image size: 8 px at 320 x 240, 11 px at 640 x 480."""
    return max(8, round(0.022 * min(width, height)))


def _font(size):
    return ImageFont.load_default(size=size)


def _direction_words(vector, towards_camera, short):
    """Where a projected axis points, in words ('up and to the left'; 'towards the camera' when short)."""
    angle = np.degrees(np.arctan2(-vector[1], vector[0]))  # image v grows downwards
    words = DIRECTIONS[int(np.round(angle / 45.0)) % 8]
    if short:
        return f'{words}, mostly {"towards" if towards_camera else "away from"} the camera'
    return words


def _axes(view, centre, length=0.1):
    """{axis: (image direction (2,), relative length, towards the camera)} of the world axes at centre."""
    ends = np.vstack([centre, centre + length * np.eye(3)])
    optical = (ends - view.position) @ view.rotation
    uv = np.column_stack([optical[:, 0] / optical[:, 2], optical[:, 1] / optical[:, 2]]) * (view.K[0, 0], view.K[1, 1])
    vectors = uv[1:] - uv[0]
    norms = np.linalg.norm(vectors, axis=1)
    scale = max(norms.max(), 1e-9)
    return {
        axis: (vectors[i] / max(norms[i], 1e-9), norms[i] / scale, bool(optical[i + 1, 2] < optical[0, 2]))
        for i, axis in enumerate('xyz')
    }


def _arrow(draw, start, end, colour, width):
    """A line with a head, outlined in black so it reads on any background."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    direction = end - start
    size = max(np.linalg.norm(direction), 1e-9)
    unit, normal = direction / size, np.array([-direction[1], direction[0]]) / size
    head = min(3 * width + 2, 0.5 * size)
    tip = [tuple(end), tuple(end - head * unit + 0.6 * head * normal), tuple(end - head * unit - 0.6 * head * normal)]
    for fill, extra in (((0, 0, 0), 2), (colour, 0)):
        draw.line([tuple(start), tuple(end - 0.5 * head * unit)], fill=fill, width=width + extra)
        draw.polygon(tip, fill=colour, outline=(0, 0, 0) if extra else None)


def _draw_legend(draw, axes, width, height, radius):
    """The world axes in the bottom-right corner, from one origin, labelled x, y, z."""
    length = 3.2 * radius
    origin = np.array([width - 1.6 * length - radius, height - 1.6 * length - radius])
    font = _font(round(1.5 * radius))
    line = max(2, radius // 4)
    for axis, (unit, relative, _) in axes.items():
        end = origin + unit * length * max(relative, 0.15)
        _arrow(draw, origin, end, AXIS_COLOURS[axis], line)
        label = end + unit * 0.9 * radius
        draw.text(
            tuple(label), axis, fill=AXIS_COLOURS[axis], font=font, anchor='mm', stroke_width=2, stroke_fill='black'
        )


def _draw_marker(draw, centre, number, radius, font):
    u, v = centre
    draw.ellipse(
        [u - radius, v - radius, u + radius, v + radius], fill='white', outline='black', width=max(1, radius // 6)
    )
    draw.text((u, v), str(number), fill='black', font=font, anchor='mm')


def render_query_image(view, objects, static_count=6, radius=None):
    """The QueryImage of objects (PerceivedObjects) seen by view (a CameraView): keypoints proposed
    on their meshes (static_count spread over each static one), drawn where visible and not
    overlapping, with the world-axes legend."""
    proposed = kp.propose([(o.object_id, o.mesh, o.static) for o in objects], static_count)
    poses = {o.object_id: (o.position, o.quat) for o in objects}
    world = kp.world_positions(proposed, poses) if proposed else np.zeros((0, 3))
    height, width = view.rgb.shape[:2]
    radius = radius or marker_radius(width, height)
    pixels, visible = kp.project(world, view.K, view.position, view.rotation, view.depth)
    inside = (pixels[:, 0] >= radius) & (pixels[:, 0] < width - radius) & (pixels[:, 1] >= radius)
    visible = visible & inside & (pixels[:, 1] < height - radius)
    kept = kp.remove_overlaps(proposed, pixels, visible, min_pixels=2 * radius + 2)
    index = {k.label: i for i, k in enumerate(proposed)}
    image = Image.fromarray(np.asarray(view.rgb, np.uint8)).convert('RGB')
    draw = ImageDraw.Draw(image)
    centre = world.mean(axis=0) if len(world) else view.position + 0.5 * view.rotation[:, 2]
    axes = _axes(view, centre)
    _draw_legend(draw, axes, width, height, radius)
    font = _font(round(1.4 * radius))
    for k in kept:
        _draw_marker(draw, pixels[index[k.label]], k.label, radius, font)
    return QueryImage(
        np.asarray(image),
        {k.label: (k.object_id, tuple(float(v) for v in world[index[k.label]])) for k in kept},
        {k.label: tuple(float(v) for v in pixels[index[k.label]]) for k in kept},
        {
            axis: _direction_words(unit, towards, relative < FORESHORTENED)
            for axis, (unit, relative, towards) in axes.items()
        },
        tuple(o.object_id for o in objects),
        proposed,
    )
