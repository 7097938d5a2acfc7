"""A LIBERO task as a world (no rclpy): the benchmark's own scene, robot and success predicate
(from its BDDL goal), driven by joint position targets like world_sim, observed through its two
cameras with depth. Nothing of the task is changed; its language instruction is the instruction.

Frames: everything is expressed in twinloop's world frame, the robot base (LIBERO's world origin
is elsewhere). LIBERO's Panda runs robosuite's JOINT_POSITION controller at control_freq: each
step moves towards the commanded joints by at most 0.05 rad per joint (gains: JOINT_KP). Objects are reported from
the simulator's state ("privileged perception": LIBERO's objects have no meshes in twinloop's
mesh library, so the pose estimator cannot work on them yet).
"""

import os
from dataclasses import dataclass

import mujoco
import numpy as np

from twinloop_core.geometry import quat_matrix
from twinloop_twin import cameras

CAMERAS = {'agentview': 'agentview', 'wrist': 'robot0_eye_in_hand'}  # twinloop name -> LIBERO camera
MAX_STEP = 0.05  # [rad] robosuite JOINT_POSITION controller: action 1.0 = this much per step
# robosuite's JOINT_POSITION controller has kp 50: the arm then moves at ~0.16 rad/s and no joint-space plan fits
# LIBERO's step limits. twinloop stiffens it (~0.6 rad/s); the tasks, scenes and predicates are LIBERO's own.
JOINT_KP = 1500.0
# [rad/s] per joint: the fastest ramp that controller follows closely (measured: 0.6 rad/s trails by 0.02 rad, 0.8 rad/s
# saturates its 0.05 rad step and trails by 0.35 rad after 2 s). Joint targets faster than this lead the arm by tenths
# of a radian - labels a policy cannot read from one frame.
TRACKED_SPEED = 0.6
SETTLE_STEPS = 10  # no-op steps after a reset, as LIBERO's standard evaluation waits (num_steps_wait)
# LIBERO's standard step limits per suite (the published evaluation's max_steps, at 20 Hz)
MAX_STEPS = {'libero_spatial': 220, 'libero_object': 280, 'libero_goal': 300, 'libero_10': 520, 'libero_90': 400}


@dataclass
class LiberoFrame:
    """One camera frame of a LIBERO task; the optical pose is in the robot-base world."""

    rgb: np.ndarray
    depth: np.ndarray  # [m] along the optical axis
    intrinsics: cameras.Intrinsics
    position: np.ndarray  # optical frame in the robot-base world
    rotation: np.ndarray


@dataclass
class Drawer:
    """A fixture's drawer in the robot-base world: its slide joint, the centre of its handle (the drawer's
    collision geom that sticks out furthest) and the unit direction it opens in."""

    joint: str
    handle: np.ndarray
    opening: np.ndarray


def matrix_to_quat(R):
    """A rotation matrix as a quaternion (w, x, y, z)."""
    x, y, z, w = cameras.rotation_to_quat_xyzw(R)
    return np.array([w, x, y, z])


def object_label(name):
    """'akita_black_bowl_1' -> 'akita black bowl'."""
    parts = name.split('_')
    return ' '.join(parts[:-1] if parts[-1].isdigit() else parts)


