"""The object catalog: every object kind is a set of primitive parts in its own frame.

The same parts build the MuJoCo geoms (so concave things such as bowls and bins collide
correctly) and the triangle mesh that pose estimation registers against, so the simulated
world and the perceived model never disagree about shape. Object frame: origin at the centre
of the bottom face, z up.
"""

from dataclasses import dataclass, field

import numpy as np
import trimesh

from twinloop_core.geometry import HANDLE_SIZE

SYMMETRY_NONE, SYMMETRY_DISCRETE, SYMMETRY_AXIAL = 0, 1, 2  # as in twinloop_interfaces/DetectedObject


@dataclass(frozen=True)
class Part:
    """A box (half sizes), cylinder (radius, half height) or sphere (radius,) at pos with yaw about z;
    seen: False for glass (it collides, cameras see through it)."""

    shape: str
    size: tuple
    pos: tuple = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    seen: bool = True


@dataclass
class ObjectShape:
    """An object kind's geometry: parts, symmetry class, whether it is static, bounding extents [m]."""

    parts: list
    symmetry: int
    static: bool = False  # bins stay put (no free joint)
    extents: tuple = field(default=(0.0, 0.0, 0.0))
    slide: float = 0.0  # > 0: a drawer, on a slide joint along its own -x axis that opens this far [m]


def _ring_walls(radius, height, thickness, z0, n=16, flare=0.0):
    """n boxes around a circle: the wall of a cup, bowl, ring or tape roll."""
    half_len = np.pi * (radius + flare / 2) / n * 1.05
    return [
        Part(
            'box',
            (thickness / 2, half_len, height / 2),
            (np.cos(a) * (radius + flare / 2), np.sin(a) * (radius + flare / 2), z0 + height / 2),
            a,
        )
        for a in np.linspace(0, 2 * np.pi, n, endpoint=False)
    ]


def cube(size=0.05):
    """A cube of edge length size [m]."""
    h = size / 2
    return ObjectShape([Part('box', (h, h, h), (0, 0, h))], SYMMETRY_DISCRETE)


def marble(radius=0.009):
    """A small ball (the contents a cup pours)."""
    return ObjectShape([Part('sphere', (radius,), (0, 0, radius))], SYMMETRY_AXIAL)


def block(size=(0.08, 0.04, 0.04)):
    """A box of full size (x, y, z) [m]."""
    hx, hy, hz = (s / 2 for s in size)
    return ObjectShape([Part('box', (hx, hy, hz), (0, 0, hz))], SYMMETRY_DISCRETE)


def sponge(size=(0.09, 0.06, 0.03)):
    """A sponge, shaped as a block of full size (x, y, z) [m]."""
    return block(size)


def ring(radius=0.045, height=0.03, thickness=0.012):
    """A flat ring: a wall of boxes around radius [m], no floor."""
    return ObjectShape(_ring_walls(radius, height, thickness, 0.0, n=16), SYMMETRY_AXIAL)


def cup(radius=0.035, height=0.09, thickness=0.006):
    """An open cup: a thin base and a wall of boxes."""
    base = Part('cylinder', (radius, 0.004), (0, 0, 0.004))
    return ObjectShape([base] + _ring_walls(radius, height - 0.008, thickness, 0.008, n=14), SYMMETRY_AXIAL)


def can(radius=0.033, height=0.12):
    """A closed can: one cylinder (a soda can is not an open cup)."""
    return ObjectShape([Part('cylinder', (radius, height / 2), (0, 0, height / 2))], SYMMETRY_AXIAL)


def bowl(radius=0.075, height=0.05, thickness=0.008):
    """An open bowl: a base narrower than the rim and a wall of boxes."""
    base = Part('cylinder', (radius * 0.6, 0.005), (0, 0, 0.005))
    return ObjectShape([base] + _ring_walls(radius, height - 0.01, thickness, 0.01, n=18), SYMMETRY_AXIAL)


def plate(radius=0.1, height=0.015):
    """A plate: one flat cylinder."""
    return ObjectShape([Part('cylinder', (radius, height / 2), (0, 0, height / 2))], SYMMETRY_AXIAL)


