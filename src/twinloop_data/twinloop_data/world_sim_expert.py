"""A scripted expert for the sim suite's tabletop tasks, recording demonstrations in the LeRobot format.

Privileged: it reads object poses from the simulation. For each task it plans the scripted
baseline's grip-site waypoints (as twinloop_scripted does; this package imports no engine: above,
down and close, lift; for a place also above the destination, lower and release, retreat), solves
them with twinloop's IK, times them with ruckig
and drives world_sim's simulation core (twinloop_twin.world.SimWorld, built from the same scene
YAML and ~/reset's seeded `randomize_layout`) the way a policy would: one joint-position target
per control step at `fps`, followed by linear interpolation over that step (what a one-point
JointTrajectory does in world_sim), and a gripper width command [m] (world_sim's gripper topic).

Every control step is recorded: each chosen camera's RGB (rendered like world_sim renders it,
resized to the dataset's size), depth (mm, 16-bit PNG, noise-free) and camera parameters
(quaternion w x y z and position of the optical frame in the world, focal fx / width, fy / height),
the gaze mask (the pixels of the object the motion is about: the object until it is lifted, then a
place's destination; from MuJoCo's segmentation, the analogue of ReconVLA's gaze region), the
state (7 joint positions, gripper width, 7 joint velocities: `policy_state`) and the action (7
joint targets for the next step + gripper width command). Episodes are judged on ground truth
with twinloop_core.judging.

Layout seeds: training layouts use seeds >= TRAIN_SEED_MIN; the sim-suite evaluation (world_sim
~/reset, bench/task_suite.py) uses the ranges in bench/tasks.yaml (development and held-out, all
below it) and seed 0 is the scene file's layout.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.spatial import ConvexHull, QhullError

from twinloop_core.geometry import grasp_orientation, grip_height, quat_matrix
from twinloop_core.gripper import CLOSED_WIDTH, KEEP, OPEN_WIDTH
from twinloop_core.judging import judge
from twinloop_core.task import SubTask
from twinloop_data.lerobot_format import gaze_feature, gaze_image
from twinloop_execution import trajectory
from twinloop_execution.kinematics import Arm
from twinloop_execution.safety import JointLimits
from twinloop_twin import cameras, objects, scene, world

TRAIN_SEED_MIN = 100_000  # training layouts: seeds >= this; evaluation layouts: seeds below it
TASKS = {
    'pick up the blue cube': (SubTask('pick', 'blue_cube'),),
    'put the red cube in the bowl': (SubTask('place', 'red_cube', 'bowl', 'in'),),
}
STATE_NAMES = [*scene.ARM_JOINTS, 'gripper_width', *(f'{j}_velocity' for j in scene.ARM_JOINTS)]
ACTION_NAMES = [f'{j}_target' for j in scene.ARM_JOINTS] + ['gripper_width_command']
CAMERA_NAMES = ['qw', 'qx', 'qy', 'qz', 'x', 'y', 'z', 'fx_over_width', 'fy_over_height']
FPS = 10  # [Hz] the recorded control rate by default
MIN_GAZE_DEPTH = 0.05  # [m] a box with a corner nearer the lens than this gets an empty gaze mask
CAMERAS = ('front', 'wrist')  # the recorded cameras by default (the vla_policy node's default views)
IMAGE_SIZE = (160, 120)  # (width, height) of recorded images by default
VELOCITY_SCALE = 0.5  # share of the arm's velocity, acceleration and jerk limits the expert moves at by default
GRIPPER_WAIT = 0.6  # [s] held still after a gripper command
APPROACH, LIFT = 0.15, 0.2  # [m] above the object before coming down; after grasping
# above, down and close, lift: the gaze is on the object; a place's later waypoints look at its destination
PICK_WAYPOINTS = 3
HELD_RISE = 0.5 * LIFT  # [m] the object rose this much with the lift: the grasp held


def policy_state(positions, gripper_width, velocities):
    """The state a policy observes (STATE_NAMES): 7 joint positions [rad], the gripper width [m], 7 joint
    velocities [rad/s]. The layout only grows by appending: a policy reads its leading state_dim entries."""
    return np.concatenate([positions, [gripper_width], velocities]).astype(np.float32)


def waypoints(subtask, objects):
    """[(grip position, quat wxyz, gripper width before or KEEP, after or KEEP)] of a pick or place
    (the scripted baseline's motions); objects: {id: (position, quat wxyz, size xyz)}."""
    p, quat, size = objects[subtask.object_id]
    grasp = grasp_orientation(quat, size)
    steps = [
        (p + (0, 0, APPROACH), grasp, OPEN_WIDTH, KEEP),
        (np.array([p[0], p[1], p[2] + grip_height(size)]), grasp, KEEP, CLOSED_WIDTH),
        (p + (0, 0, LIFT), grasp, KEEP, KEEP),
    ]
    if subtask.action == 'place':
        d, _, d_size = objects[subtask.destination_id]
        top = np.asarray(d, float) + (0, 0, d_size[2])
        steps += [
            (top + (0, 0, 0.12 + size[2]), grasp, KEEP, KEEP),
            (top + (0, 0, 0.03 + size[2] / 2), grasp, KEEP, OPEN_WIDTH),
            (top + (0, 0, 0.12 + size[2]), grasp, KEEP, KEEP),
        ]
    return steps


def features(camera_names, width, height, gaze=True):
    """LeRobot features: per camera RGB, depth (mm), gaze mask (where `gaze`) and camera parameters; state; action."""
    out = {}
    for name in camera_names:
        out[f'observation.images.{name}'] = {
            'dtype': 'image',
            'shape': [height, width, 3],
            'names': ['height', 'width', 'channel'],
        }
        out[f'observation.depth.{name}'] = {
            'dtype': 'image',
            'shape': [height, width, 1],
            'names': ['height', 'width', 'channel'],
            'info': {'unit': 'mm', 'encoding': '16-bit PNG, 0 = no return'},
        }
        if gaze:
            out[f'observation.gaze.{name}'] = gaze_feature(height, width)
        out[f'observation.camera.{name}'] = {'dtype': 'float32', 'shape': [len(CAMERA_NAMES)], 'names': CAMERA_NAMES}
    out['observation.state'] = {'dtype': 'float32', 'shape': [len(STATE_NAMES)], 'names': STATE_NAMES}
    out['action'] = {'dtype': 'float32', 'shape': [len(ACTION_NAMES)], 'names': ACTION_NAMES}
    return out


def dataset_views(rgb, depth_m, size):
    """A rendered (or received) colour frame and its depth [m] at the dataset size (width, height): rgb
    uint8 (bilinear) and depth uint16 mm (nearest, 0 = no return)."""
    rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    depth_mm = np.clip(np.nan_to_num(depth_m) * 1000, 0, 65535).astype(np.uint16)
    return rgb, np.asarray(Image.fromarray(depth_mm).resize(size, Image.NEAREST))


def layout(scene_config, seed):
    """The scene with world_sim ~/reset's layout for seed (0: the scene file's own)."""
    return scene_config if seed == 0 else scene.randomize_layout(scene_config, np.random.default_rng(seed))


def object_states(sim):
    """{id: (position, quat wxyz, size xyz)} of every object in the world (ground truth)."""
    out = {}
    for obj in sim.config.objects:
        position, quat = sim.object_pose(obj.id)
        out[obj.id] = (position, quat, tuple(objects.make_shape(obj.kind, **obj.params).extents))
    return out


def camera_vector(quat_wxyz, position, fx, fy, width, height):
    """The 9 camera parameters (CAMERA_NAMES) of an optical frame's pose and intrinsics."""
    return np.concatenate([quat_wxyz, position, [fx / width, fy / height]]).astype(np.float32)


def box_gaze_mask(obj, camera, size, depth_mm=None, tolerance=0.01):
    """The gaze mask (gaze_image's uint8 image) of an object's bounding box (position of its bottom face, quat
    w x y z, size x y z) in a camera given by its 9 parameters (CAMERA_NAMES, principal point at the image
    centre) at the dataset size (width, height): the box corners' convex hull, less the pixels where the depth
    image [mm] sees something nearer than the box. For recorders with ground-truth poses but no segmentation
    (through ROS); the in-process recorder's masks are MuJoCo's segmentation."""
    width, height = size
    position, quat, (sx, sy, sz) = obj
    corners = np.array([[x * sx / 2, y * sy / 2, z * sz] for x in (-1, 1) for y in (-1, 1) for z in (0, 1)])
    camera = np.asarray(camera, float)
    optical = (np.asarray(position, float) + corners @ quat_matrix(quat).T - camera[4:7]) @ quat_matrix(camera[:4])
    mask = np.zeros((height, width), bool)
    if np.any(optical[:, 2] < MIN_GAZE_DEPTH):  # a corner behind or at the lens: no silhouette
        return gaze_image(mask)
    pinhole = cameras.Intrinsics(
        width, height, camera[7] * width, camera[8] * height, (width - 1) / 2, (height - 1) / 2
    )
    pixels = pinhole.project(optical)
    try:
        outline = pixels[ConvexHull(pixels).vertices]
    except QhullError:  # degenerate (seen edge-on)
        return gaze_image(mask)
    image = Image.new('L', (width, height))
    ImageDraw.Draw(image).polygon([tuple(p) for p in outline], fill=255)
    mask = np.asarray(image) > 0
    if depth_mm is not None:
        seen = np.asarray(depth_mm, float) / 1000
        mask &= (seen <= 0) | (seen > optical[:, 2].min() - tolerance)
    return gaze_image(mask)


def camera_parameters(frame):
    """The 9 camera parameters of a rendered frame (see CAMERA_NAMES)."""
    x, y, z, w = cameras.rotation_to_quat_xyzw(frame.rotation)
    k = frame.intrinsics
    return camera_vector([w, x, y, z], frame.position, k.fx, k.fy, k.width, k.height)


class NoisyTargets:
    """Joint targets plus a correlated offset: o <- rho o + sigma sqrt(1 - rho^2) N(0, 1) per step, so the
    offset's spread is sigma and it lasts ~1 / (1 - rho) steps; `active` False lets it die out (o <- rho o)."""

    def __init__(self, sigma, rng, rho=0.8):
        self.sigma, self.rng, self.rho = sigma, rng, rho
        self.offset, self.active = 0.0, True

    def __call__(self, target):
        """target + the offset of this step (the target itself when sigma is 0)."""
        if not self.sigma:
            return target
        shock = self.sigma * np.sqrt(1 - self.rho**2) * self.rng.standard_normal(len(target)) if self.active else 0.0
        self.offset = self.rho * self.offset + shock
        return target + self.offset


class ExpertPlanner:
    """The expert's motions without a world: a waypoint -> one joint target per control step (IK, ruckig)."""

    def __init__(self, root, fps=FPS):
        """root: the repository (urdf/, config/)."""
        root = Path(root)
        self.fps = fps
        self.limits = JointLimits.panda(root)
        self.jerk = trajectory.jerk_limits(root / 'config' / 'panda_joint_limits.yaml', list(scene.ARM_JOINTS))
        self.arm = Arm.panda()

    def segment(self, q, gripper, waypoint, velocity_scale):
        """Steps [(joint target, gripper width, moving)] from joints q to the waypoint, one per control step
        (timed by ruckig): the gripper commanded before the move and, after it, held still for GRIPPER_WAIT
        with the new width; returns (steps, the joints and the gripper width at its end)."""
        position, quat, before_width, after_width = waypoint
        result = self.arm.ik.solve(self.arm.q_full(q), np.asarray(position, float), np.asarray(quat, float))
        if not result.converged:
            raise ExpertFailed(f'no IK solution for {np.round(position, 3).tolist()}')
        gripper = gripper if before_width == KEEP else before_width
        path = trajectory.parametrize(
            np.vstack([q, result.positions]),
            self.limits.velocity,
            self.limits.acceleration,
            self.jerk,
            velocity_scale,
            period=1.0 / self.fps,
        )
        moves = int(np.ceil(path.duration * self.fps)) + 1
        steps = [(path.sample((k + 1) / self.fps), gripper, True) for k in range(moves)]
        if after_width != KEEP:
            gripper = after_width
            steps += [(result.positions, gripper, False)] * int(GRIPPER_WAIT * self.fps)
        return steps, result.positions, gripper


def run_expert(world, planner, task, velocity_scale, retries):
    """The expert's episode of task in a world (object_states(), held(object_id, above), execute(steps, gaze),
    arm_positions()): each subtask's waypoints in turn, a grasp the lift shows missed planned again from the
    object's pose of then while retries last. Returns the retries used."""
    q, gripper, tries_left = world.arm_positions(), OPEN_WIDTH, retries
    for subtask in TASKS[task]:
        plan, index = waypoints(subtask, world.object_states()), 0
        while index < len(plan):
            gaze = subtask.object_id if index < PICK_WAYPOINTS else subtask.destination_id
            steps, q, gripper = planner.segment(q, gripper, plan[index], velocity_scale)
            world.execute(steps, gaze)
            missed = index == PICK_WAYPOINTS - 1 and not world.held(subtask.object_id, plan[0][0])
            if missed and tries_left > 0:
                tries_left -= 1
                plan, index = waypoints(subtask, world.object_states()), 0
                continue
            index += 1
    return retries - tries_left


def lifted(height_now, above):
    """Whether an object rose with the lift: its height now against the approach point's (APPROACH above
    where it was when the grasp was planned)."""
    return height_now > above[2] - APPROACH + HELD_RISE


class ExpertFailed(Exception):
    """The expert could not plan the task (no IK solution)."""


class _FramesUsed(Exception):
    """max_frames reached: the episode ends where it is."""


@dataclass
class Episode:
    """What one recorded episode came to."""

    seed: int
    task: str
    frames: int
    success: bool
    detail: str
    retries: int = 0  # grasps tried again after a miss


class WorldSimExpert:
    """Scripted pick-and-place in world_sim's simulation core, recording every control step."""

    def __init__(self, scene_config, root, fps=FPS, camera_names=CAMERAS, size=IMAGE_SIZE):
        """root: the repository (urdf/, config/); size: (width, height) of the recorded images."""
        known = [c.name for c in scene_config.cameras]
        unknown = [c for c in camera_names if c not in known]
        if unknown:
            raise ValueError(f'cameras {unknown} are not in the scene (it has {known})')
        self.scene_config, self.fps = scene_config, fps
        self.camera_names, self.size = list(camera_names), tuple(size)
        self.planner = ExpertPlanner(root, fps)
        self.sim = None

    def features(self):
        """The dataset features this expert records."""
        return features(self.camera_names, *self.size)

    def reset(self, seed):
        """A fresh world with the seed's layout (as world_sim's ~/reset builds it)."""
        if self.sim is not None:
            self.sim.close()
        self.sim = world.SimWorld(layout(self.scene_config, seed))
        return self.sim

    def run(self, task, seed, record, max_frames=None, velocity_scale=VELOCITY_SCALE, noise=0.0, retries=0):
        """Record one episode of task on the seed's layout; record(frame) gets every control step.

        noise [rad] > 0 perturbs the executed joint targets (DART, Laskey et al. 2017) while the recorded
        actions stay the expert's, so the data shows the way back from states off its path: a correlated
        offset (NoisyTargets) per joint while the arm moves, dying out while the gripper closes or opens.
        retries > 0: a grasp the lift shows missed (the object did not rise HELD_RISE) is tried again up to
        that many times from the object's pose of then (open, above, down and close, lift), so the data
        also shows what to do after a miss."""
        if task not in TASKS:
            raise ValueError(f'unknown task {task!r}; the expert does {sorted(TASKS)}')
        sim = self.reset(seed)
        before = object_states(sim)
        self._record, self._max_frames, self._frames = record, max_frames, 0
        self._perturb = NoisyTargets(noise, np.random.default_rng(seed))
        used = 0
        try:
            used = run_expert(self, self.planner, task, velocity_scale, retries)
        except _FramesUsed:
            pass
        ok, detail = judge(TASKS[task], before, object_states(self.sim))
        return Episode(seed, task, self._frames, ok, detail, used)

    # the world run_expert acts in
    def arm_positions(self):
        """Measured arm joints."""
        return self.sim.arm_positions()

    def object_states(self):
        """Ground truth {id: (position, quat wxyz, size)}."""
        return object_states(self.sim)

    def held(self, object_id, above):
        """Whether the object rose with the lift (lifted)."""
        return lifted(self.sim.object_pose(object_id)[0][2], above)

    def execute(self, steps, gaze):
        """Record and take each step (the noise on the targets while the arm moves)."""
        for target, gripper, moving in steps:
            self._perturb.active = moving
            if self._max_frames is not None and self._frames >= self._max_frames:
                raise _FramesUsed
            self._record(self.frame(target, gripper, gaze))
            self.act(self._perturb(target), gripper)
            self._frames += 1

    def act(self, arm_target, gripper_width):
        """One control step: interpolate to arm_target over 1 / fps (a one-point trajectory) and set the gripper."""
        self.sim.follow_trajectory([1.0 / self.fps], [arm_target])
        self.sim.set_gripper(gripper_width)
        self.sim.step(int(round(1.0 / (self.fps * self.sim.model.opt.timestep))))

    def observation(self, gaze=None):
        """{camera name: (rgb (h, w, 3) uint8, depth (h, w) uint16 mm, gaze mask (h, w) uint8 of object
        `gaze` or None without one, camera parameters (9,))} at the dataset size."""
        out = {}
        for name in self.camera_names:
            cfg = next(c for c in self.sim.config.cameras if c.name == name)
            frame = self.sim.render(name, cfg.width, cfg.height)
            rgb, depth = dataset_views(frame.rgb, frame.depth, self.size)
            mask = None
            if gaze is not None:
                mask = gaze_image(self.sim.segmentation(name, *self.size) == self.sim.object_ids.index(gaze))
            out[name] = (rgb, depth, mask, camera_parameters(frame))
        return out

    def state(self):
        """The policy state of now (policy_state)."""
        return policy_state(self.sim.arm_positions(), self.sim.gripper_width(), self.sim.arm_velocities())

    def frame(self, arm_target, gripper_width, gaze):
        """The dataset frame of now: observations (gaze: the object the motion is about), state and the
        action about to be taken."""
        frame = {
            'observation.state': self.state(),
            'action': np.append(arm_target, gripper_width).astype(np.float32),
        }
        for name, (rgb, depth, mask, camera) in self.observation(gaze).items():
            frame[f'observation.images.{name}'] = rgb
            frame[f'observation.depth.{name}'] = depth
            frame[f'observation.gaze.{name}'] = mask
            frame[f'observation.camera.{name}'] = camera
        return frame

    def close(self):
        """Release the renderers."""
        if self.sim is not None:
            self.sim.close()
