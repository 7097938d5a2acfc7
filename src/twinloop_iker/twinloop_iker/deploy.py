"""Deployment of IKER's solver on the arm (shared/seeds/002, Sec. III-D), no rclpy: from the
targets of the model-written code to streamed joint chunks.

The keypoints of a movable object are those of the catalog shape that best fits its perceived
bounding box (`fit_kind`), so they are the keypoints of KeypointEnv's object and the code's targets
are targets of the env (`fit_target_pose`: the object pose that puts the chosen keypoints nearest
their targets, a yaw and a translation). Targets that tilt the object (`fit_turn`, `tilt` beyond
TILTED) are a reorientation: the held object is turned by the hand's pitch about the fingers' closing axis
(`env_holding`: the env's hand pitched and turned as the arm's). The solver plans end-effector
deltas in the env from the perceived object pose and the arm's TCP (`env_at`); the deltas move the
Panda's TCP (`tcp_targets`), IK turns the last into joints and `joint_chunk` times the move as one short
rest-to-rest chunk (minimum-jerk) for the execution node's stream, which gates every chunk.
"""

import math
from dataclasses import dataclass, field

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from twinloop_core.engine import ConfigError
from twinloop_core.geometry import grip_height, quat_matrix
from twinloop_core.gripper import HAND_UNDERSIDE
from twinloop_iker.env import KINDS, catalog_entry, quat_yaw, scaled_parts, yaw_pitch
from twinloop_twin import objects as catalog

TILTED = math.radians(45)  # targets that turn the object's up axis further than this: a reorientation
PEAK_VELOCITY = 1.875  # minimum-jerk: peak velocity / (distance / duration)
PEAK_ACCELERATION = 5.7735  # minimum-jerk: peak acceleration / (distance / duration^2)


@dataclass(frozen=True)
class SolverChoice:
    """The solver each skill deploys (twinloop_iker.solvers: ppo, the trained policy, or cem)."""

    push: str = 'cem'
    place: str = 'cem'
    reorient: str = 'cem'


@dataclass(frozen=True)
class ChunkActions:
    """Solver actions each streamed chunk carries out, per skill. A chunk is one joint-space move to its last
    point, so with more than one action it cuts the corners the actions turn; a push does not forgive that."""

    push: int = 1
    place: int = 2
    reorient: int = 2


