"""IKER's policy-training environment (shared/seeds/002, Sec. III-C and Appendix A): a gymnasium
env in which a floating gripper moves one catalog object until the object's keypoints reach their
targets, rewarded by the keypoint reward of Sec. III-A (reward.total_reward).

Model (mujoco.MjSpec, compiled per episode in 1-15 ms): a table (top at z = 0, the frame of
twinloop_twin.scene), one movable object of twinloop_twin.objects drawn per episode (any kind that
is not static) at a random size scale, and a floating two-finger hand. Training a floating end
effector instead of the whole arm is the usual trick of manipulation RL: the policy commands
end-effector deltas and never sees joints, and deployment maps the deltas to the Panda through
IK (Sec. III-D; twinloop_execution), so one step stays cheap. The hand points down; its TCP (the
body origin) lies between the fingertips; the fingers are two vertical capsules (radius 9 mm)
under a palm box. It moves on x, y, z slides and a yaw hinge, each driven by a critically damped
position servo with a force limit (40 N, 2 N m; gravity compensated): the policy's delta sets the
servo targets. A mocap body welded to a free hand was tried first and dropped: the weld pulls
with unbounded force, and episodes that pressed an object into the table went unstable; servos
bound the force as an arm under impedance control does (a sweep of 520 random-action episodes
over every kind, both skills, randomised, gave no MuJoCo warning).

Skills (Appendix A): `push` keeps the fingers closed (a 36 mm wide rounded pusher that touches only
the object, never the table) and the hand starts away from the object; `place` starts with the
object already held at the heuristic grasp (fingers across the object's narrower side, the TCP
3 cm under its top): the object is a child body of the hand (a rigid grasp; carried with gravity
compensation, as an arm holds a load) and the hand's own geoms collide with nothing; `reorient`
starts as place does, and its hand also pitches about the fingers' closing axis (a fifth joint and
action), so that the held object's longer horizontal side can be stood upright (the paper's Book
Reorient: a flat book stood up on a shelf); its drawn targets are the object turned a quarter turn
about its narrower horizontal axis, either way, its lowest point place_lift above the table. The grasp
subroutine itself is not learned, as in the paper; a rigid grasp cannot drop the object, so the
drop term of r_penalty counts an object that falls off the table (push).

State (Sec. III-C): the end-effector pose (p_e, q_e), the object pose (p_o, q_o), its keypoints
K_o (world frame) and their targets K_t; the observation is the flat float32 vector
[p_e, q_e, p_o, q_o, K_o, K_t, K_t - K_o, c_o - p_e] (c_o: the object's centre), quaternions
wxyz with w >= 0. Keypoints: twinloop_perception.keypoints.propose on the object's mesh (the four
extremities along its two main axes), moved with the object's pose. Action (Sec. III-C): end-
effector deltas in [-1, 1], scaled to `action_translation` per axis (and `action_yaw` for the yaw
delta of place and reorient, `action_pitch` for reorient's pitch delta), clipped to the
workspace; 10 Hz control. Reward: reward.total_reward on the step's state with the config's
weights; success: the mean keypoint distance within 5 cm (Sec. IV-A); the episode ends after
`success_steps` consecutive successful steps, when the object falls off the table, or at
`max_steps`.

Targets are drawn per episode (a goal-conditioned policy; reset's options take a target pose or
the keypoint targets of the VLM's code instead). Domain randomisation (Sec. III-C, a
RandomizationConfig instead of None): friction, mass, centre of mass, contact softness and
restitution (MuJoCo's solref time constant and damping ratio; a damping ratio below 1 bounces),
geometry scale (the simulated shape differs from the nominal one its keypoints come from), the
object's start pose (moved after its targets were set), the gripper's start position and the
grasp pose. Everything random comes from the env's seeded generator: a seed fixes an episode.
"""

import functools
import math
from dataclasses import dataclass, fields

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from twinloop_core.engine import ConfigError
from twinloop_iker.reward import RewardConfig, RewardStep, count_within, mean_keypoint_distance, total_reward
from twinloop_perception.keypoints import propose
from twinloop_twin import objects

