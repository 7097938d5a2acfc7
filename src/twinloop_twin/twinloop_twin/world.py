"""A MuJoCo world that behaves like the real arm and scene: joint trajectories are followed
with interpolation (like a ros2_control joint trajectory controller), the gripper takes width
commands, cameras render RGB and metric depth, object poses are known (ground truth) and objects
can be moved by hand (disturbances).
Used by the world_sim node and by tests; no rclpy here.
"""

from dataclasses import dataclass

import mujoco
import numpy as np

from twinloop_core.gripper import OPEN_WIDTH
from twinloop_twin import cameras, scene

MAX_MOVE = 3.0  # [m] objects are moved only within this distance of the world origin


@dataclass
class CameraFrame:
    """A rendered camera frame: RGB, depth, intrinsics and the optical pose in the world."""

    rgb: np.ndarray  # (h, w, 3) uint8
    depth: np.ndarray  # (h, w) float32, metres along the optical axis
    intrinsics: cameras.Intrinsics
    position: np.ndarray  # optical frame origin in the world [m]
    rotation: np.ndarray  # optical frame axes in the world (3x3)


class JointTrajectoryFollower:
    """Piecewise-linear interpolation of timed joint waypoints, starting from the current state."""

    def __init__(self, start_q, times, positions):
        times = np.asarray(times, float)
        positions = np.asarray(positions, float)
        if times.ndim != 1 or len(times) != len(positions) or len(times) == 0:
            raise ValueError('a trajectory needs as many times as waypoints, at least one')
        if np.any(np.diff(times) <= 0) or times[0] < 0:
            raise ValueError('time_from_start must be non-negative and strictly increasing')
        if not np.all(np.isfinite(positions)) or not np.all(np.isfinite(times)):
            raise ValueError('trajectory contains NaN or inf')
        if times[0] > 0:
            times = np.concatenate([[0.0], times])
            positions = np.vstack([start_q, positions])
        self.times, self.positions = times, positions

    @property
    def duration(self):
        """Time of the last waypoint [s]."""
        return float(self.times[-1])

    def sample(self, t):
        """Interpolated joint positions at t [s] from the start, held at both ends."""
        t = np.clip(t, 0.0, self.duration)
        return np.array([np.interp(t, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])])


class ArmController:
    """Joint-position servo targets from a trajectory, like a joint trajectory controller."""

    def __init__(self, limits):
        self.limits = limits
        self.trajectory = None
        self.start_time = 0.0

    def follow(self, data, times, positions, start_time=None):
        """Follow a trajectory from the current servo targets. start_time [s, simulated]: when its
        time 0 is (as a JTC reads header.stamp): a later start holds until then, an earlier one
        joins the trajectory where it is now; None: now."""
        now = float(data.time)
        start = now if start_time is None else float(start_time)
        times, positions = np.asarray(times, float), np.asarray(positions, float)
        if start < now:  # started in the past: the part still ahead, from where the path is now
            elapsed = now - start
            if times[0] > 0:
                times, positions = np.concatenate([[0.0], times]), np.vstack([data.ctrl[:7], positions])
            if elapsed >= times[-1]:
                times, positions = np.array([0.0]), positions[-1:]
            else:
                later = times > elapsed
                here = [np.interp(elapsed, times, positions[:, j]) for j in range(positions.shape[1])]
                times = np.concatenate([[0.0], times[later] - elapsed])
                positions = np.vstack([here, positions[later]])
        elif start > now:  # hold the current targets until the start
            times, positions = np.concatenate([[0.0], times + (start - now)]), np.vstack([data.ctrl[:7], positions])
        self.trajectory = JointTrajectoryFollower(data.ctrl[:7].copy(), times, positions)
        self.start_time = now

    def hold(self, data, arm_qpos):
        """Drop the trajectory and servo to the current joint positions."""
        self.trajectory = None
        data.ctrl[:7] = data.qpos[arm_qpos]

    def apply(self, data):
        """Set the servo targets for now, clipped to the joint limits; a finished trajectory ends."""
        if self.trajectory is None:
            return
        elapsed = data.time - self.start_time
        data.ctrl[:7] = np.clip(self.trajectory.sample(elapsed), self.limits[:, 0], self.limits[:, 1])
        if elapsed >= self.trajectory.duration:
            self.trajectory = None


