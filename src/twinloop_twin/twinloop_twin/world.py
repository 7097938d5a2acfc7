"""A MuJoCo world that behaves like the real arm and scene: joint trajectories are followed
with interpolation (like a ros2_control joint trajectory controller), the gripper takes width
commands, cameras render RGB and metric depth, and object poses are known (ground truth).
Used by the world_sim node and by tests; no rclpy here.
"""
from dataclasses import dataclass

import mujoco
import numpy as np

from twinloop_twin import cameras, scene

GRIPPER_MAX_WIDTH = 0.08  # [m]


@dataclass
class CameraFrame:
    rgb: np.ndarray        # (h, w, 3) uint8
    depth: np.ndarray      # (h, w) float32, metres along the optical axis
    intrinsics: cameras.Intrinsics
    position: np.ndarray   # optical frame origin in the world [m]
    rotation: np.ndarray   # optical frame axes in the world (3x3)


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
        return float(self.times[-1])

    def sample(self, t):
        t = np.clip(t, 0.0, self.duration)
        return np.array([np.interp(t, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])])


class SimWorld:
    """The simulated physical world."""

    def __init__(self, config: scene.SceneConfig, fast_render=True):
        self.config = config
        self.model = scene.build_spec(config, fast_render).compile()
        self.data = mujoco.MjData(self.model)
        self.arm_qpos = np.array([self.model.joint(j).qposadr[0] for j in scene.ARM_JOINTS])
        self.arm_dof = np.array([self.model.joint(j).dofadr[0] for j in scene.ARM_JOINTS])
        self.finger_qpos = np.array([self.model.joint(j).qposadr[0] for j in scene.FINGER_JOINTS])
        self.arm_limits = np.array([self.model.joint(j).range for j in scene.ARM_JOINTS])
        self.object_ids = [o.id for o in config.objects]
        self.camera_names = [c.name for c in config.cameras]
        self._renderers = {}
        self._trajectory = None
        self._trajectory_start = 0.0
        self.reset()

    # --- state -------------------------------------------------------------------------------
    def reset(self, settle_steps=300):
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self.arm_qpos] = self.config.home
        self.data.ctrl[:7] = self.config.home
        self.set_gripper(GRIPPER_MAX_WIDTH)
        self.data.qpos[self.finger_qpos] = (0.04, -0.04)
        self._trajectory = None
        mujoco.mj_forward(self.model, self.data)
        self.step(settle_steps)

    @property
    def time(self):
        return float(self.data.time)

    def arm_positions(self):
        return self.data.qpos[self.arm_qpos].copy()

    def arm_velocities(self):
        return self.data.qvel[self.arm_dof].copy()

    def gripper_width(self):
        return float(self.data.qpos[self.finger_qpos[0]] - self.data.qpos[self.finger_qpos[1]])

    def object_pose(self, object_id):
        """(position, quaternion w x y z) of an object's frame in the world."""
        body = self.data.body(object_id)
        return body.xpos.copy(), body.xquat.copy()

    def object_poses(self):
        return {oid: self.object_pose(oid) for oid in self.object_ids}

    def site_or_body_position(self, name):
        return self.data.body(name).xpos.copy()

    # --- commands ----------------------------------------------------------------------------
    def follow_trajectory(self, times, positions):
        """Start following timed waypoints (arm joint order of ARM_JOINTS) from now."""
        self._trajectory = JointTrajectoryFollower(self.data.ctrl[:7].copy(), times, positions)
        self._trajectory_start = self.time

    def hold(self):
        """Stop at once: hold the current position, drop the rest of any trajectory."""
        self._trajectory = None
        self.data.ctrl[:7] = self.arm_positions()

    @property
    def trajectory_active(self):
        return self._trajectory is not None

    def set_gripper(self, width):
        width = float(np.clip(width, 0.0, GRIPPER_MAX_WIDTH))
        self.data.ctrl[7:9] = (width / 2, -width / 2)

    def step(self, n=1):
        for _ in range(n):
            if self._trajectory is not None:
                elapsed = self.time - self._trajectory_start
                self.data.ctrl[:7] = np.clip(self._trajectory.sample(elapsed), self.arm_limits[:, 0], self.arm_limits[:, 1])
                if elapsed >= self._trajectory.duration:
                    self._trajectory = None
            mujoco.mj_step(self.model, self.data)

    # --- rendering ---------------------------------------------------------------------------
    def renderer(self, width, height):
        key = (width, height)
        if key not in self._renderers:
            self._renderers[key] = mujoco.Renderer(self.model, height, width)
        return self._renderers[key]

    def render(self, camera, width, height, depth=True):
        """One camera frame: RGB, depth in metres, and the camera model."""
        renderer = self.renderer(width, height)
        renderer.update_scene(self.data, camera)
        rgb = renderer.render().copy()
        depth_image = None
        if depth:
            renderer.enable_depth_rendering()
            renderer.update_scene(self.data, camera)
            depth_image = renderer.render().astype(np.float32)
            renderer.disable_depth_rendering()
        position, rotation = cameras.optical_pose(self.data, camera)
        return CameraFrame(rgb, depth_image, cameras.intrinsics(self.model, camera, width, height), position, rotation)

    def segmentation(self, camera, width, height):
        """(h, w) int array: index into object_ids of the object seen at each pixel, -1 elsewhere."""
        renderer = self.renderer(width, height)
        renderer.enable_segmentation_rendering()
        renderer.update_scene(self.data, camera)
        seg = renderer.render()
        renderer.disable_segmentation_rendering()
        geom_to_object = np.full(self.model.ngeom + 1, -1)
        for index, oid in enumerate(self.object_ids):
            body = self.model.body(oid).id
            geom_to_object[np.where(self.model.geom_bodyid == body)[0]] = index
        ids = seg[:, :, 0]
        is_geom = seg[:, :, 1] == mujoco.mjtObj.mjOBJ_GEOM
        return np.where(is_geom & (ids >= 0), geom_to_object[np.clip(ids, 0, self.model.ngeom)], -1)

    def close(self):
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