def open_bin(size=(0.18, 0.18, 0.12), thickness=0.01):
    """An open-top bin (floor and four walls); static: no free joint."""
    hx, hy, hz = (s / 2 for s in size)
    t = thickness / 2
    parts = [
        Part('box', (hx, hy, t), (0, 0, t)),
        Part('box', (t, hy, hz), (hx - t, 0, hz)),
        Part('box', (t, hy, hz), (-hx + t, 0, hz)),
        Part('box', (hx, t, hz), (0, hy - t, hz)),
        Part('box', (hx, t, hz), (0, -hy + t, hz)),
    ]
    return ObjectShape(parts, SYMMETRY_NONE, static=True)


def open_box(size=(0.14, 0.10, 0.07), thickness=0.008):
    """An open-top box like open_bin, but free to move."""
    shape = open_bin(size, thickness)
    shape.static = False
    return shape


def lid(size=(0.15, 0.11, 0.012)):
    """A lid: a flat block of full size (x, y, z) [m]."""
    return block(size)


def book(size=(0.22, 0.15, 0.03)):
    """A book lying flat: a thin box of full size (x, y, z) [m] (stand it up by reorienting it)."""
    return block(size)


def closed_box(size=(0.2, 0.3, 0.1)):
    """A closed box (a shoe box) of full size (x, y, z) [m]: wider than the gripper opens, so it is pushed."""
    return block(size)


def shoe(side='right', length=0.24, width=0.09, height=0.08):
    """A shoe pointing along +x: a rounded heel, a collar rising at the back, a lower front and a toe
    that bulges to the inner side (+y for a right shoe, -y for a left one: the pair is mirrored)."""
    if side not in ('left', 'right'):
        raise ValueError(f'shoe side must be left or right, not {side!r}')
    inner = 1.0 if side == 'right' else -1.0
    heel, toe, low = width / 2, 0.35 * width, 0.55 * height
    back, collar_end, front = -length / 2 + heel, -length / 2 + 0.45 * length, length / 2 - toe
    return ObjectShape(
        [
            Part('cylinder', (heel, height / 2), (back, 0, height / 2)),
            Part('box', ((collar_end - back) / 2, width / 2, height / 2), ((back + collar_end) / 2, 0, height / 2)),
            Part('box', ((front - collar_end) / 2, width / 2, low / 2), ((collar_end + front) / 2, 0, low / 2)),
            Part('cylinder', (toe, low / 2), (front, inner * (width / 2 - toe), low / 2)),
        ],
        SYMMETRY_NONE,
    )


def post(radius=0.012, height=0.16, base=0.1, base_height=0.012):
    """A static post (a peg to stack rings on): a square base of side `base` and a pole of `radius`,
    `height` [m] from the table."""
    pole = height - base_height
    return ObjectShape(
        [
            Part('box', (base / 2, base / 2, base_height / 2), (0, 0, base_height / 2)),
            Part('cylinder', (radius, pole / 2), (0, 0, base_height + pole / 2)),
        ],
        SYMMETRY_DISCRETE,
        static=True,
    )


def maze(size=0.32, height=0.05, thickness=0.01, entrance=0.1, baffle=0.18):
    """A toy maze of outer side `size` [m]: four walls, an entrance of width `entrance` in the -x wall,
    and a baffle from the +x wall along x at y = -size/6 that splits a corridor from the goal side (+y)."""
    h, t, z = size / 2, thickness / 2, height / 2
    side = (h - entrance / 2) / 2  # the -x wall's two halves beside the entrance
    parts = [
        Part('box', (t, h, z), (h - t, 0, z)),
        Part('box', (h, t, z), (0, h - t, z)),
        Part('box', (h, t, z), (0, -h + t, z)),
        Part('box', (t, side, z), (-h + t, entrance / 2 + side, z)),
        Part('box', (t, side, z), (-h + t, -entrance / 2 - side, z)),
        Part('box', (baffle / 2, t, z), (h - baffle / 2, -size / 6, z)),
    ]
    return ObjectShape(parts, SYMMETRY_NONE)


def pad(size=(0.1, 0.1, 0.004)):
    """A flat static marker of full size (x, y, z) [m]: a goal to put things on."""
    shape = block(size)
    shape.static, shape.symmetry = True, SYMMETRY_DISCRETE
    return shape