ENV_ID = 'twinloop/IkerKeypoint-v0'
SKILLS = ('place', 'push', 'reorient')
HOLDING = ('place', 'reorient')  # skills that start with the object held at the heuristic grasp
CONTENTS = ('marble',)  # catalog kinds that are what a container holds, too small for keypoints: never drawn
# free objects only: static ones and drawers (on a slide joint in their cabinet) are never an episode's object
KINDS = tuple(k for k in objects.KINDS if k not in CONTENTS and not ((s := objects.make_shape(k)).static or s.slide))
N_KEYPOINTS = 4  # propose(): the extremities along two principal axes
OBS_SIZE = 3 + 4 + 3 + 4 + 3 * N_KEYPOINTS * 3 + 3
TABLE_HALF = (0.6, 0.6, 0.375)  # as twinloop_twin.scene: a 1.2 x 1.2 m top at z = 0
TABLE_CENTRE_X = 0.35
FINGER_RADIUS = 0.009  # [m] capsule fingers
FINGER_HALF_LENGTH = 0.025  # [m] capsule half length between the caps
HAND_MASS = 0.5  # [kg], gravity-compensated
HAND_JOINTS = ('hand_x', 'hand_y', 'hand_z', 'hand_yaw')  # qpos[0:4]; a free object's pose follows at 4:11
PITCH_JOINT = 'hand_pitch'  # reorient: qpos[4], about the hand's y axis (the fingers' closing axis) after the yaw
PITCH_RANGE = (-2.0, 2.0)  # [rad] of the pitch hinge (a quarter turn and some either way)
HAND_KP = (2000.0, 20.0)  # position servo gains: [N/m] translation, [N m/rad] yaw (critically damped)
HAND_FORCE = (40.0, 2.0)  # servo force limits: [N] translation, [N m] yaw
HAND_ARMATURE = (0.1, 0.01)  # [kg], [kg m^2] on the hand's joints: steadies the stiff servos
GRASP_DEPTH = 0.03  # [m] TCP under the object's top at the nominal grasp
FALLEN_Z = -0.02  # [m] an object centre below the table top has fallen off it
SETTLE_STEPS = 10  # physics steps at reset so that a resting object settles on the table
PUSH_STARTS = ('behind', 'above')
OPTIONS = ('kind', 'scale', 'object_pose', 'target_pose', 'targets', 'gripper_position', 'grasp_pose')
STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
# Collision bits: the table meets the object only; the pushing hand meets the object only.
TABLE_BITS, OBJECT_BITS, HAND_BITS = 1, 3, 2


def _check_ranges(config, names):
    for name in names:
        low, high = getattr(config, name)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ConfigError(f'{type(config).__name__}.{name} must be a finite [low, high], got {[low, high]}')


def _check_positive(config, names):
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f'{type(config).__name__}.{name} must be finite and > 0, got {value!r}')


@dataclass(frozen=True)
class EnvConfig:
    """The task distribution and the simulation of KeypointEnv (config/iker.yaml, block env)."""

    kinds: tuple = KINDS  # object kinds drawn per episode (push, place)
    reorient_kinds: tuple = ('book', 'lid')  # flat kinds drawn per reorient episode (stood on their narrow end)
    scale: tuple = (0.8, 1.2)  # size scale of the object's catalog shape
    timestep: float = 0.005  # [s] physics step
    control_hz: float = 10.0  # policy rate (the paper's 10 Hz)
    max_steps: int = 80  # policy steps per episode
    action_translation: float = 0.04  # [m] end-effector translation per axis and step at |action| = 1
    action_yaw: float = 0.2  # [rad] end-effector yaw per step at |action| = 1 (place, reorient)
    action_pitch: float = 0.2  # [rad] end-effector pitch per step at |action| = 1 (reorient)
    workspace_low: tuple = (0.2, -0.4, 0.005)  # [m] the TCP stays in this box
    workspace_high: tuple = (0.8, 0.4, 0.45)
    object_low: tuple = (0.35, -0.25)  # [m] x, y of object start and target positions
    object_high: tuple = (0.65, 0.25)
    push_distance: tuple = (0.08, 0.2)  # [m] push target: how far from the start (beyond the 5 cm of success)
    push_yaw: float = 0.3  # [rad] push target: yaw change up to +-this
    place_start_lift: tuple = (0.03, 0.12)  # [m] place: the held object's bottom above the table at the start
    place_lift: tuple = (0.0, 0.15)  # [m] place target: the object's bottom above the table (0: on it)
    place_yaw: float = 0.8  # [rad] place target: yaw change up to +-this
    push_start: str = 'behind'  # push: the hand starts 'behind' the object (as deployed) or 'above' it
    gripper_start: tuple = (0.45, 0.0, 0.15)  # [m] push 'above': the TCP's start (raised to clear the object)
    push_standoff: float = 0.03  # [m] push 'behind': the TCP this far outside the object's footprint
    mass: float = 0.2  # [kg] nominal object mass
    friction: float = 0.8  # nominal sliding friction (the table's is lower, so this one acts)

    def __post_init__(self):
        """Known kinds, ordered ranges, positive rates and steps, start and targets inside the workspace."""
        for name in ('kinds', 'reorient_kinds'):
            unknown = sorted(set(getattr(self, name)) - set(KINDS))
            if not getattr(self, name) or unknown:
                raise ConfigError(
                    f'EnvConfig.{name} must be movable catalog kinds ({list(KINDS)}), got {unknown or "none"}'
                )
        _check_ranges(self, ('scale', 'push_distance', 'place_start_lift', 'place_lift'))
        positive = ('timestep', 'control_hz', 'action_translation', 'action_yaw', 'action_pitch', 'mass', 'friction')
        _check_positive(self, positive)
        if self.push_start not in PUSH_STARTS:
            raise ConfigError(f'EnvConfig.push_start must be one of {PUSH_STARTS}, not {self.push_start!r}')
        if self.max_steps < 1 or self.scale[0] <= 0 or self.timestep * self.control_hz > 1:
            raise ConfigError('EnvConfig: max_steps >= 1, scale > 0 and timestep <= 1 / control_hz are required')
        low, high = np.array(self.workspace_low), np.array(self.workspace_high)
        if not (np.all(low < high) and np.all(low[:2] <= self.object_low) and np.all(self.object_high <= high[:2])):
            raise ConfigError('EnvConfig: workspace_low < workspace_high with object_low..object_high inside it')
        if not np.all(np.less_equal(self.object_low, self.object_high)):
            raise ConfigError('EnvConfig: object_low <= object_high')

    @property
    def substeps(self):
        """Physics steps per policy step."""
        return max(1, round(1.0 / (self.control_hz * self.timestep)))


