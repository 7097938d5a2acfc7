"""Inverse kinematics for the Panda with mink (differential IK on the MuJoCo model).

The model is the scene's own (robosuite Panda), so IK solutions are exact for world_sim and the
twin. Only the arm joints move; everything else in the model is locked.
"""

import copy
from dataclasses import dataclass

import mink
import mujoco
import numpy as np

from twinloop_twin import scene
from twinloop_twin.twin import FINGER_BODIES, FINGER_SIDES
from twinloop_core.gripper import closed_on_something

EE_SITE = 'panda_grip_site'
# Gripper pointing down as in the home pose (grip z along world -z, fingers closing along world
# x), with joint 7 mid-range: quaternion w x y z.
DOWN = np.array([0.0, 0.7071068, 0.7071068, 0.0])


@dataclass
class IkResult:
    positions: np.ndarray  # arm joint positions [rad], ARM_JOINTS order
    position_error: float  # [m]
    orientation_error: float  # [rad]
    converged: bool


class PandaIk:
    def __init__(self, model):
        self.model = model
        self.configuration = mink.Configuration(model)
        self.arm_qpos = np.array([model.joint(j).qposadr[0] for j in scene.ARM_JOINTS])
        self.arm_dof = np.array([model.joint(j).dofadr[0] for j in scene.ARM_JOINTS])
        self.task = mink.FrameTask(EE_SITE, 'site', position_cost=1.0, orientation_cost=0.5, lm_damping=1e-3)
        self.posture = mink.PostureTask(model, cost=1e-3)
        self.limits = [mink.ConfigurationLimit(model)]
        locked = np.setdiff1d(np.arange(model.nv), self.arm_dof)
        self._locked = locked

    def solve(self, q_full, position, quat_wxyz=DOWN, iterations=300, dt=0.05, tol=1e-3, rot_tol=1e-2):
        """Arm joint positions that put the grip site at position with orientation quat, from q_full."""
        self.configuration.update(np.array(q_full, float))
        self.posture.set_target(self.configuration.q)
        target = mink.SE3.from_rotation_and_translation(
            mink.SO3(np.asarray(quat_wxyz, float)), np.asarray(position, float)
        )
        self.task.set_target(target)
        for _ in range(iterations):
            velocity = mink.solve_ik(
                self.configuration, [self.task, self.posture], dt, 'daqp', damping=1e-3, limits=self.limits
            )
            velocity[self._locked] = 0.0
            self.configuration.integrate_inplace(velocity, dt)
            error = self.task.compute_error(self.configuration)
            if np.linalg.norm(error[:3]) < tol and np.linalg.norm(error[3:]) < rot_tol:
                break
        error = self.task.compute_error(self.configuration)
        pos_err, rot_err = float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:]))
        return IkResult(
            self.configuration.q[self.arm_qpos].copy(), pos_err, rot_err, pos_err < tol and rot_err < rot_tol
        )