def rack(size=(0.26, 0.6, 0.12), thickness=0.02, leg=0.03, bars=False):
    """A static shoe rack or shelf of full size (x, y, z) [m]: a plank, or two bars along y at its
    front and back edges (bars=True), on four legs; things stand on it at z = size z."""
    hx, hy, hz = (s / 2 for s in size)
    t, top = thickness / 2, size[2] - thickness / 2
    if bars:
        tops = [Part('box', (t, hy, t), (x, 0, top)) for x in (hx - t, -hx + t)]
    else:
        tops = [Part('box', (hx, hy, t), (0, 0, top))]
    legs = [
        Part('box', (leg / 2, leg / 2, hz - t), (sx * (hx - leg / 2), sy * (hy - leg / 2), hz - t))
        for sx in (1, -1)
        for sy in (1, -1)
    ]
    return ObjectShape(tops + legs, SYMMETRY_DISCRETE, static=True)


def drawer(size=(0.16, 0.2, 0.05), thickness=0.008, travel=0.15):
    """A drawer: an open tray of outer size (x, y, z) [m] with the tab handle of
    twinloop_core.geometry.HANDLE_SIZE on its front (-x) face, at the top; it slides out `travel` [m]
    along its -x axis (scene building adds the slide joint). The frame is at the middle of the
    bounding box's bottom, handle included. 5 cm deep: the Panda's hand (20.8 cm long) spans the
    tray either way, so what lies inside is grasped with the hand above the walls (6 cm walls left
    2 mm to spare over a 3.5 cm block, less than perception's error)."""
    tray = open_bin(size, thickness).parts
    shift = HANDLE_SIZE[0] / 2  # the tray sits behind the handle
    tab = Part('box', tuple(s / 2 for s in HANDLE_SIZE), (-size[0] / 2, 0, size[2] - HANDLE_SIZE[2] / 2))
    parts = [Part(p.shape, p.size, (p.pos[0] + shift, *p.pos[1:])) for p in tray] + [tab]
    return ObjectShape(parts, SYMMETRY_NONE, slide=travel)


def cabinet(size=(0.18, 0.24, 0.085), thickness=0.01):
    """A static cabinet of outer size (x, y, z) [m] for a drawer, open at the front (-x) and below:
    two sides, a back and a glass top (it collides; cameras see the drawer's inside through it)."""
    hx, hy, hz = (s / 2 for s in size)
    t = thickness / 2
    parts = [
        Part('box', (hx, t, hz), (0, hy - t, hz)),
        Part('box', (hx, t, hz), (0, -hy + t, hz)),
        Part('box', (t, hy, hz), (hx - t, 0, hz)),
        Part('box', (hx, hy, t), (0, 0, size[2] - t), seen=False),
    ]
    return ObjectShape(parts, SYMMETRY_NONE, static=True)


KINDS = {
    'cube': cube,
    'marble': marble,
    'block': block,
    'sponge': sponge,
    'ring': ring,
    'cup': cup,
    'can': can,
    'bowl': bowl,
    'plate': plate,
    'bin': open_bin,
    'open_box': open_box,
    'lid': lid,
    'book': book,
    'box': closed_box,
    'shoe': shoe,
    'rack': rack,
    'post': post,
    'maze': maze,
    'pad': pad,
    'drawer': drawer,
    'cabinet': cabinet,
}


def make_shape(kind, **params):
    """The ObjectShape of a kind with its parameters, extents filled in; ValueError for an unknown kind."""
    if kind not in KINDS:
        raise ValueError(f'unknown object kind {kind!r}; known: {sorted(KINDS)}')
    shape = KINDS[kind](**params)
    mesh = shape_mesh(shape)
    shape.extents = tuple(float(e) for e in mesh.extents)
    return shape


PART_MESHES = {  # part shape -> its triangle mesh, centred on the part's origin
    'box': lambda size: trimesh.creation.box(extents=2 * np.asarray(size)),
    'cylinder': lambda size: trimesh.creation.cylinder(radius=size[0], height=2 * size[1], sections=32),
    'sphere': lambda size: trimesh.creation.icosphere(subdivisions=2, radius=size[0]),
}


def _part_mesh(part):
    if part.shape not in PART_MESHES:
        raise ValueError(f'unknown part shape {part.shape!r}')
    mesh = PART_MESHES[part.shape](part.size)
    transform = trimesh.transformations.rotation_matrix(part.yaw, (0, 0, 1))
    transform[:3, 3] = part.pos
    mesh.apply_transform(transform)
    return mesh


def shape_mesh(shape, seen_only=False):
    """The object's surface as one triangle mesh in the object frame (seen_only: what cameras see)."""
    return trimesh.util.concatenate([_part_mesh(p) for p in shape.parts if p.seen or not seen_only])
