"""The sim twin: a MuJoCo model rebuilt from perceived objects, answering "what if" questions.

sync() places the known objects (mesh library entries) at their perceived poses and the arm at its
measured joints; rollout() plays candidate motions on a scratch copy and reports what happened
(collisions and with what, object displacements, joint-limit margins, what the gripper holds);
render() draws any state from any camera. The base state never changes during rollouts.
"""

import copy
import os
from dataclasses import dataclass, field

import mujoco
import numpy as np
from mujoco import rollout

from twinloop_core.geometry import pull_axis, quat_angle
from twinloop_core.gripper import OPEN_WIDTH
from twinloop_twin import objects, scene, world

FINGER_SIDES = {
    'panda_leftfinger': 'left',
    'panda_finger_joint1_tip': 'left',
    'panda_rightfinger': 'right',
    'panda_finger_joint2_tip': 'right',
}
FINGER_BODIES = tuple(FINGER_SIDES)


@dataclass
class Detection:
    """A perceived object: which known object (mesh_id) and where."""

    id: str
    mesh_id: str
    position: tuple
    quat: tuple  # w, x, y, z
    label: str = ''


@dataclass
class Candidate:
    """A motion to try: timed arm waypoints plus gripper width commands at given times."""

    times: list  # [s] from the start, increasing
    positions: list  # arm joints per waypoint [rad], ARM_JOINTS order
    gripper: list = field(default_factory=list)  # [(time [s], width [m])]
    settle: float = 0.5  # [s] simulated after the last waypoint


@dataclass
class RolloutResult:
    """What happened in one rollout."""

    collisions: list  # sorted (robot link, other) pairs that touched: table, floor, objects (not by the fingers),
    # and (carried object, other) for new contacts of an object held at the start until released
    contacts: list  # sorted (a, b) pairs of every contact seen, by owner name
    displacements: dict  # object id -> final minus initial position [m]
    rotations: dict  # object id -> rotation angle between initial and final orientation [rad]
    final_poses: dict  # object id -> (position, quat wxyz)
    joint_margin: np.ndarray  # per arm joint, smallest distance to a limit over the rollout [rad]
    holding: str  # object between both fingers at the end and touching nothing else, '' if none
    ee_path: np.ndarray  # grip site positions over time [m]
    duration: float  # [s]

    def moved(self, threshold=0.01):
        """Ids of the objects displaced by more than threshold [m], sorted."""
        return sorted(oid for oid, d in self.displacements.items() if np.linalg.norm(d) > threshold)


class MeshLibrary:
    """Known objects by mesh_id: shape parameters, colour, mass and friction (pose ignored)."""

    def __init__(self, entries):
        self.entries = {e.mesh_id: e for e in entries}
        self._shapes = {}

    def shape(self, mesh_id):
        """The catalog shape of a known mesh_id (made once: a bowl's takes ~20 ms), None for an unknown one.
        Shared: read it, do not change it."""
        if mesh_id not in self._shapes:
            entry = self.entries.get(mesh_id)
            self._shapes[mesh_id] = entry and objects.make_shape(entry.kind, **entry.params)
        return self._shapes[mesh_id]

    @classmethod
    def from_scene(cls, config):
        """A library of the known objects of a scene config."""
        return cls(config.objects)

    def instance(self, detection):
        """The library's entry for a detection, under its id and at its pose; KeyError for an unknown mesh_id."""
        if detection.mesh_id not in self.entries:
            raise KeyError(f'unknown mesh_id {detection.mesh_id!r}; the library has {sorted(self.entries)}')
        entry = copy.deepcopy(self.entries[detection.mesh_id])
        entry.id, entry.label = detection.id, detection.label or entry.label
        entry.pos, entry.quat = tuple(detection.position), tuple(detection.quat)
        return entry


