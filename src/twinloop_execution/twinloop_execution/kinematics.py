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
from twinloop_core.geometry import quat_matrix
from twinloop_core.gripper import OPEN_WIDTH, THIN_WALL, closed_on_something

EE_SITE = 'panda_grip_site'
# The arm's centre line for the safety gate: body origins from the shoulder to the hand, then the
# grip site. Consecutive points are fixed on one rigid link, so the straight segments between them
# lie on the arm (MuJoCo places each Panda joint at its body's origin). panda_link0 (the base on the
# table) and the column up to the shoulder never move: they are not points (see config/safety.yaml).
LINK_POINTS = (
    'panda_link1',
    'panda_link2',
    'panda_link3',
    'panda_link4',
    'panda_link5',
    'panda_link6',
    'panda_link7',
    'panda_right_hand',
    EE_SITE,
)
# A robot link already touching something where a motion starts (the hand that just let go of an
# object, a perceived pose overlapping the hand, fingertips a push left on the table) may stay in
# contact along the motion, pressing at most this much deeper [m]: moving off is not a collision,
# pushing into it is (else every motion from there, the way up included, is refused).
START_CONTACT_SLACK = 0.005
# A held object set down on something presses into it in the twin by the perceived poses' error (a few
# millimetres) and its creep in the fingers: up to this deep [m] it is put down, deeper it is a collision.
SET_DOWN_DEPTH = 0.005
# A gripper closed on something at least this wide [m] holds the object around its grip point (within
# AROUND_GRIP_SLACK [m] of the object's box, the pose error of an object the hand hides from the cameras);
# thinner things (a bowl's rim) are held where the fingers' inner faces press on them.
AROUND_GRIP_MIN_WIDTH = 0.01
AROUND_GRIP_SLACK = 0.02
# A finger grips what it presses on with its inner face: a contact normal within 60 degrees of the
# direction the finger closes in (a pushed object touches the fingers' front or outer faces).
INNER_FACE_COS = 0.5
# Gripper pointing down as in the home pose (grip z along world -z, fingers closing along world
# x), with joint 7 mid-range: quaternion w x y z.
DOWN = np.array([0.0, 0.7071068, 0.7071068, 0.0])


@dataclass
class IkResult:
    """An IK solution and how well it reaches the target."""

    positions: np.ndarray  # arm joint positions [rad], ARM_JOINTS order
    position_error: float  # [m]
    orientation_error: float  # [rad]
    converged: bool


class PandaIk:
    """Differential IK (mink) for the grip site; only the arm joints move."""

    def __init__(self, model):
        self.model = model
        self.configuration = mink.Configuration(model)
        self.arm_qpos = scene.qpos_addresses(model)
        self.arm_dof = scene.dof_addresses(model)
        self.task = mink.FrameTask(EE_SITE, 'site', position_cost=1.0, orientation_cost=0.5, lm_damping=1e-3)
        self.posture = mink.PostureTask(model, cost=1e-3)
        self.limits = [mink.ConfigurationLimit(model)]
        self.arm_range = np.array([model.joint(j).range for j in scene.ARM_JOINTS])
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
        # mink's limit constraint lets a joint settle a hair past its limit (2.8974 of 2.8973 rad), which
        # the safety gate refuses: the answer is clipped into the range (the pose moves by micrometres)
        q_full = self.configuration.q.copy()
        q_full[self.arm_qpos] = q = np.clip(q_full[self.arm_qpos], *self.arm_range.T)
        self.configuration.update(q_full)
        error = self.task.compute_error(self.configuration)
        pos_err, rot_err = float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:]))
        return IkResult(q, pos_err, rot_err, pos_err < tol and rot_err < rot_tol)