@dataclass(frozen=True)
class DeployConfig:
    """How IKER runs on the arm (config/iker.yaml, block deploy)."""

    writer: str = 'template'  # code writer (twinloop_iker.writers): template or vlm
    writer_agent: str = ''  # vlm: an agent of config/vlm_agents.yaml
    solver: SolverChoice = field(default_factory=SolverChoice)  # per skill
    policies: str = ''  # ppo: a folder with <skill>/policy.zip and vecnormalize.pkl ('': those shipped)
    chunk_actions: ChunkActions = field(default_factory=ChunkActions)  # per skill
    max_iterations: int = 6  # code-writing iterations of Algorithm 1 per goal
    loop: str = 'chunked'  # pacing.DRIVES: chunked (a chunk per step, perceived after it) or receding (env.control_hz)
    max_chunks: int = 30  # chunked: streamed chunks per stage
    max_control_steps: int = 300  # receding: control steps per stage
    splice_lead: float = 0.2  # [s] receding: a step is spliced this far ahead of now (grows when chunks come late)
    joint_jerk: float = 30.0  # [rad/s^3] receding: a segment's jerk bound per joint
    stop_distance: float = 0.03  # [m] a stage stops streaming once the keypoints are this close (success: 5 cm)
    min_stop_distance: float = 0.01  # [m] halved down to this while the task's own check is not met
    tcp_speed: float = 0.1  # [m/s] mean TCP speed of a chunk (its peak is 1.875 times this)
    min_chunk: float = 0.3  # [s] shortest chunk
    max_chunk: float = 1.0  # [s] longest chunk (the stream's limit)
    point_spacing: float = 0.05  # [s] between the points of a chunk
    joint_velocity: float = 1.0  # [rad/s] a chunk's peak joint speed (well inside the Panda's limits)
    joint_acceleration: float = 3.0  # [rad/s^2] a chunk's peak joint acceleration (limits: 7.5 and up)
    min_tcp_z: float = 0.018  # [m] the TCP stays this high above the table top (fingers clear of it)
    approach_height: float = 0.06  # [m] above the object's top before coming down behind it (push)
    standoff: float = 0.03  # [m] push: the TCP starts this far outside the object's footprint
    push_leans: tuple = (0.0, 0.35, 0.7)  # [rad] push: the hand's lean (fingertips away from the base), tried in order
    push_sides: tuple = (0.0, 0.7, -0.7, 1.4, -1.4)  # [rad] push: starts turned about the object, tried in order
    detour_clearance: float = 0.01  # [m] push: a straight way closer than this to another object goes round it
    push_replans: int = (
        2  # push: a chunk the gate refuses or the arm cannot reach is planned anew, this often per stage
    )
    retreat_height: float = 0.12  # [m] the TCP rises to this above the table after a stage
    carry_clearance: float = 0.04  # [m] place: a carried object's base this far above every other top and its targets
    target_low: tuple = (0.15, -0.55, -0.02)  # [m] targets of the code must lie in this box (world)
    target_high: tuple = (0.9, 0.55, 0.5)

    def __post_init__(self):
        """Positive counts and times, chunk bounds within the stream's, an ordered target box."""
        if self.writer not in ('template', 'vlm') or (self.writer == 'vlm' and not self.writer_agent):
            raise ConfigError("DeployConfig.writer must be 'template' or 'vlm' (vlm needs writer_agent)")
        counts = (self.max_iterations, self.max_chunks, self.max_control_steps, *vars(self.chunk_actions).values())
        if min(counts) < 1 or self.push_replans < 0:
            raise ConfigError(
                'DeployConfig: max_iterations, max_chunks, max_control_steps, chunk_actions >= 1 and push_replans >= 0'
            )

        for name in (
            'stop_distance',
            'min_stop_distance',
            'tcp_speed',
            'point_spacing',
            'joint_velocity',
            'joint_acceleration',
            'min_tcp_z',
            'approach_height',
            'retreat_height',
            'carry_clearance',
            'detour_clearance',
            'splice_lead',
            'joint_jerk',
        ):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f'DeployConfig.{name} must be finite and > 0, got {getattr(self, name)!r}')
        if not (0.1 <= self.min_chunk <= self.max_chunk <= 1.0 and self.standoff >= 0):
            raise ConfigError('DeployConfig: 0.1 <= min_chunk <= max_chunk <= 1.0 s and standoff >= 0 are required')
        if not all(0.0 <= lean < math.pi / 2 for lean in self.push_leans) or not self.push_leans:
            raise ConfigError(f'DeployConfig.push_leans must be angles in [0, pi/2) rad, got {self.push_leans!r}')
        if not self.push_sides or not all(abs(side) < math.pi / 2 for side in self.push_sides):
            raise ConfigError(f'DeployConfig.push_sides must be angles in (-pi/2, pi/2) rad, got {self.push_sides!r}')
        if not np.all(np.less(self.target_low, self.target_high)):
            raise ConfigError('DeployConfig: target_low < target_high per axis')


def fit_kind(size, kinds=KINDS):
    """(kind, scale): the movable catalog shape whose extents, scaled uniformly, best fit a perceived
    bounding box (object frame, x y z)."""
    size = np.asarray(size, float)
    best = None
    for kind in kinds:
        extents = np.asarray(catalog.make_shape(kind).extents, float)
        scale = float(extents @ size / (extents @ extents))
        error = float(np.linalg.norm(scale * extents - size))
        if best is None or error < best[0]:
            best = (error, kind, scale)
    return best[1], best[2]


def kind_mesh(kind, scale):
    """The catalog mesh of a kind at a scale (object frame): its keypoints are the env's."""
    mesh = catalog.shape_mesh(catalog.make_shape(kind)).copy()
    mesh.apply_scale(scale)
    return mesh