def length_groups(lengths, threads=1, most=3):
    """Indices of rollouts of these step counts split into at most `most` groups of similar length:
    each group is played padded to its longest, `threads` at a time; the split that takes the fewest
    rounds of steps."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    if n == 0:
        return []
    sizes = [lengths[i] for i in order]
    # best[g][j]: fewest rounds of steps for the first j (sorted) rollouts in g groups; cut[g][j]: where the last starts
    best = [[0.0] + [np.inf] * n] + [[np.inf] * (n + 1) for _ in range(most)]
    cut = [[0] * (n + 1) for _ in range(most + 1)]
    for g in range(1, most + 1):
        for j in range(1, n + 1):
            for i in range(j):
                cost = best[g - 1][i] + -(-(j - i) // threads) * sizes[j - 1]
                if cost < best[g][j]:
                    best[g][j], cut[g][j] = cost, i
    g = min(range(1, most + 1), key=lambda k: best[k][n])
    groups, j = [], n
    while j > 0:
        i = cut[g][j]
        groups.append(order[i:j])
        j, g = i, g - 1
    return groups[::-1]


class SimTwin:
    """The sim twin: a SimWorld rebuilt from detections, with parallel rollouts and rendering."""

    def __init__(self, library, cameras, fast_render=True, control_period=0.006, threads=None):
        """control_period [s]: how often a rollout's contacts are read; threads: parallel rollouts
        (default: one per core)."""
        self.library, self.cameras, self.fast_render = library, cameras, fast_render
        self.control_period, self.threads = control_period, threads or os.cpu_count() or 1
        self.world = None
        self._signature = None

    def sync(self, detections, arm_positions, gripper_width=OPEN_WIDTH, finger_positions=None):
        """Make the twin's base state the perceived one; rebuilds the model only when the object set changed.
        finger_positions: both finger joints where measured separately (an off-centre grasp)."""
        self._prepare(detections)
        w = self.world
        mujoco.mj_resetData(w.model, w.data)
        for d in detections:
            self._place(d)
        w.data.qpos[w.arm_qpos] = arm_positions
        w.data.ctrl[:7] = arm_positions
        w.data.qpos[w.finger_qpos] = (
            finger_positions if finger_positions is not None else (gripper_width / 2, -gripper_width / 2)
        )
        # fingers stopped short of open were commanded closed (on an object): keep squeezing it
        world.set_gripper(w.data, gripper_width if gripper_width >= OPEN_WIDTH - 0.005 else 0.0)
        w.controller.trajectory = None
        mujoco.mj_forward(w.model, w.data)

    def _prepare(self, detections):
        """A model holding exactly the detected objects (rebuilt when the set changes)."""
        signature = tuple(sorted((d.id, d.mesh_id) + self._fixed_pose_key(d) for d in detections))
        if signature != self._signature:
            if self.world is not None:
                self.world.close()
            config = scene.SceneConfig([self.library.instance(d) for d in detections], list(self.cameras))
            self.world = world.SimWorld(config, self.fast_render)
            self._signature = signature

    def _place(self, detection):
        """Put a detected object's joint where it was perceived: a free object at its pose, a drawer
        slid out along its axis from where the model holds it (static objects are baked in)."""
        model, data = self.world.model, self.world.data
        joint = self._joint(detection.id)
        if joint < 0:
            return
        adr = model.jnt_qposadr[joint]
        if model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE:
            data.qpos[adr : adr + 3] = detection.position
            data.qpos[adr + 3 : adr + 7] = detection.quat
            return
        if model.jnt_type[joint] != mujoco.mjtJoint.mjJNT_SLIDE:
            raise ValueError(f'{detection.id}: a perceived object moves on a free or slide joint only')
        body = model.jnt_bodyid[joint]
        out = float(np.dot(np.subtract(detection.position, model.body_pos[body]), pull_axis(model.body_quat[body])))
        data.qpos[adr] = np.clip(out, *model.jnt_range[joint])

    def _joint(self, object_id):
        """Index of an object's own joint in the model, -1 when it has none (static)."""
        return mujoco.mj_name2id(self.world.model, mujoco.mjtObj.mjOBJ_JOINT, f'{object_id}_joint')

    def _has_free_joint(self, object_id):
        joint = self._joint(object_id)
        return joint >= 0 and self.world.model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE

    def _fixed_pose_key(self, detection):
        """Static objects (bins) are baked into the model: their pose is part of its identity; a
        drawer's is too, but for how far it is out (to the centimetre: perception jitters)."""
        shape = self.library.shape(detection.mesh_id)
        if not shape or not (shape.static or shape.slide):
            return ()
        position = np.asarray(detection.position, float)
        if shape.slide:
            axis = pull_axis(detection.quat)
            return tuple(np.round(np.concatenate([position - axis * np.dot(position, axis), detection.quat]), 2))
        return tuple(np.round(np.concatenate([position, detection.quat]), 3))

    @property
    def model(self):
        """The current MjModel (rebuilt by sync when the object set changes)."""
        return self.world.model

    @property
    def data(self):
        """The base state (read it; change it only through sync)."""
        return self.world.data

    def owner(self, geom):
        """Name of what a geom belongs to: an object id, a robot link, or 'table' / 'floor'."""
        return self._owners[geom]

    @property
    def _owners(self):
        """Per geom of the current model, the name of what it belongs to."""
        if getattr(self, '_owners_model', None) is not self.model:
            model = self.model
            self._owner_names = [
                model.geom(g).name if model.geom_bodyid[g] == 0 else model.body(model.geom_bodyid[g]).name
                for g in range(model.ngeom)
            ]
            self._standing_names = {'table', 'floor'} | {
                name
                for name in self._owner_names
                if name.startswith('panda_') or name in self.world.object_ids and model.body(name).jntnum[0] == 0
            }
            self._owner_list = list(dict.fromkeys(self._owner_names))
            index = {name: i for i, name in enumerate(self._owner_list)}
            self._owner_index = np.array([index[name] for name in self._owner_names], np.int64)
            self._owners_model = model
        return self._owner_names

    def _pairs_of(self, geoms):
        """The sorted owner-name pairs of geom pairs (K, 2) in contact (numpy until the few distinct
        pairs: a rollout reads thousands of contacts)."""
        self._owners  # noqa: B018 (refreshes the per-model index)
        owners = self._owner_index[np.asarray(geoms, np.int64).reshape(-1, 2)]
        codes = np.unique(owners.min(axis=1) * len(self._owner_list) + owners.max(axis=1))
        names = self._owner_list
        return {tuple(sorted((names[a], names[b]))) for a, b in zip(*np.divmod(codes, len(names)))}

    def rollout(self, candidate):
        """Play a candidate on a copy of the base state and report what happened."""
        return self.rollout_batch([candidate])[0]

    def rollout_batch(self, candidates):
        """Play candidates from the base state, in parallel (mujoco.rollout, a thread per core), then
        read what happened from their recorded states. The base state never changes."""
        w, model = self.world, self.model
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        start = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, w.data, start, spec)
        plans = [self._controls(c) for c in candidates]
        threads = min(self.threads, len(candidates))
        datas = [mujoco.MjData(model) for _ in range(threads)]
        states = [None] * len(plans)
        with rollout.Rollout(nthread=threads) as roller:
            for group in length_groups([steps for _, _, steps in plans], threads):
                nstep = max(plans[i][2] for i in group)
                control = np.stack(
                    [np.vstack([c, np.repeat(c[-1:], nstep - len(c), axis=0)]) for c, _, _ in (plans[i] for i in group)]
                )
                played, _ = roller.rollout(model, datas, np.tile(start, (len(group), 1)), control, nstep=nstep)
                for row, i in enumerate(group):
                    states[i] = played[row, : plans[i][2]]
        return [self._read(states[i], released) for i, (_, released, _) in enumerate(plans)]

    def _controls(self, candidate):
        """(per-step actuator controls, step from which a carried object counts as released, steps)."""
        w, dt = self.world, self.model.opt.timestep
        follower = world.JointTrajectoryFollower(w.data.ctrl[:7].copy(), candidate.times, candidate.positions)
        steps = int(np.ceil((follower.duration + candidate.settle) / dt))
        t = np.arange(1, steps + 1) * dt
        controls = np.tile(w.data.ctrl.copy(), (steps, 1))
        controls[:, :7] = np.clip(
            np.column_stack([np.interp(t, follower.times, follower.positions[:, j]) for j in range(7)]),
            w.arm_limits[:, 0],
            w.arm_limits[:, 1],
        )
        released, width = steps, float(w.data.ctrl[7] * 2)
        for time, new_width in sorted(candidate.gripper):
            k = min(steps - 1, int(round(time / dt)))
            new_width = float(np.clip(new_width, 0.0, OPEN_WIDTH))
            controls[k:, 7:9] = (new_width / 2, -new_width / 2)
            if new_width > width + 1e-4:
                released = min(released, k)
            width = new_width
        return controls, released, steps

    def _read(self, states, released):
        """A RolloutResult from the recorded states of one candidate (contacts sampled every control_period)."""
        w, model = self.world, self.model
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        data = mujoco.MjData(model)
        every = max(1, int(round(self.control_period / model.opt.timestep)))
        path_every = max(1, int(round(0.02 / model.opt.timestep)))
        qpos = states[:, 1 : 1 + model.nq]
        q = qpos[:, w.arm_qpos]
        margin = np.minimum(q - w.arm_limits[:, 0], w.arm_limits[:, 1] - q).min(axis=0)
        initial = {oid: w.object_pose(oid) for oid in w.object_ids}
        held = resting = None  # carried objects (after the first squeeze): their new contacts are collisions
        before_release, after_release, path = [], [], []
        n = len(states)
        samples = set(range(every - 1, n, every)) | {n - 1}
        for k in sorted(samples | set(range(0, n, path_every))):
            sample, on_path = k in samples, k % path_every == 0
            mujoco.mj_setState(model, data, states[k], spec)
            mujoco.mj_kinematics(model, data)  # positions and contacts only: the rest of mj_fwdPosition is unused here
            if sample:
                mujoco.mj_collision(model, data)
            if on_path:
                path.append(data.site('panda_grip_site').xpos.copy())
            if not sample:
                continue
            if held is None:
                held = self._between_fingers(data)
                resting = {pair for pair in self._contact_pairs(data) if held & set(pair)}
            (before_release if k < released else after_release).append(data.contact.geom[: data.ncon].copy())
        before_release = self._pairs_of(np.concatenate(before_release or [[]]))
        contacts = before_release | self._pairs_of(np.concatenate(after_release or [[]]))
        collisions = set()
        for a, b in contacts:
            robot = [name for name in (a, b) if name.startswith('panda_')]
            if len(robot) == 1:
                other = b if robot[0] == a else a
                if robot[0] not in FINGER_BODIES or other in ('table', 'floor'):
                    collisions.add((robot[0], other))
            elif not robot and (a, b) in before_release and held & {a, b} and (a, b) not in resting:
                collisions.add((a, b) if a in held else (b, a))
        final = {oid: (data.body(oid).xpos.copy(), data.body(oid).xquat.copy()) for oid in w.object_ids}
        return RolloutResult(
            collisions=sorted(collisions),
            contacts=sorted(contacts),
            displacements={oid: final[oid][0] - initial[oid][0] for oid in w.object_ids},
            rotations={oid: quat_angle(initial[oid][1], final[oid][1]) for oid in w.object_ids},
            final_poses=final,
            joint_margin=margin,
            holding=self._held_object(data, initial, final),
            ee_path=np.array(path),
            duration=float(len(states) * model.opt.timestep),
        )

    def _contact_pairs(self, data):
        """The sorted owner-name pairs in contact in this state."""
        return self._pairs_of(data.contact.geom[: data.ncon])

    def _between_fingers(self, data):
        """Objects touched by both fingers in this state."""
        sides = {}
        for c in data.contact[: data.ncon]:
            a, b = self.owner(c.geom1), self.owner(c.geom2)
            for finger, other in ((a, b), (b, a)):
                if finger in FINGER_BODIES and other in self.world.object_ids:
                    sides.setdefault(other, set()).add(FINGER_SIDES[finger])
        return {oid for oid, s in sides.items() if s == {'left', 'right'}}

    def _held_object(self, data, initial, final):
        """The object both fingers touch at the end and that nothing else supports (carried); what rides
        on it alone (a drawer's or a cup's contents, touching nothing that stands) does not support it."""
        pairs = {pair for pair in self._contact_pairs(data) if not set(pair) & set(FINGER_BODIES)}
        for oid in self._between_fingers(data):
            riding = _riding_on(oid, pairs, self._standing)
            if not {b if a == oid else a for a, b in pairs if oid in (a, b)} - riding:
                return oid
        return ''

    @property
    def _standing(self):
        """What stands on its own in the current model: the table, the floor, static objects, the robot
        (found with the owners, once per model)."""
        self._owners  # noqa: B018 (refreshes the per-model names)
        return self._standing_names

    def render(self, camera, width, height, data=None, depth=True, overlay=None, fast=None):
        """A CameraFrame of data (default: the base state); see SimWorld.render."""
        return self.world.render(camera, width, height, depth=depth, data=data, fast=fast, overlay=overlay)

    def segmentation(self, camera, width, height, data=None):
        """Per-pixel object index in data (default: the base state); see SimWorld.segmentation."""
        return self.world.segmentation(camera, width, height, data)

    def close(self):
        """Release the world's renderers."""
        if self.world is not None:
            self.world.close()


def _riding_on(oid, pairs, standing):
    """The objects in contact (pairs of owner names) with oid, directly or through each other, that reach
    nothing standing (the table, a static object, the robot) other than through oid."""
    neighbours = {}
    for a, b in pairs:
        if oid not in (a, b):
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
    touching = {b if a == oid else a for a, b in pairs if oid in (a, b)}
    riding = set()
    for start in touching - standing:
        group, todo = {start}, [start]
        while todo:
            for other in neighbours.get(todo.pop(), ()):
                if other not in group:
                    group.add(other)
                    todo.append(other)
        if not group & standing:
            riding |= group
    return riding