class ArmKinematics:
    """Forward kinematics and kinematic collision checks of arm configurations in a scene model.

    The model's objects stay where the data puts them (e.g. a synced twin); only the arm moves,
    carrying any object held between the fingers (rigidly, as the gripper does). Held is judged at the first
    configuration and also where the data's arm is (the twin's measured joints, where its objects were seen): a
    streamed chunk starts where the arm will be a few tenths of a second later, and a cube carried there is
    still where the arm is now. Contacts that count as collisions: any robot link but the
    fingers touching anything; fingers touching the table or floor; robot links touching each other (but
    fingers touching fingers); a held object touching anything but the robot that it did not
    already touch at the start (lifting it off the table is fine) deeper than SET_DOWN_DEPTH (setting it down
    is fine). Fingers touching objects are
    allowed (grasping, pushing), and so is a link touching anything (not the robot) it already
    touched at the start, up to START_CONTACT_SLACK deeper (letting go of it and moving off)."""

    def __init__(self, model, data=None):
        self.model = model
        self.data = mujoco.MjData(model) if data is None else copy.copy(data)
        self.arm_qpos = scene.qpos_addresses(model)
        self.synced = None if data is None else self.data.qpos[self.arm_qpos].copy()  # held is judged here too
        self.site = model.site(EE_SITE).id
        names = [model.body(model.geom_bodyid[g]).name for g in range(model.ngeom)]
        self.geom_owner = [model.geom(g).name if model.geom_bodyid[g] == 0 else names[g] for g in range(model.ngeom)]
        self._robot_geom = np.array([owner.startswith('panda_') for owner in self.geom_owner], bool)
        free = [model.body_jntadr[model.geom_bodyid[g]] for g in range(model.ngeom)]
        self._free_geoms = {  # geoms of free bodies: what the fingers can pick up
            g for g in range(model.ngeom) if free[g] >= 0 and model.jnt_type[free[g]] == mujoco.mjtJoint.mjJNT_FREE
        }
        self._closing = [  # (finger joint, its side, the sign that turns its axis into the way it closes)
            (
                model.joint(name).id,
                FINGER_SIDES[model.body(model.joint(name).bodyid[0]).name],
                -np.sign(model.joint(name).range.sum()),
            )
            for name in scene.FINGER_JOINTS
        ]
        self._chain = None  # built on the first link_points call

    link_point_names = LINK_POINTS

    def grip_positions(self, qs):
        """Grip-site positions (N, 3) [m] of arm configurations qs (N, 7)."""
        out = np.empty((len(qs), 3))
        for i, q in enumerate(qs):
            self.data.qpos[self.arm_qpos] = q
            mujoco.mj_kinematics(self.model, self.data)
            out[i] = self.data.site_xpos[self.site]
        return out

    def link_points(self, qs):
        """Points (N, len(LINK_POINTS), 3) [m] along the arm's centre line for configurations qs (N, 7).

        Vectorised forward kinematics over the model's body tree (the same numbers as mj_kinematics):
        shoulder, elbow, wrist, flange, hand and grip point, in LINK_POINTS order; consecutive
        points lie on one rigid link."""
        qs = np.asarray(qs, float).reshape(-1, len(self.arm_qpos))
        if self._chain is None:
            self._chain = self._build_chain()
        n = len(qs)
        rot = np.broadcast_to(np.eye(3), (n, 3, 3))
        pos = np.zeros((n, 3))
        out = np.empty((n, len(LINK_POINTS), 3))
        for offset, fixed, joint, slot in self._chain:
            flat = rot.reshape(3 * n, 3)  # rot @ constant: one matrix product for all configurations
            if joint is None:  # a point fixed in the last joint's frame
                out[:, slot] = pos + (flat @ offset).reshape(n, 3)
                continue
            pos = pos + (flat @ offset).reshape(n, 3)
            rot = (flat @ fixed).reshape(n, 3, 3)
            c, s = np.cos(qs[:, joint])[:, None], np.sin(qs[:, joint])[:, None]
            x, y = rot[:, :, 0].copy(), rot[:, :, 1].copy()  # about the body's z axis: mix the first two columns
            rot[:, :, 0], rot[:, :, 1] = c * x + s * y, c * y - s * x
            if slot is not None:
                out[:, slot] = pos
        return out

    def _build_chain(self):
        """[(offset, rotation, arm joint index, LINK_POINTS slot)] from the world to the grip site: one
        entry per arm joint (the fixed bodies before it folded in), and (offset, None, None, slot) for
        each point fixed in the last joint's frame (the hand, the grip site)."""
        model = self.model
        body = model.site_bodyid[self.site]
        path = []
        while body != 0:
            path.append(body)
            body = model.body_parentid[body]
        joint_of = {model.jnt_bodyid[model.joint(j).id]: i for i, j in enumerate(scene.ARM_JOINTS)}
        slots = {model.body(name).id: i for i, name in enumerate(LINK_POINTS[:-1])}
        chain, rot, pos = [], np.eye(3), np.zeros(3)
        for body in reversed(path):
            joint = joint_of.get(body)
            if model.body_jntnum[body] != (0 if joint is None else 1):
                raise ValueError(f'body {model.body(body).name}: unexpected joints for the arm chain')
            pos, rot = pos + rot @ model.body_pos[body], rot @ quat_matrix(model.body_quat[body])
            if joint is not None:
                j = model.joint(scene.ARM_JOINTS[joint]).id
                if np.abs(model.jnt_pos[j]).max() > 1e-12 or not np.allclose(model.jnt_axis[j], (0, 0, 1)):
                    raise ValueError(f'{scene.ARM_JOINTS[joint]}: expected a z axis through the body origin')
                chain.append((pos, rot, joint, slots.get(body)))
                rot, pos = np.eye(3), np.zeros(3)
            elif body in slots:
                chain.append((pos.copy(), None, None, slots[body]))
        chain.append((pos + rot @ model.site_pos[self.site], None, None, len(LINK_POINTS) - 1))
        if sorted(c[3] for c in chain if c[3] is not None) != list(range(len(LINK_POINTS))):
            raise ValueError(f'the grip site is not below every body of {LINK_POINTS[:-1]}')
        return chain

    def joint_reach(self):
        """Per arm joint, an upper bound [m] on the distance of any robot geom point distal to it from
        its axis, for every configuration: along the tree, the sum of the body offsets (finger slides
        at full travel) plus each geom's offset and bounding radius. Moving joint j by dq moves no
        point of the robot more than reach[j] * |dq| (the safety gate's sweep relies on it)."""
        model = self.model
        children = {}
        for b in range(1, model.nbody):
            children.setdefault(model.body_parentid[b], []).append(b)

        def extent(body):  # farthest point of body's subtree from body's origin
            own = [np.linalg.norm(model.geom_pos[g]) + model.geom_rbound[g] for g in range(model.ngeom)]
            own = [own[g] for g in range(model.ngeom) if model.geom_bodyid[g] == body]
            own += [np.linalg.norm(model.site_pos[s]) for s in range(model.nsite) if model.site_bodyid[s] == body]
            far = max(own, default=0.0)
            for child in children.get(body, []):
                slide = sum(
                    max(abs(model.jnt_range[j][0]), abs(model.jnt_range[j][1]))
                    for j in range(model.njnt)
                    if model.jnt_bodyid[j] == child and model.jnt_type[j] == mujoco.mjtJoint.mjJNT_SLIDE
                )
                far = max(far, np.linalg.norm(model.body_pos[child]) + slide + extent(child))
            return far

        return np.array([extent(model.jnt_bodyid[model.joint(j).id]) for j in scene.ARM_JOINTS])

    def _site_pose(self):
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def _held_objects(self, q):
        """{object name: (qpos address, position and rotation in the grip-site frame)} for objects the
        fingers grip at q: both press on it with their inner faces (unless shut), or the gripper closed on
        something and one does, or the gripper closed on something wide (AROUND_GRIP_MIN_WIDTH) around
        the grip point and the object nearest it fits between open fingers and lies around it (within
        AROUND_GRIP_SLACK: the hand hides the object it holds from the cameras, and its perceived pose may
        be off by more than the fingers' faces allow). Open fingers brushing an object do not carry it, and
        neither do fingers pushing it with another face: pressed on while pushing, shut fingers part by a
        few millimetres and read as closed on something."""
        self.data.qpos[self.arm_qpos] = q
        mujoco.mj_fwdPosition(self.model, self.data)
        site_p, site_r = self._site_pose()
        inward = self._finger_inward()
        sides = {}
        for c in self.data.contact[: self.data.ncon]:
            for finger, other, sign in ((c.geom1, c.geom2, 1.0), (c.geom2, c.geom1, -1.0)):
                side = FINGER_SIDES.get(self.geom_owner[finger])
                if (
                    side is not None
                    and other in self._free_geoms
                    and c.dist <= 0
                    and sign * c.frame[:3] @ inward[side] > INNER_FACE_COS  # the normal points finger -> other
                ):
                    sides.setdefault(self.model.geom_bodyid[other], set()).add(side)
        fingers = self.data.qpos[scene.qpos_addresses(self.model, scene.FINGER_JOINTS)]
        width = abs(fingers[0]) + abs(fingers[1])
        closed = closed_on_something(width)  # stopped short of shut: on something
        shut = width <= THIN_WALL  # shut fingers pressing on one face (a push) hold nothing
        bodies = {body for body, touched in sides.items() if (touched == {'left', 'right'} and not shut) or closed}
        if closed and width >= AROUND_GRIP_MIN_WIDTH and not bodies:
            around = self._around_grip(site_p, inward['left'])
            bodies = {around} if around is not None else set()
        held = {}
        for body in bodies:
            joint = self.model.body_jntadr[body]
            held[self.model.body(body).name] = (
                self.model.jnt_qposadr[joint],
                site_r.T @ (self.data.xpos[body] - site_p),
                site_r.T @ self.data.xmat[body].reshape(3, 3),
            )
        return held

    def _around_grip(self, site_p, axis):
        """The free body with a geom whose box (grown by AROUND_GRIP_SLACK) holds the grip point and is at
        most OPEN_WIDTH across along the fingers' axis, the nearest such; None if there is none."""
        best, nearest = None, np.inf
        for geom in self._free_geoms:
            rotation = self.data.geom_xmat[geom].reshape(3, 3)
            centre, half = self.model.geom_aabb[geom][:3], self.model.geom_aabb[geom][3:]
            outside = np.abs(rotation.T @ (site_p - self.data.geom_xpos[geom]) - centre) - half
            across = 2 * np.abs(rotation.T @ axis) @ half
            gap = float(np.linalg.norm(np.maximum(outside, 0.0)))
            if gap <= AROUND_GRIP_SLACK and across <= OPEN_WIDTH and gap < nearest:
                best, nearest = self.model.geom_bodyid[geom], gap
        return best

    def _finger_inward(self):
        """{finger side: unit vector (world) along which that finger closes} at the data's state."""
        return {side: sign * self.data.xaxis[joint] for joint, side, sign in self._closing}

    def collisions(self, qs):
        """Sorted 'robot_link|other' (or 'held_object|other') strings for every collision along the configurations.
        The data's state is as before afterwards (the held objects carried along go back)."""
        if len(qs) == 0:
            return []
        before = self.data.qpos.copy()
        try:
            return self._collisions(qs)
        finally:
            self.data.qpos[:] = before

    def _collisions(self, qs):
        held = self._held_objects(qs[0])
        if self.synced is not None:  # and what the fingers hold where the twin's arm is
            held.update(self._held_objects(self.synced))
        watched = self._robot_geom | np.array([owner in held for owner in self.geom_owner], bool)
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
            mujoco.mj_kinematics(self.model, self.data)  # positions and contacts only: all that counts here
            mujoco.mj_collision(self.model, self.data)
            ncon = self.data.ncon
            touching = self.data.contact.dist[:ncon] <= 0
            geoms, depths = self.data.contact.geom[:ncon][touching], -self.data.contact.dist[:ncon][touching]
            watch = watched[geoms].any(axis=1)  # objects resting on the table: not our business
            pairs = {}  # (a, b) -> deepest penetration [m]
            for (g1, g2), depth in zip(geoms[watch], depths[watch]):
                pair = tuple(sorted((self.geom_owner[g1], self.geom_owner[g2])))
                pairs[pair] = max(pairs.get(pair, 0.0), float(depth))
            if resting is None:  # what the held objects touch at the start is where they rest
                resting = {pair for pair in pairs if pair[0] in held or pair[1] in held}
                started_in = {pair: depth for pair, depth in pairs.items() if _link_on_other(pair)}
            for (a, b), depth in pairs.items():
                robot_a, robot_b = a.startswith('panda_'), b.startswith('panda_')
                if robot_a and robot_b:
                    if not (a in FINGER_BODIES and b in FINGER_BODIES):  # closed fingers touch each other
                        found.add(f'{a}|{b}')
                elif robot_a or robot_b:
                    link, other = (a, b) if robot_a else (b, a)
                    if other in held or depth <= started_in.get((a, b), -np.inf) + START_CONTACT_SLACK:
                        continue
                    if link not in FINGER_BODIES or other in ('table', 'floor'):
                        found.add(f'{link}|{other}')
                elif (a in held or b in held) and (a, b) not in resting and depth > SET_DOWN_DEPTH:
                    found.add(f'{a}|{b}' if a in held else f'{b}|{a}')
        return sorted(found)


def _link_on_other(pair):
    """A robot link touching something that is not the robot."""
    return sum(name.startswith('panda_') for name in pair) == 1


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

    def ee_quat(self, q_arm):
        """Grip-site orientation (w x y z) of arm joints."""
        k = self.kinematics
        k.data.qpos[k.arm_qpos] = q_arm
        mujoco.mj_kinematics(k.model, k.data)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, k.data.site_xmat[k.site])
        return quat