class LiberoWorld:
    """A LIBERO task's environment stepped with joint position targets, reported in the robot-base world."""

    def __init__(
        self, suite='libero_spatial', task_id=0, init_index=0, image_size=128, control_freq=20, joint_kp=JOINT_KP
    ):
        """Camera frames are rendered on demand (camera()), not at every step."""
        self.joint_kp, self.image_size = joint_kp, image_size
        self._renderer = self._rendered_model = None
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        tasks = benchmark.get_benchmark_dict()
        if suite not in tasks:
            raise ValueError(f'unknown LIBERO suite {suite!r}; known: {sorted(tasks)}')
        self.benchmark = tasks[suite]()
        if not 0 <= task_id < self.benchmark.n_tasks:
            raise ValueError(f'{suite} has tasks 0..{self.benchmark.n_tasks - 1}, not {task_id}')
        self.task = self.benchmark.get_task(task_id)
        self.instruction = self.task.language
        self.suite, self.task_id, self.control_freq = suite, task_id, control_freq
        bddl = os.path.join(get_libero_path('bddl_files'), self.task.problem_folder, self.task.bddl_file)
        self.env = OffScreenRenderEnv(
            bddl_file_name=bddl, controller='JOINT_POSITION', control_freq=control_freq, use_camera_obs=False
        )
        self.init_states = self.benchmark.get_task_init_states(task_id)
        self.env.seed(0)
        self.reset(init_index)

    @property
    def sim(self):
        """robosuite's MjSim of the task environment."""
        return self.env.env.sim

    def reset(self, init_index=0):
        """LIBERO's init state number init_index (wrapping around its list); the arm holds still while
        the objects, placed a little above their supports, settle (SETTLE_STEPS, not counted)."""
        self.env.reset()
        self.obs = self.env.set_init_state(self.init_states[init_index % len(self.init_states)])
        controller = self.env.env.robots[0].controller  # made anew by every reset
        controller.kp = np.full(7, float(self.joint_kp))
        controller.kd = 2 * np.sqrt(controller.kp)  # critically damped, as robosuite's damping_ratio 1
        self.target = self.arm_positions()
        self.gripper_closed = False
        self.steps = 0
        for _ in range(SETTLE_STEPS):
            self.step()
        self.steps = 0
        base = (
            self.sim.data.get_body_xpos('robot0_base').copy(),
            quat_matrix(self.sim.data.get_body_xquat('robot0_base')),
        )
        self.base_position, self.base_rotation = base

    def to_base(self, position, rotation):
        """A LIBERO world pose in the robot-base world."""
        return self.base_rotation.T @ (np.asarray(position) - self.base_position), self.base_rotation.T @ rotation

    # --- state -----------------------------------------------------------------------------
    @property
    def time(self):
        """Simulated time since the last reset [s] (control steps / control_freq)."""
        return self.steps / self.control_freq

    def arm_positions(self):
        """Arm joint positions [rad], panda_joint1..7."""
        return np.array(self.obs['robot0_joint_pos'], float)

    def finger_positions(self):
        """Finger joint positions [m] as robosuite reports them (robot0_gripper_qpos)."""
        return np.array(self.obs['robot0_gripper_qpos'], float)

    def objects(self):
        """[(name, label, position, quat wxyz)] of the task's objects and fixtures (cabinets, stoves)
        in the robot-base world."""
        out = []
        for name in [*self.env.env.objects_dict, *self.env.env.fixtures_dict]:
            body = self.env.env.obj_body_id[name]
            position, rotation = self.to_base(
                self.sim.data.body_xpos[body], self.sim.data.body_xmat[body].reshape(3, 3)
            )
            out.append((name, object_label(name), position, matrix_to_quat(rotation)))
        return out

    def scene_joints(self):
        """Positions of the scene's own hinge and slide joints (drawers, knobs) by name."""
        model, out = self.sim.model._model, {}
        kinds = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))  # jnt_type holds numpy ints
        for j in range(model.njnt):
            name = model.joint(j).name
            if int(model.jnt_type[j]) in kinds and not name.startswith(('robot0_', 'gripper0_', 'mount0_')):
                out[name] = float(self.sim.data.qpos[model.jnt_qposadr[j]])
        return out

    def drawer(self, region):
        """The Drawer of a BDDL region such as 'wooden_cabinet_1_middle_region' (its slide joint is named
        after the region: wooden_cabinet_1_middle_level); ValueError when the region has no slide joint."""
        model, data = self.sim.model._model, self.sim.data._data
        stem = region.removesuffix('_region')
        slides = [
            j
            for j in range(model.njnt)
            if model.joint(j).name.startswith(stem + '_') and int(model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_SLIDE)
        ]
        if len(slides) != 1:
            raise ValueError(f'{region}: no single slide joint named {stem}_*')
        joint = slides[0]
        body = model.jnt_bodyid[joint]
        # robosuite's drawers open towards negative joint positions (their articulation's open ranges)
        opening = self.base_rotation.T @ (-data.xmat[body].reshape(3, 3) @ model.jnt_axis[joint])
        geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == body and model.geom_contype[g]]
        centres = [self.to_base(data.geom_xpos[g], np.eye(3))[0] for g in geoms]
        handle = max(centres, key=lambda c: float(c @ opening))
        return Drawer(model.joint(joint).name, handle, opening / np.linalg.norm(opening))

    def success(self):
        """The task's own success predicate (its BDDL goal)."""
        return bool(self.env.env._check_success())

    # --- acting -----------------------------------------------------------------------------
    def step(self, arm_target=None, gripper_closed=None):
        """One control step towards the joint target (kept from before when None)."""
        if arm_target is not None:
            self.target = np.asarray(arm_target, float)
        if gripper_closed is not None:
            self.gripper_closed = bool(gripper_closed)
        action = np.append(
            np.clip((self.target - self.arm_positions()) / MAX_STEP, -1.0, 1.0), 1.0 if self.gripper_closed else -1.0
        )
        self.obs, _, _, _ = self.env.step(action)
        self.steps += 1

    # --- cameras ----------------------------------------------------------------------------
    def camera(self, name):
        """A frame of a camera ('agentview' or 'wrist') rendered now with MuJoCo's renderer on LIBERO's
        model, without shadows and reflections (robosuite's own offscreen path takes several times
        longer on a CPU): RGB, depth [m], intrinsics, pose."""
        model, data = self._render_model(), self.sim.data._data
        camera = model.camera(CAMERAS[name]).id
        self._update_scene(data, camera)
        rgb = self._renderer.render().copy()
        self._renderer.enable_depth_rendering()
        self._update_scene(data, camera)
        depth = self._renderer.render().astype(np.float32)
        self._renderer.disable_depth_rendering()
        size = self.image_size
        f = 0.5 * size / np.tan(np.radians(model.cam_fovy[camera]) / 2)
        intrinsics = cameras.Intrinsics(size, size, f, f, (size - 1) / 2, (size - 1) / 2)
        rotation = data.cam_xmat[camera].reshape(3, 3) @ cameras.MUJOCO_TO_OPTICAL
        position, rotation = self.to_base(data.cam_xpos[camera], rotation)
        return LiberoFrame(rgb, depth, intrinsics, position, rotation)

    def _render_model(self):
        """The model now, with a renderer made for it (anew when a reset rebuilt the model): no MSAA, shadows
        or reflections, ~2.5x faster on a CPU renderer; LIBERO's collision geoms (group 0) unseen, as in its
        own images."""
        model = self.sim.model._model
        if self._renderer is None or self._rendered_model is not model:
            if self._renderer is not None:
                self._renderer.close()
            samples, model.vis.quality.offsamples = model.vis.quality.offsamples, 0
            self._renderer, self._rendered_model = mujoco.Renderer(model, self.image_size, self.image_size), model
            model.vis.quality.offsamples = samples
            self._option = mujoco.MjvOption()
            self._option.geomgroup[0] = 0
        return model

    def segmentation(self, name, object_name):
        """(size, size) bool mask of camera `name` ('agentview' or 'wrist') seen now: the pixels of the
        visible geoms of the object or fixture `object_name` (its body and the bodies under it)."""
        model, data = self._render_model(), self.sim.data._data
        body = self.env.env.obj_body_id[object_name]
        self._update_scene(data, model.camera(CAMERAS[name]).id)
        self._renderer.enable_segmentation_rendering()
        seg = self._renderer.render()
        self._renderer.disable_segmentation_rendering()
        geom, kind = seg[:, :, 0], seg[:, :, 1]
        ours = np.zeros(model.ngeom + 1, bool)
        under = np.flatnonzero(self._is_under(model, body))
        ours[np.flatnonzero(np.isin(model.geom_bodyid, under))] = True
        return (kind == mujoco.mjtObj.mjOBJ_GEOM) & ours[np.where(geom >= 0, geom, model.ngeom)]

    @staticmethod
    def _is_under(model, body):
        """Per body: whether it is `body` or lies under it in the kinematic tree."""
        under = np.zeros(model.nbody, bool)
        under[body] = True
        for b in range(body + 1, model.nbody):  # MuJoCo numbers a body after its parent
            under[b] = under[model.body_parentid[b]]
        return under

    def _update_scene(self, data, camera):
        self._renderer.update_scene(data, camera, scene_option=self._option)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def close(self):
        """Release the renderer and the LIBERO environment."""
        if self._renderer is not None:
            self._renderer.close()
        self.env.close()