@dataclass(frozen=True)
class RandomizationConfig:
    """Domain randomisation ranges (Sec. III-C; config/iker.yaml, block randomization)."""

    friction: tuple = (0.4, 1.2)  # sliding friction of the object
    mass: tuple = (0.05, 0.6)  # [kg] object mass (inertia scaled with it)
    com: float = 0.15  # centre of mass moved up to +-this fraction of the object's extents per axis
    solref_timeconst: tuple = (0.01, 0.04)  # [s] contact stiffness of the object (MuJoCo solref[0])
    solref_dampratio: tuple = (0.5, 1.0)  # contact damping ratio (solref[1]); below 1 the contact bounces
    geometry_scale: tuple = (0.95, 1.05)  # simulated shape / the nominal shape the keypoints are from
    object_position: float = 0.02  # [m] start position moved up to +-this in x and y after targets are set
    object_yaw: float = 0.15  # [rad] start yaw moved up to +-this
    gripper_position: float = 0.05  # [m] push: gripper start moved up to +-this per axis
    grasp_position: float = 0.01  # [m] place: grasp point moved up to +-this per axis (object frame)
    grasp_yaw: float = 0.2  # [rad] place: grasp yaw moved up to +-this

    def __post_init__(self):
        """Ordered, positive ranges; non-negative offsets."""
        _check_ranges(self, ('friction', 'mass', 'solref_timeconst', 'solref_dampratio', 'geometry_scale'))
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(v < 0 for v in values) or (isinstance(value, tuple) and value[0] <= 0):
                raise ConfigError(f'RandomizationConfig.{f.name} must be >= 0 (ranges > 0), got {value!r}')


def kinds_field(skill):
    """The EnvConfig field naming the object kinds a skill's episodes draw from."""
    return 'reorient_kinds' if skill == 'reorient' else 'kinds'


@functools.lru_cache(maxsize=None)
def catalog_entry(kind):
    """(ObjectShape, (4, 3) keypoints in the object frame, (3,) centre) of a kind at scale 1."""
    shape = objects.make_shape(kind)
    mesh = objects.shape_mesh(shape)
    keypoints = np.array([k.local for k in propose([(kind, mesh, False)])])
    if len(keypoints) != N_KEYPOINTS:
        raise RuntimeError(f'{kind}: propose() gave {len(keypoints)} keypoints, the env expects {N_KEYPOINTS}')
    return shape, keypoints, mesh.bounds.mean(axis=0)


def yaw_quat(yaw):
    """wxyz quaternion of a rotation by yaw about z."""
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def hand_quat(yaw, pitch=0.0):
    """wxyz quaternion of the hand's joints: a yaw about z, then a pitch about the turned y axis."""
    out = np.empty(4)
    mujoco.mju_mulQuat(out, yaw_quat(yaw), np.array([math.cos(pitch / 2), 0.0, math.sin(pitch / 2), 0.0]))
    return out


def yaw_pitch(quat):
    """(yaw, pitch) [rad] of a wxyz quaternion that hand_quat can make (R = Rz(yaw) Ry(pitch))."""
    r = _matrix(quat)
    return math.atan2(-r[0, 1], r[1, 1]), math.atan2(-r[2, 0], r[2, 2])