def set_gripper(data, width):
    """Position targets of both fingers for an opening width [m]."""
    width = float(np.clip(width, 0.0, OPEN_WIDTH))
    data.ctrl[7:9] = (width / 2, -width / 2)


class SimWorld:
    """The simulated physical world."""

    def __init__(self, config: scene.SceneConfig, fast_render=True, spec=None, object_ids=None):
        """spec: a scene built elsewhere (default: built from config), with scene.add_robot's Panda;
        object_ids: its object bodies (default: config's objects)."""
        self.config = config
        self.fast_render = fast_render
        self.model = (spec if spec is not None else scene.build_spec(config)).compile()
        self.data = mujoco.MjData(self.model)
        self.arm_qpos = scene.qpos_addresses(self.model)
        self.arm_dof = scene.dof_addresses(self.model)
        self.finger_qpos = scene.qpos_addresses(self.model, scene.FINGER_JOINTS)
        self.arm_limits = np.array([self.model.joint(j).range for j in scene.ARM_JOINTS])
        self.object_ids = list(object_ids) if object_ids is not None else [o.id for o in config.objects]
        self.camera_names = [c.name for c in config.cameras]
        self._renderers = {}
        self.controller = ArmController(self.arm_limits)
        self.reset()

    # --- state -------------------------------------------------------------------------------
    def reset(self, settle_steps=300):
        """Arm at home, gripper open, objects as in the config, then settle_steps physics steps."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self.arm_qpos] = self.config.home
        self.data.ctrl[:7] = self.config.home
        self.set_gripper(OPEN_WIDTH)
        self.data.qpos[self.finger_qpos] = (0.04, -0.04)
        self.controller.trajectory = None
        mujoco.mj_forward(self.model, self.data)
        self.step(settle_steps)

    @property
    def time(self):
        """Simulated time [s]."""
        return float(self.data.time)

    def arm_positions(self):
        """Arm joint positions [rad], ARM_JOINTS order."""
        return self.data.qpos[self.arm_qpos].copy()

    def arm_velocities(self):
        """Arm joint velocities [rad/s], ARM_JOINTS order."""
        return self.data.qvel[self.arm_dof].copy()

    def gripper_width(self):
        """Opening between the fingers [m]."""
        return float(self.data.qpos[self.finger_qpos[0]] - self.data.qpos[self.finger_qpos[1]])

    def object_pose(self, object_id):
        """(position, quaternion w x y z) of an object's frame in the world."""
        body = self.data.body(object_id)
        return body.xpos.copy(), body.xquat.copy()

    # --- commands ----------------------------------------------------------------------------
    def move_object(self, object_id, position, quat=None):
        """Put a movable object at position (and quat w x y z; None: keep its orientation), at rest.
        ValueError names what is wrong: an unknown or fixed object, a non-finite or far-off pose."""
        if object_id not in self.object_ids:
            raise ValueError(f'unknown object {object_id!r}; objects: {self.object_ids}')
        joint = self.model.body(object_id).jntadr[0]
        if joint < 0 or self.model.jnt_type[joint] != mujoco.mjtJoint.mjJNT_FREE:
            raise ValueError(f'{object_id!r} is fixed in the scene and cannot be moved')
        position = np.asarray(position, float)
        if position.shape != (3,) or not np.all(np.isfinite(position)) or np.abs(position).max() > MAX_MOVE:
            raise ValueError(f'position {position.tolist()} must be 3 finite values within {MAX_MOVE} m of the origin')
        adr, dof = self.model.jnt_qposadr[joint], self.model.jnt_dofadr[joint]
        if quat is not None:
            quat = np.asarray(quat, float)
            norm = np.linalg.norm(quat) if quat.shape == (4,) and np.all(np.isfinite(quat)) else 0.0
            if norm < 1e-6:
                raise ValueError(f'orientation {quat.tolist()} is not a quaternion (w x y z)')
            self.data.qpos[adr + 3 : adr + 7] = quat / norm
        self.data.qpos[adr : adr + 3] = position
        self.data.qvel[dof : dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def follow_trajectory(self, times, positions, start_time=None):
        """Follow timed waypoints (arm joint order of ARM_JOINTS) whose time 0 is start_time [s] (None: now)."""
        self.controller.follow(self.data, times, positions, start_time)

    def hold(self):
        """Stop at once: hold the current position, drop the rest of any trajectory."""
        self.controller.hold(self.data, self.arm_qpos)

    @property
    def trajectory_active(self):
        """Whether a trajectory is being followed."""
        return self.controller.trajectory is not None

    def set_gripper(self, width):
        """Command an opening width [m], clipped to 0..OPEN_WIDTH."""
        set_gripper(self.data, width)

    def step(self, n=1):
        """Advance n physics steps, updating the trajectory targets before each."""
        for _ in range(n):
            self.controller.apply(self.data)
            mujoco.mj_step(self.model, self.data)

    # --- rendering ---------------------------------------------------------------------------
    def renderer(self, width, height, fast=None):
        """One renderer per size and quality, created once (fast: no MSAA, collision-mesh robot)."""
        fast = self.fast_render if fast is None else fast
        key = (width, height, fast)
        if key not in self._renderers:
            samples = self.model.vis.quality.offsamples
            self.model.vis.quality.offsamples = 0 if fast else 4
            self._renderers[key] = mujoco.Renderer(self.model, height, width)
            self.model.vis.quality.offsamples = samples
        return self._renderers[key]

    def render(self, camera, width, height, depth=True, data=None, fast=None, overlay=None):
        """One camera frame of data (default: the world's state): RGB, depth [m], the camera model.

        overlay(scene) may add marker geoms (trajectories, keypoints) before the RGB render."""
        data = self.data if data is None else data
        fast = self.fast_render if fast is None else fast
        renderer = self.renderer(width, height, fast)
        option = scene.scene_option(fast)
        renderer.update_scene(data, camera, scene_option=option)
        if overlay is not None:
            overlay(renderer.scene)
        rgb = renderer.render().copy()
        depth_image = None
        if depth:
            renderer.enable_depth_rendering()
            renderer.update_scene(data, camera, scene_option=option)
            if overlay is not None:
                overlay(renderer.scene)
            depth_image = renderer.render().astype(np.float32)
            renderer.disable_depth_rendering()
        position, rotation = cameras.optical_pose(data, camera)
        return CameraFrame(rgb, depth_image, cameras.intrinsics(self.model, camera, width, height), position, rotation)

    def segmentation(self, camera, width, height, data=None):
        """(h, w) int array: index into object_ids of the object seen at each pixel, -1 elsewhere."""
        data = self.data if data is None else data
        renderer = self.renderer(width, height)
        renderer.enable_segmentation_rendering()
        renderer.update_scene(data, camera, scene_option=scene.scene_option(self.fast_render))
        seg = renderer.render()
        renderer.disable_segmentation_rendering()
        ids = seg[:, :, 0]
        is_geom = seg[:, :, 1] == mujoco.mjtObj.mjOBJ_GEOM
        return np.where(is_geom & (ids >= 0), self.geom_object_index[np.clip(ids, 0, self.model.ngeom - 1)], -1)

    @property
    def geom_object_index(self):
        """Per geom: index into object_ids of the object it belongs to, -1 for robot and table."""
        if not hasattr(self, '_geom_object_index'):
            index = np.full(self.model.ngeom, -1)
            for i, oid in enumerate(self.object_ids):
                index[self.model.geom_bodyid == self.model.body(oid).id] = i
            self._geom_object_index = index
        return self._geom_object_index

    def close(self):
        """Release all renderers."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