def yaw_matrix(yaw):
    """Rotation about z by yaw."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def fit_target_pose(local, targets, yaw):
    """(position (3,), yaw) of the object frame that puts keypoints `local` (n, 3, object frame)
    nearest `targets` (n, 3, world): a turn about z (least squares; the perceived yaw when the
    keypoints have no horizontal spread) and a translation."""
    local, targets = np.asarray(local, float), np.asarray(targets, float)
    a = local[:, :2] - local[:, :2].mean(axis=0)
    b = targets[:, :2] - targets[:, :2].mean(axis=0)
    if len(local) >= 2 and np.linalg.norm(a) > 1e-3:
        yaw = math.atan2(float(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])), float(np.sum(a * b)))
    position = (targets - local @ yaw_matrix(yaw).T).mean(axis=0)
    return position, yaw


def fit_turn(local, targets, quat):
    """(position (3,), rotation (3, 3)) of the object frame that best carries keypoints `local` (n, 3,
    object frame) onto `targets` (n, 3, world), any turn: least squares (Kabsch, scipy's align_vectors) for
    three or more keypoints that span a plane; for two, the smallest turn from the object's orientation now
    (`quat`, wxyz) that lines their direction up with the targets'; for one, that orientation."""
    local, targets = np.asarray(local, float), np.asarray(targets, float)
    now = quat_matrix(quat)
    a, b = local - local.mean(axis=0), targets - targets.mean(axis=0)
    if len(local) >= 3 and np.linalg.svd(a, compute_uv=False)[1] > 1e-3:
        rotation = Rotation.align_vectors(b, a)[0].as_matrix()
    elif len(local) >= 2 and np.linalg.norm(a[0]) > 1e-3 and np.linalg.norm(b[0]) > 1e-3:
        rotation = Rotation.align_vectors(b[0], now @ a[0])[0].as_matrix() @ now
    else:
        rotation = now
    return (targets - local @ rotation.T).mean(axis=0), rotation


def tilt(rotation):
    """Angle [rad] between an object's up axis turned by rotation (3, 3) and the world's up."""
    return math.acos(float(np.clip(rotation[2, 2], -1.0, 1.0)))


def env_holding(env, kind, scale, grasp, tcp, hand_yaw, pitch, target):
    """Reset the reorient KeypointEnv to the object held as grasped on the arm and the hand now: grasp, the
    object's (x, y, bottom z, yaw) and the TCP (x, y, z) and hand yaw when it was gripped flat; the hand
    then moved to tcp, hand_yaw and pitch (about the fingers' closing axis) with the object in it; target,
    the object frame's (position, rotation) to reach (fit_turn), gives every keypoint's target."""
    pose, grip, grip_yaw = grasp
    position, rotation = target
    options = {
        'kind': kind,
        'scale': scale,
        'object_pose': tuple(float(v) for v in pose),
        'grasp_pose': (*(float(v) for v in grip), float(grip_yaw)),
        'targets': position + scale * catalog_entry(kind)[1] @ rotation.T,
    }
    env.reset(seed=0, options=options)
    d = env.data
    d.qpos[: env.hand_joints] = d.ctrl[:] = (*tcp, float(hand_yaw), float(pitch))
    d.qvel[:] = 0.0
    mujoco.mj_forward(env.model, d)


def hand_at(env, target):
    """(TCP position, hand yaw, hand pitch) that put the object held in the reorient env (env.held, the grasp)
    at target, its frame's (position, rotation (3, 3))."""
    position, rotation = target
    held_position, held_quat = env.held
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (np.asarray(rotation, float) @ quat_matrix(held_quat).T).ravel())
    yaw, pitch = yaw_pitch(quat)
    return np.asarray(position, float) - quat_matrix(quat) @ held_position, yaw, pitch


def push_height(object_height, config):
    """TCP height above the support for a push: halfway up the object (at most 4 cm), above min_tcp_z, and
    high enough that the hand body passes 1 cm over the top of an object taller than the fingers reach."""
    return max(config.min_tcp_z, min(object_height / 2, 0.04), object_height - HAND_UNDERSIDE + 0.01)


def object_yaw(quat):
    """The heading of a perceived object's quaternion (wxyz)."""
    return quat_yaw(np.asarray(quat, float))


def env_at(env, kind, scale, position, yaw, target_position, target_yaw, tcp, hand_yaw=0.0):
    """Reset KeypointEnv to the perceived object pose, its target pose and the arm's TCP: push, the
    closed fingers where the TCP is, heights measured from what the object stands on (the env's
    table is its support: a rack top as well as the table); place, the object held where it is by a
    hand at the TCP turned by hand_yaw (the grasp made on the arm)."""
    options = {
        'kind': kind,
        'scale': scale,
        'target_pose': (float(target_position[0]), float(target_position[1]), float(target_position[2]), target_yaw),
    }
    if env.skill == 'place':
        options['object_pose'] = (*(float(v) for v in position), float(yaw))
        options['grasp_pose'] = (*(float(v) for v in tcp), float(hand_yaw))
        env.reset(seed=0, options=options)
        return
    tcp = np.asarray(tcp, float) - (0.0, 0.0, float(position[2]))
    options['object_pose'] = (float(position[0]), float(position[1]), float(yaw))
    options['target_pose'] = (*options['target_pose'][:2], 0.0, target_yaw)
    options['gripper_position'] = tuple(float(v) for v in tcp)
    env.reset(seed=0, options=options)
    d = env.data  # reset raises the hand above the object; the arm's TCP may be beside it
    d.qpos[0:3] = d.ctrl[0:3] = np.clip(tcp, env.config.workspace_low, env.config.workspace_high)
    d.qvel[:] = 0.0
    mujoco.mj_forward(env.model, d)