def quat_yaw(quat):
    """The yaw [rad] of a wxyz quaternion (its heading about z)."""
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def _matrix(quat):
    out = np.empty(9)
    mujoco.mju_quat2Mat(out, np.asarray(quat, float))
    return out.reshape(3, 3)


def _canonical(quat):
    return quat if quat[0] >= 0 else -quat


def _relative_pose(pos1, quat1, pos2, quat2):
    """Pose of frame 2 in frame 1: (position, wxyz quaternion)."""
    relpos = _matrix(quat1).T @ (np.asarray(pos2) - pos1)
    inverse, relquat = np.empty(4), np.empty(4)
    mujoco.mju_negQuat(inverse, np.asarray(quat1, float))
    mujoco.mju_mulQuat(relquat, inverse, np.asarray(quat2, float))
    return relpos, relquat


def _compose(pos1, quat1, relpos, relquat):
    """Frame 1 times a relative pose: the world pose of frame 2."""
    quat = np.empty(4)
    mujoco.mju_mulQuat(quat, np.asarray(quat1, float), np.asarray(relquat, float))
    return np.asarray(pos1) + _matrix(quat1) @ relpos, quat


def build_spec(parts, skill, finger_gap, timestep, held=None):
    """The MjSpec of one episode: a table, the hand (x, y, z, yaw servos; reorient: and pitch) and the object.

    parts: the object's catalog parts at their simulated size; finger_gap [m]: half the distance
    between the finger axes; held (place): the object's (position, wxyz quaternion) in the hand
    frame. A held object is a child body of the hand (a rigid grasp, carried with gravity
    compensation as an arm would); the hand's own geoms then collide with nothing. Otherwise the
    object is a free body and the closed fingers push it.
    """
    spec = mujoco.MjSpec()
    spec.compiler.degree = False
    spec.option.timestep = timestep
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.worldbody.add_geom(
        name='table',
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=TABLE_HALF,
        pos=(TABLE_CENTRE_X, 0, -TABLE_HALF[2]),
        friction=(0.1, 0.005, 0.0001),
        contype=TABLE_BITS,
        conaffinity=TABLE_BITS,
    )
    hand = spec.worldbody.add_body(name='hand', gravcomp=1.0)
    joints = zip(HAND_JOINTS + (PITCH_JOINT,), np.eye(3).tolist() + [[0, 0, 1], [0, 1, 0]])
    for name, axis in list(joints)[: 5 if skill == 'reorient' else 4]:
        slide = name not in ('hand_yaw', PITCH_JOINT)
        joint = hand.add_joint(
            name=name,
            type=mujoco.mjtJoint.mjJNT_SLIDE if slide else mujoco.mjtJoint.mjJNT_HINGE,
            axis=axis,
            armature=HAND_ARMATURE[0 if slide else 1],
        )
        servo = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        servo.set_to_position(kp=HAND_KP[0 if slide else 1], dampratio=1.0)
        servo.forcerange = (-HAND_FORCE[0 if slide else 1], HAND_FORCE[0 if slide else 1])
        if name == PITCH_JOINT:
            joint.limited, joint.range = mujoco.mjtLimited.mjLIMITED_TRUE, PITCH_RANGE
    bits = 0 if held else HAND_BITS
    finger_z = FINGER_HALF_LENGTH + FINGER_RADIUS
    for side in (-1, 1):
        hand.add_geom(
            type=mujoco.mjtGeom.mjGEOM_CAPSULE,
            size=(FINGER_RADIUS, FINGER_HALF_LENGTH, 0),
            pos=(0, side * finger_gap, finger_z),
            mass=0.1 * HAND_MASS,
            contype=bits,
            conaffinity=bits,
        )
    hand.add_geom(
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=(0.012, finger_gap + FINGER_RADIUS + 0.005, 0.01),
        pos=(0, 0, 2 * finger_z + 0.01),
        mass=0.8 * HAND_MASS,
        contype=bits,
        conaffinity=bits,
    )
    if held:
        body = hand.add_body(name='object', pos=held[0], quat=held[1], gravcomp=1.0)
    else:
        body = spec.worldbody.add_body(name='object')
        body.add_freejoint(name='object_joint')
    for i, part in enumerate(parts):
        box = part.shape == 'box'
        body.add_geom(
            name=f'object/{i}',
            type=mujoco.mjtGeom.mjGEOM_BOX if box else mujoco.mjtGeom.mjGEOM_CYLINDER,
            size=part.size if box else (part.size[0], part.size[1], 0),
            pos=part.pos,
            quat=yaw_quat(part.yaw),
            condim=4,
            contype=OBJECT_BITS,
            conaffinity=OBJECT_BITS,
            density=500.0,  # rescaled to the episode's mass at reset
        )
    return spec


