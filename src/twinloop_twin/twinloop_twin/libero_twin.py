"""The twin of a LIBERO task (no rclpy): LIBERO's own scene - table, fixtures and object meshes
from the task's compiled MJCF - around twinloop's Panda (the same robosuite model LIBERO uses,
with twinloop's position servos), shifted into the robot-base frame. SimTwin's rollouts, renders
and the planner's IK then work on it unchanged.

Object state comes from the LIBERO simulator ("privileged perception"): LIBERO's objects are not
in twinloop's mesh library, so the pose estimator does not see them.
"""

import mujoco
import numpy as np

from twinloop_core.gripper import OPEN_WIDTH
from twinloop_twin import scene, world
from twinloop_twin.twin import SimTwin

HIDDEN_GROUP = 3  # LIBERO's collision geoms: they collide, renders show the visual meshes


def libero_spec(xml, base_position):
    """MjSpec of a LIBERO scene (MJCF text) with its robot replaced by scene.add_robot's Panda at
    the origin. Object bodies lose their '_main' suffix, free joints are named '<object>_joint'."""
    spec = mujoco.MjSpec.from_string(xml)
    for element in [*spec.actuators, *spec.sensors, *spec.excludes, *spec.keys]:
        spec.delete(element)
    spec.delete(spec.body('robot0_base'))
    offset = -np.asarray(base_position, float)
    top = spec.worldbody
    for element in [*top.bodies, *top.geoms, *top.cameras, *top.lights, *top.sites]:
        element.pos = np.asarray(element.pos) + offset
    for geom in spec.geoms:
        geom.group = scene.GROUP_SCENE if geom.group == 1 else HIDDEN_GROUP
    spec.compiler.inertiagrouprange = (HIDDEN_GROUP, HIDDEN_GROUP)  # LIBERO's masses come from its collision geoms
    for body in top.bodies:
        if body.name.endswith('_main'):
            body.name = body.name[: -len('_main')]
    for joint in spec.joints:
        if joint.type == mujoco.mjtJoint.mjJNT_FREE and joint.name.endswith('_joint0'):
            joint.name = joint.name[: -len('0')]
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.visual.global_.offwidth = max(spec.visual.global_.offwidth, 1280)
    spec.visual.global_.offheight = max(spec.visual.global_.offheight, 960)
    scene.add_robot(spec)
    return spec


def bottom_centre(model, data, body_id):
    """(bottom-centre offset in the body frame, extents) of the colliding geoms' bounding box of a
    body and the bodies below it (a fixture such as LIBERO's stove keeps its geoms in child
    bodies), at data's forward kinematics: twinloop's object convention puts the frame at the
    centre of the bottom face."""
    subtree = {body_id}
    for b in range(body_id + 1, model.nbody):  # MuJoCo numbers a body after its parent
        if model.body_parentid[b] in subtree:
            subtree.add(b)
    frame_p, frame_r = data.xpos[body_id], data.xmat[body_id].reshape(3, 3)
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    corners = []
    for g in np.where(np.isin(model.geom_bodyid, list(subtree)))[0]:
        if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
            continue
        centre, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        world = data.geom_xpos[g] + (centre + signs * half) @ data.geom_xmat[g].reshape(3, 3).T
        corners.append((world - frame_p) @ frame_r)
    if not corners:
        return np.zeros(3), np.zeros(3)
    corners = np.vstack(corners)
    low, high = corners.min(axis=0), corners.max(axis=0)
    return np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]]), high - low


class LiberoTwin(SimTwin):
    """SimTwin on a fixed LIBERO scene: sync places its objects (ids as LiberoWorld names them)
    and sets its fixtures' joints (drawers, knobs) instead of rebuilding a model."""

    def __init__(self, xml, base_position, object_ids, fast_render=True, control_period=0.006, threads=None):
        super().__init__(
            library=None, cameras=[], fast_render=fast_render, control_period=control_period, threads=threads
        )
        self.world = world.SimWorld(
            scene.SceneConfig([], []), fast_render, spec=libero_spec(xml, base_position), object_ids=object_ids
        )
        mujoco.mj_forward(self.model, self.data)
        boxes = {oid: bottom_centre(self.model, self.data, self.model.body(oid).id) for oid in object_ids}
        self.offsets = {oid: box[0] for oid, box in boxes.items()}
        self.extents = {oid: box[1] for oid, box in boxes.items()}

    def bottom_centre_position(self, object_id, position, quat):
        """An object's body pose -> the bottom-centre position of twinloop's object convention."""
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, np.asarray(quat, float))
        return np.asarray(position, float) + rotation.reshape(3, 3) @ self.offsets[object_id]

    def planner_objects(self, objects):
        """{id: (bottom-centre position, quat wxyz, extents)} of LiberoWorld.objects(), as the planner sees objects."""
        return {oid: (self.bottom_centre_position(oid, p, q), q, self.extents[oid]) for oid, _, p, q in objects}

    def _prepare(self, detections):
        unknown = sorted({d.id for d in detections} - set(self.world.object_ids))
        if unknown:
            raise KeyError(f'not in this LIBERO scene: {unknown}; it has {self.world.object_ids}')

    def sync(self, detections, arm_positions, gripper_width=OPEN_WIDTH, finger_positions=None):
        """As SimTwin.sync; fixtures (no free joint, placed anew by each LIBERO reset) are moved in the model."""
        model = self.model
        for d in detections:
            if not self._has_free_joint(d.id):
                model.body_pos[model.body(d.id).id] = d.position
                model.body_quat[model.body(d.id).id] = d.quat
        super().sync(detections, arm_positions, gripper_width, finger_positions)

    def set_joints(self, positions):
        """Scene joints by name (drawer slides, stove knob) in the base state."""
        for name, value in positions.items():
            adr = self.model.joint(name).qposadr[0]
            self.data.qpos[adr] = value
        mujoco.mj_forward(self.model, self.data)