class ArmKinematics:
    """Forward kinematics and kinematic collision checks of arm configurations in a scene model.

    The model's objects stay where the data puts them (e.g. a synced twin); only the arm moves,
    carrying any object held between the fingers at the first configuration (rigidly, as the
    gripper does). Contacts that count as collisions: any robot link but the fingers touching
    anything; fingers touching the table or floor; robot links touching each other (but
    fingers touching fingers); a held
    object touching anything but the robot that it did not already touch at the start (lifting
    it off the table is fine). Fingers touching objects are allowed (grasping, pushing)."""

    def __init__(self, model, data=None):
        self.model = model
        self.data = mujoco.MjData(model) if data is None else copy.copy(data)
        self.arm_qpos = np.array([model.joint(j).qposadr[0] for j in scene.ARM_JOINTS])
        self.site = model.site(EE_SITE).id
        names = [model.body(model.geom_bodyid[g]).name for g in range(model.ngeom)]
        self.geom_owner = [model.geom(g).name if model.geom_bodyid[g] == 0 else names[g] for g in range(model.ngeom)]

    def grip_positions(self, qs):
        out = np.empty((len(qs), 3))
        for i, q in enumerate(qs):
            self.data.qpos[self.arm_qpos] = q
            mujoco.mj_kinematics(self.model, self.data)
            out[i] = self.data.site_xpos[self.site]
        return out

    def _site_pose(self):
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def _held_objects(self, q):
        """{object name: (qpos address, position and rotation in the grip-site frame)} for objects the
        fingers grip at q: both touch it, or the gripper closed on something and one does (open
        fingers brushing an object, or shut ones touching it from outside, do not carry it)."""
        self.data.qpos[self.arm_qpos] = q
        mujoco.mj_fwdPosition(self.model, self.data)
        site_p, site_r = self._site_pose()
        sides, held = {}, {}
        for c in self.data.contact[: self.data.ncon]:
            for finger, other in ((c.geom1, c.geom2), (c.geom2, c.geom1)):
                body = self.model.geom_bodyid[other]
                joint = self.model.body_jntadr[body]
                if (
                    self.geom_owner[finger] in FINGER_BODIES
                    and joint >= 0
                    and self.model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE
                    and c.dist <= 0
                ):
                    name = self.geom_owner[other]
                    sides.setdefault(name, set()).add(FINGER_SIDES[self.geom_owner[finger]])
                    obj_r = self.data.xmat[body].reshape(3, 3)
                    held[name] = (
                        self.model.jnt_qposadr[joint],
                        site_r.T @ (self.data.xpos[body] - site_p),
                        site_r.T @ obj_r,
                    )
        fingers = self.data.qpos[[self.model.joint(j).qposadr[0] for j in scene.FINGER_JOINTS]]
        closed = closed_on_something(abs(fingers[0]) + abs(fingers[1]))  # stopped short of shut: on something
        return {name: value for name, value in held.items() if sides[name] == {'left', 'right'} or closed}

    def collisions(self, qs):
        """Sorted 'robot_link|other' (or 'held_object|other') strings for every collision along the configurations."""
        if len(qs) == 0:
            return []
        held = self._held_objects(qs[0])
        found, resting = set(), None
        for q in qs:
            self.data.qpos[self.arm_qpos] = q
            if held:
                mujoco.mj_kinematics(self.model, self.data)
                site_p, site_r = self._site_pose()
                for adr, rel_p, rel_r in held.values():
                    quat = np.zeros(4)
                    mujoco.mju_mat2Quat(quat, (site_r @ rel_r).flatten())
                    self.data.qpos[adr : adr + 3] = site_p + site_r @ rel_p
                    self.data.qpos[adr + 3 : adr + 7] = quat
            mujoco.mj_fwdPosition(self.model, self.data)
            pairs = {
                tuple(sorted((self.geom_owner[c.geom1], self.geom_owner[c.geom2])))
                for c in self.data.contact[: self.data.ncon]
                if c.dist <= 0
            }
            if resting is None:  # what the held objects touch at the start is where they rest
                resting = {pair for pair in pairs if pair[0] in held or pair[1] in held}
            for a, b in pairs:
                robot_a, robot_b = a.startswith('panda_'), b.startswith('panda_')
                if robot_a and robot_b:
                    if not (a in FINGER_BODIES and b in FINGER_BODIES):  # closed fingers touch each other
                        found.add(f'{a}|{b}')
                elif robot_a or robot_b:
                    link, other = (a, b) if robot_a else (b, a)
                    if other in held:
                        continue
                    if link not in FINGER_BODIES or other in ('table', 'floor'):
                        found.add(f'{link}|{other}')
                elif (a in held or b in held) and (a, b) not in resting:
                    found.add(f'{a}|{b}' if a in held else f'{b}|{a}')
        return sorted(found)


class Arm:
    """IK and forward kinematics of the arm on a MuJoCo model of the scene's robot."""

    def __init__(self, model):
        self.ik, self.kinematics = PandaIk(model), ArmKinematics(model)
        self.qpos0 = model.qpos0.copy()

    @classmethod
    def panda(cls):
        """The Panda alone (an empty scene): what engines plan with."""
        return cls(scene.build_spec(scene.SceneConfig([], [])).compile())

    def q_full(self, q_arm):
        """The model's qpos with these arm joints."""
        q = self.qpos0.copy()
        q[self.ik.arm_qpos] = q_arm
        return q

    def ee_position(self, q_arm):
        """Grip-site position of arm joints [m]."""
        return self.kinematics.grip_positions([q_arm])[0]