def scaled_parts(parts, factor):
    """Catalog parts at `factor` times their size and offset."""
    return [
        objects.Part(p.shape, tuple(factor * s for s in p.size), tuple(factor * c for c in p.pos), p.yaw) for p in parts
    ]


class KeypointEnv(gym.Env):
    """Move one object's keypoints to their targets with a floating gripper (push, place or reorient).

    skill: 'push', 'place' or 'reorient'; randomization: a RandomizationConfig (domain randomisation)
    or None (nominal physics). reset's options: kind, scale, object_pose (x, y, yaw) or (x, y, bottom
    z, yaw), target_pose (x, y, bottom z, yaw; reorient: and the quarter turn's sign, +-1), targets
    ((4, 3) world keypoint targets, e.g. from the VLM's code; in keypoint order), gripper_position
    (push: the TCP's start) and grasp_pose (place, reorient: the TCP (x, y, z) and hand yaw of a grasp
    made on the arm, instead of the heuristic one).
    """

    metadata = {'render_modes': []}

    def __init__(self, skill='push', config=EnvConfig(), randomization=None, reward_config=RewardConfig()):
        """An env of one skill; its model is built at reset."""
        if skill not in SKILLS:
            raise ValueError(f'skill must be one of {SKILLS}, not {skill!r}')
        self.skill, self.config, self.randomization, self.reward_config = skill, config, randomization, reward_config
        low = np.full(OBS_SIZE, -np.inf, dtype=np.float32)
        self.observation_space = spaces.Box(low, -low, dtype=np.float32)
        self.hand_joints = 5 if skill == 'reorient' else 4  # x, y, z, yaw (and pitch): qpos[:hand_joints]
        n = {'push': 3, 'place': 4, 'reorient': 5}[skill]
        self.action_space = spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        self.model = self.data = self.held = None

    # --- reset -------------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        """A new episode: object, physics, start and targets drawn from the seeded generator."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f'unknown reset options {unknown}; known: {list(OPTIONS)}')
        c, rng, dr = self.config, self.np_random, self.randomization
        kinds = getattr(c, kinds_field(self.skill))
        self.kind = options.get('kind') or kinds[rng.integers(len(kinds))]
        if self.kind not in KINDS:
            raise ValueError(f'kind must be a movable catalog kind {list(KINDS)}, not {self.kind!r}')
        shape, base_keypoints, base_centre = catalog_entry(self.kind)
        self.scale = float(options['scale'] if 'scale' in options else rng.uniform(*c.scale))
        sim_scale = self.scale * (rng.uniform(*dr.geometry_scale) if dr else 1.0)
        self.local_keypoints = self.scale * base_keypoints
        self.local_centre = sim_scale * base_centre
        extents = sim_scale * np.asarray(shape.extents)

        pose = options.get('object_pose')
        if pose is None:
            pose = (*rng.uniform(c.object_low, c.object_high), rng.uniform(-np.pi, np.pi))
        if len(pose) == 4:
            x, y, z, yaw = (float(v) for v in pose)
        else:
            (x, y, yaw), z = (
                (float(v) for v in pose),
                rng.uniform(*c.place_start_lift) if self.skill in HOLDING else 0.0,
            )
        start = np.array([x, y, z])
        target = options.get('target_pose')
        if target is None:
            target = self._draw_target(start, yaw)
        targets = options.get('targets')
        if targets is None:
            position, quat = self.target_object_pose(target)
            targets = position + self.local_keypoints @ _matrix(quat).T
        self.targets = np.array(targets, dtype=float).reshape(N_KEYPOINTS, 3)
        if dr:  # the object is not quite where its targets were computed from
            start[:2] += rng.uniform(-dr.object_position, dr.object_position, 2)
            yaw += rng.uniform(-dr.object_yaw, dr.object_yaw)
        object_pos, object_quat = start + [0, 0, 0.0005], yaw_quat(yaw)

        narrow = int(extents[0] > extents[1])  # the fingers close across the narrower horizontal side
        if self.skill in HOLDING:
            grasp = options.get('grasp_pose')
            if grasp is None:
                hand_pos, hand_quat = self._grasp(object_pos, object_quat, extents, -math.pi / 2 * (1 - narrow))
            else:
                hand_pos, hand_quat = np.asarray(grasp[:3], float), yaw_quat(grasp[3])
            self.held = _relative_pose(hand_pos, hand_quat, object_pos, object_quat)
            gap = extents[narrow] / 2 + FINGER_RADIUS
        else:
            given = options.get('gripper_position')
            hand_pos = self._gripper_start(extents, start, object_quat) if given is None else given
            hand_pos, hand_quat = self._clamp_start(extents, hand_pos, given is None), yaw_quat(0.0)
            self.held, gap = None, FINGER_RADIUS
        parts = scaled_parts(shape.parts, sim_scale)
        self.model = build_spec(parts, self.skill, gap, c.timestep, self.held).compile()
        self.data = mujoco.MjData(self.model)
        self._set_physics(extents)
        d = self.data
        d.qpos[: self.hand_joints] = d.ctrl[:] = self._joints(hand_pos, hand_quat)
        if self.held is None:
            d.qpos[4:11] = np.r_[object_pos, object_quat]
        mujoco.mj_forward(self.model, d)
        mujoco.mj_step(self.model, d, nstep=SETTLE_STEPS)

        self._steps = self._steps_within = 0
        self._keypoints = self._object_keypoints()
        return self.observation(), self._info(self._keypoints)

    def _joints(self, position, quat):
        """The hand's joint vector (x, y, z, yaw[, pitch]) of a TCP pose."""
        yaw, pitch = yaw_pitch(quat)
        return np.r_[position, yaw, pitch][: self.hand_joints]

    def target_object_pose(self, target):
        """(position, wxyz quaternion) of the object frame at a target pose (x, y, bottom z, yaw); reorient's
        (x, y, bottom z, yaw, sign): turned a quarter turn (by sign) about its narrower horizontal axis, then by
        yaw, its centre over (x, y) and its lowest point at bottom z (the nominal shape's, as the keypoints)."""
        yaw_turn = yaw_quat(float(target[3]))
        if self.skill != 'reorient':
            return np.asarray(target[:3], float), yaw_turn
        shape, _, centre = catalog_entry(self.kind)
        half = self.scale * np.asarray(shape.extents) / 2
        axis = np.eye(3)[int(half[0] > half[1])]  # the narrower horizontal one
        quarter = np.r_[math.cos(math.pi / 4), math.copysign(math.sin(math.pi / 4), target[4]) * axis]
        quat = np.empty(4)
        mujoco.mju_mulQuat(quat, yaw_turn, quarter)
        rotation, centre = _matrix(quat), self.scale * centre
        corners = centre + half * np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
        lowest = float((corners @ rotation.T)[:, 2].min())
        turned = rotation @ centre
        return np.array([target[0] - turned[0], target[1] - turned[1], target[2] - lowest]), quat

    def _grasp(self, object_pos, object_quat, extents, yaw):
        """Place: the hand's pose at the heuristic grasp (Appendix A), randomised: the TCP on the
        object's axis GRASP_DEPTH under its top (half way down a flat object), the fingers across it."""
        c, dr, rng = self.config, self.randomization, self.np_random
        grasp = np.array([0.0, 0.0, max(extents[2] - GRASP_DEPTH, extents[2] / 2)])
        if dr:
            grasp += rng.uniform(-dr.grasp_position, dr.grasp_position, 3)
            yaw += rng.uniform(-dr.grasp_yaw, dr.grasp_yaw)
        grasp[2] = np.clip(grasp[2], c.workspace_low[2], extents[2])
        return _compose(object_pos, object_quat, grasp, yaw_quat(yaw))

    def _gripper_start(self, extents, start, quat):
        """Push: the TCP's drawn start. 'behind': where the arm brings the closed fingers before a
        push (deploy): push_standoff outside the footprint on the far side from the targets, half way up
        the object (at most 4 cm), randomised sideways, back and up; 'above': gripper_start randomised."""
        c, dr, rng = self.config, self.randomization, self.np_random
        jitter = dr.gripper_position if dr else 0.0
        if c.push_start == 'above':
            return np.array(c.gripper_start, float) + rng.uniform(-jitter, jitter, 3)
        rotation = _matrix(quat)
        centre = start[:2] + (self.local_keypoints @ rotation.T).mean(axis=0)[:2]
        way = self.targets[:, :2].mean(axis=0) - centre
        way = way / np.linalg.norm(way) if np.linalg.norm(way) > 1e-6 else np.array([1.0, 0.0])
        reach = float(np.abs(rotation[:2, :2].T @ way) @ extents[:2]) / 2  # the footprint's half length along it
        side = np.array([-way[1], way[0]])
        behind = centre - way * (reach + c.push_standoff + FINGER_RADIUS + rng.uniform(0, jitter / 2))
        behind += side * rng.uniform(-jitter / 2, jitter / 2)
        return np.r_[behind, min(extents[2] / 2, 0.04) + rng.uniform(0, jitter / 5)]

    def _clamp_start(self, extents, position, drawn):
        """The start inside the workspace; 'above' starts and given ones clear the object's top."""
        c = self.config
        position = np.array(position, float)
        if not drawn or c.push_start == 'above':
            position[2] = max(position[2], extents[2] + 0.03)
        return np.clip(position, c.workspace_low, c.workspace_high)

    def _set_physics(self, extents):
        """Nominal or randomised mass, centre of mass, friction and contact softness of the object."""
        m, dr, rng = self.model, self.randomization, self.np_random
        body = m.body('object').id
        geoms = np.nonzero(m.geom_bodyid == body)[0]
        # the gripper's geoms for the contact force: the hand's (push), the held object's (place)
        self._gripper_geoms = m.geom_bodyid == (body if self.held else m.body('hand').id)
        mass = rng.uniform(*dr.mass) if dr else self.config.mass
        m.body_inertia[body] *= mass / m.body_mass[body]
        m.body_mass[body] = mass
        m.geom_friction[geoms, 0] = rng.uniform(*dr.friction) if dr else self.config.friction
        if dr:
            m.body_ipos[body] += rng.uniform(-dr.com, dr.com, 3) * extents
            m.geom_solref[geoms] = (rng.uniform(*dr.solref_timeconst), rng.uniform(*dr.solref_dampratio))
        mujoco.mj_setConst(m, self.data)  # constraint scaling (invweight0) for the new mass and inertia

    def _draw_target(self, start, yaw):
        """(x, y, bottom z, yaw) of a reachable target pose on the table (place: possibly lifted; reorient:
        and the sign of its quarter turn)."""
        c, rng = self.config, self.np_random
        low, high = np.array(c.object_low), np.array(c.object_high)
        if self.skill in HOLDING:
            xy = rng.uniform(low, high)
            pose = (*xy, rng.uniform(*c.place_lift), yaw + rng.uniform(-c.place_yaw, c.place_yaw))
            return pose + ((float(rng.choice((-1.0, 1.0))),) if self.skill == 'reorient' else ())
        distance = rng.uniform(*c.push_distance)
        for _ in range(20):
            heading = rng.uniform(-np.pi, np.pi)
            xy = start[:2] + distance * np.array([math.cos(heading), math.sin(heading)])
            if np.all(low <= xy) and np.all(xy <= high):
                break
        else:  # towards the middle of the region
            inward = (low + high) / 2 - start[:2]
            xy = start[:2] + distance * inward / max(np.linalg.norm(inward), 1e-9)
        return (*xy, 0.0, yaw + rng.uniform(-c.push_yaw, c.push_yaw))

    # --- state ---------------------------------------------------------------------------------
    def hand_pose(self):
        """(TCP position, wxyz quaternion) of the hand."""
        return self.data.qpos[0:3].copy(), hand_quat(*self.data.qpos[3 : self.hand_joints])

    def object_pose(self):
        """(position of the object frame's origin: its bottom centre, wxyz quaternion)."""
        if self.held is None:
            return self.data.qpos[4:7].copy(), self.data.qpos[7:11].copy()
        return _compose(*self.hand_pose(), *self.held)

    def set_object_pose(self, position, quat):
        """Teleport the object (at rest) to a pose; a held object moves with the hand."""
        d = self.data
        if self.held is None:
            d.qpos[4:11] = np.r_[position, quat]
        else:
            inverse, hand_quat = np.empty(4), np.empty(4)
            mujoco.mju_negQuat(inverse, self.held[1])
            mujoco.mju_mulQuat(hand_quat, np.asarray(quat, float), inverse)
            hand_pos = np.asarray(position) - _matrix(hand_quat) @ self.held[0]
            d.qpos[: self.hand_joints] = d.ctrl[:] = self._joints(hand_pos, hand_quat)
        d.qvel[:] = 0
        mujoco.mj_forward(self.model, d)
        self._keypoints = self._object_keypoints()

    def _object_keypoints(self):
        position, quat = self.object_pose()
        return position + self.local_keypoints @ _matrix(quat).T

    def _object_centre(self):
        position, quat = self.object_pose()
        return position + _matrix(quat) @ self.local_centre

    def _contact_force(self):
        """Largest normal contact force [N] on the gripper: on the hand (push), on the held object (place)."""
        d = self.data
        if d.ncon == 0:
            return 0.0
        mine = self._gripper_geoms
        force, largest = np.empty(6), 0.0
        for i in np.nonzero(mine[d.contact.geom1[: d.ncon]] | mine[d.contact.geom2[: d.ncon]])[0]:
            mujoco.mj_contactForce(self.model, d, int(i), force)
            largest = max(largest, abs(force[0]))
        return largest

    def get_state(self):
        """A snapshot of the episode (physics and counters) for set_state: planners roll out from it."""
        physics = np.empty(mujoco.mj_stateSize(self.model, STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, physics, STATE_SPEC)
        return physics, self._steps, self._steps_within, self._keypoints.copy()

    def set_state(self, snapshot):
        """Return to a get_state snapshot of this episode."""
        physics, self._steps, self._steps_within, keypoints = snapshot
        mujoco.mj_setState(self.model, self.data, physics, STATE_SPEC)
        self._keypoints = keypoints.copy()

    def observation(self):
        """The observation of the current state (the module docstring lists its parts)."""
        hand_pos, hand_quat = self.hand_pose()
        object_pos, object_quat = self.object_pose()
        return np.concatenate(
            [
                hand_pos,
                _canonical(hand_quat),
                object_pos,
                _canonical(object_quat),
                self._keypoints.ravel(),
                self.targets.ravel(),
                (self.targets - self._keypoints).ravel(),
                self._object_centre() - hand_pos,
            ]
        ).astype(np.float32)

    def _info(self, keypoints, **extra):
        distance = mean_keypoint_distance(keypoints, self.targets)
        success = distance <= self.reward_config.success_threshold
        return {'is_success': success, 'distance': distance, 'steps_within': self._steps_within, **extra}

    def advance_hand(self, shift, turns, seconds):
        """Move the hand's servo targets by shift [m] and turns (yaw, pitch) [rad] evenly over `seconds` of
        simulation (the arm's motion since the object was perceived: what the hand pushes or holds goes along)."""
        d = self.data
        start = d.ctrl.copy()
        goal = start + np.r_[shift, np.asarray(turns, float)][: len(start)]
        goal[:3] = np.clip(goal[:3], self.config.workspace_low, self.config.workspace_high)
        count = max(1, int(round(seconds / self.model.opt.timestep)))
        for i in range(1, count + 1):
            d.ctrl[:] = start + (goal - start) * i / count
            mujoco.mj_step(self.model, d)
        self._keypoints = self._object_keypoints()

    # --- step ----------------------------------------------------------------------------------
    def applied_action(self, action):
        """(new TCP target, new (yaw[, pitch]) targets, the (6,) delta (p, r) it applies) of a policy action."""
        c = self.config
        action = np.clip(np.asarray(action, dtype=float), -1.0, 1.0)
        position, angles = self.data.qpos[0:3], self.data.qpos[3 : self.hand_joints]
        target = np.clip(position + action[:3] * c.action_translation, c.workspace_low, c.workspace_high)
        turns = np.zeros(2)  # yaw, pitch
        turns[: len(action) - 3] = action[3:] * np.array((c.action_yaw, c.action_pitch))[: len(action) - 3]
        if self.skill == 'reorient':
            turns[1] = np.clip(angles[1] + turns[1], *PITCH_RANGE) - angles[1]
        new_angles = angles + turns[: len(angles)]
        return target, new_angles, np.r_[target - position, 0.0, turns[1], turns[0]]

    def step(self, action):
        """One 10 Hz step: set the hand servos' targets, simulate, reward the keypoints' progress."""
        target, angles, delta = self.applied_action(action)
        d = self.data
        d.ctrl[:] = np.r_[target, angles]
        mujoco.mj_step(self.model, d, nstep=self.config.substeps)
        previous, keypoints = self._keypoints, self._object_keypoints()
        centre = self._object_centre()
        distance = mean_keypoint_distance(keypoints, self.targets)
        self._steps += 1
        self._steps_within = count_within(self._steps_within, distance, self.reward_config.success_threshold)
        dropped = bool(centre[2] < FALLEN_Z)
        state = RewardStep(
            ee_position=d.qpos[0:3].copy(),
            object_position=centre,
            previous_keypoints=previous,
            keypoints=keypoints,
            targets=self.targets,
            action=delta,
            steps_within=self._steps_within,
            dropped=dropped,
            contact_force=self._contact_force(),
        )
        terms = total_reward(state, self.reward_config)
        self._keypoints = keypoints
        self.last_reward_step = state
        terminated = dropped or self._steps_within >= self.reward_config.success_steps
        truncated = not terminated and self._steps >= self.config.max_steps
        info = self._info(keypoints, terms=terms, dropped=dropped)
        return self.observation(), float(terms['total']), terminated, truncated, info


gym.register(ENV_ID, entry_point=KeypointEnv)