def tcp_targets(env, actions):
    """(TCP displacements (k, 3), hand (yaw, pitch) changes (k, 2) [rad]) from the hand's start after each
    action, stepping the env."""
    start, start_angles = env.data.qpos[0:3].copy(), env.data.qpos[3 : env.hand_joints].copy()
    shifts, turns = [], np.zeros((len(actions), 2))
    for i, action in enumerate(actions):
        target, angles, _ = env.applied_action(action)
        shifts.append(target - start)
        turns[i, : len(angles)] = angles - start_angles
        env.step(action)
    return np.array(shifts), turns


def _top_at(parts, point):
    """Highest top [m] of the catalog parts whose footprint covers an (x, y) point (0 where none does)."""
    top = 0.0
    for part in parts:
        offset = np.asarray(point, float) - part.pos[:2]
        if part.shape == 'box':
            local = yaw_matrix(-part.yaw)[:2, :2] @ offset
            inside = abs(local[0]) <= part.size[0] and abs(local[1]) <= part.size[1]
        else:
            inside = float(np.linalg.norm(offset)) <= part.size[0]
        if inside:
            top = max(top, part.pos[2] + part.size[-1 if part.shape == 'box' else 1])
    return top


def grasp_point(kind, scale, samples=41):
    """Where to hold a catalog shape from above (object frame): on its long axis, in the middle
    of the tallest stretch of its middle half (a shoe's collar, not its low toe), at
    twinloop_core.geometry.grip_height of the height there; the fingers close across it."""
    shape = catalog.make_shape(kind)
    parts = scaled_parts(shape.parts, scale)
    axis = int(np.argmax(shape.extents[:2]))
    half = scale * shape.extents[axis] / 4
    along = np.linspace(-half, half, samples)
    tops = np.array([_top_at(parts, (a, 0.0) if axis == 0 else (0.0, a)) for a in along])
    tallest = along[tops >= tops.max() - 0.002]
    point = np.zeros(3)
    point[axis] = float(np.median(tallest))
    point[2] = grip_height((0.0, 0.0, float(tops.max())))
    return point


def keypoint_offsets(local, pose, targets):
    """(n, 3) world offsets [m] of keypoints (object frame) at pose (position, quat wxyz) from their targets."""
    position, quat = pose
    rotation = np.empty(9)
    mujoco.mju_quat2Mat(rotation, np.asarray(quat, float))
    world = np.asarray(local, float) @ rotation.reshape(3, 3).T + np.asarray(position, float)
    return world - np.asarray(targets, float)


def keypoint_distance(local, pose, targets):
    """Mean distance [m] of keypoints (object frame) at pose (position, quat wxyz) to their targets."""
    return float(np.linalg.norm(keypoint_offsets(local, pose, targets), axis=1).mean())


def horizontal_offset(local, pose, targets):
    """Mean horizontal distance [m] of keypoints (object frame) at pose to their targets."""
    return float(np.linalg.norm(keypoint_offsets(local, pose, targets)[:, :2], axis=1).mean())


def joint_chunk(q_start, q_end, tcp_length, config):
    """(times, positions) of a rest-to-rest chunk from q_start towards q_end: a straight joint-space
    line with minimum-jerk timing, as long as the TCP distance at tcp_speed, the joints' velocity and
    acceleration bounds and min_chunk ask; a move the bounds allow only beyond max_chunk is shortened
    (the next chunk goes on from where it ends)."""
    q_start, delta = np.asarray(q_start, float), np.asarray(q_end, float) - q_start
    largest = float(np.abs(delta).max())
    a, v = config.joint_acceleration, config.joint_velocity
    duration = max(config.min_chunk, tcp_length / config.tcp_speed, math.sqrt(PEAK_ACCELERATION * largest / a))
    duration = max(duration, PEAK_VELOCITY * largest / v)
    if duration > config.max_chunk:
        delta *= min(
            1.0,
            a * config.max_chunk**2 / (PEAK_ACCELERATION * largest),
            v * config.max_chunk / (PEAK_VELOCITY * largest),
        )
        duration = config.max_chunk
    count = max(2, int(math.ceil(duration / config.point_spacing)) + 1)
    times = np.linspace(0.0, duration, count)
    tau = times / duration
    s = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    return times, q_start + s[:, None] * delta
