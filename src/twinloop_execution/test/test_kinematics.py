"""Panda IK (mink) on the scene model: reachable targets are reached in simulation, unreachable ones are reported."""

import os

import numpy as np
import pytest

from twinloop_core.geometry import HOME_GRIP, quat_multiply, z_rotation
from twinloop_execution.kinematics import EE_SITE, PandaIk
from twinloop_twin.scene import ARM_JOINTS


@pytest.mark.parametrize('target', [(0.5, 0.12, 0.15), (0.4, -0.25, 0.08), (0.65, 0.2, 0.3)])
def test_reachable_target_is_reached_in_simulation(sim, target):
    result = PandaIk(sim.model).solve(sim.data.qpos.copy(), target)
    assert result.converged
    sim.follow_trajectory([2.0], [result.positions])
    sim.step(1250)
    assert np.linalg.norm(sim.data.site(EE_SITE).xpos - target) < 0.005


def test_unreachable_target_is_not_converged(sim):
    result = PandaIk(sim.model).solve(sim.data.qpos.copy(), (1.6, 0.0, 0.2))
    assert not result.converged and result.position_error > 0.3


def test_answers_stay_inside_the_joint_limits(sim):
    """Hand yaws up to and past the wrist's reach: every answer lies inside the model's joint ranges, never a
    hair past one (the safety gate refuses 2.8974 of 2.8973 rad)."""
    ik, low, high = PandaIk(sim.model), *np.array([sim.model.joint(j).range for j in ARM_JOINTS]).T
    at_limit = 0
    for yaw in np.linspace(-np.pi, np.pi, 9):
        result = ik.solve(sim.data.qpos.copy(), (0.5, 0.1, 0.15), quat_multiply(z_rotation(yaw), HOME_GRIP))
        assert np.all(result.positions >= low) and np.all(result.positions <= high), f'hand yaw {yaw:.2f}'
        at_limit += bool(
            np.any(np.isclose(result.positions, low, atol=1e-3) | np.isclose(result.positions, high, atol=1e-3))
        )
    assert at_limit, 'some yaws drive a joint to its limit'


@pytest.mark.parametrize(
    'grip, width, carried',
    [
        ((0.5, 0.01, 0.025), 0.06, True),  # one finger's inner face on it, the gripper closed on something
        ((0.5, 0.01, 0.025), 0.0, False),  # shut: closed on nothing
        ((0.5, -0.05, 0.025), 0.06, False),  # against a finger's outside, 2.5 cm from the grip point
        ((0.54, 0.0, 0.025), 0.048, True),  # closed around the grip point, the twin's cube 1.5 cm off (no face on it)
        ((0.54, 0.0, 0.025), 0.005, False),  # the same, closed on something too thin to be this cube
    ],
)
def test_what_fingers_closed_on_something_carry(grip, width, carried):
    """The safety gate carries a gripped object with the hand. One finger's inner face on a cube (the twin's
    cube a centimetre off the grip) carries it when the gripper stopped on something (width between shut and
    open), not when it is shut (closed on nothing). The fingers close along y here: a cube against a finger's
    outside, away from the grip point, is not held. A gripper closed wide around the grip point holds the cube
    around it even where the perceived cube touches neither finger (the hand hides it from the cameras)."""
    from twinloop_execution.kinematics import ArmKinematics
    from twinloop_twin import scene
    from twinloop_twin.twin import Detection, MeshLibrary, SimTwin

    config = scene.SceneConfig.from_yaml(os.path.join(os.environ['TWINLOOP_ROOT'], 'config', 'scenes', 'tabletop.yaml'))
    cube = next(o for o in config.objects if o.id == 'red_cube')  # 5 cm
    twin = SimTwin(MeshLibrary.from_scene(config), [])
    try:
        twin.sync([Detection('red_cube', cube.mesh_id, (0.5, 0.0, 0.0), (1, 0, 0, 0))], scene.HOME, width)
        beside = PandaIk(twin.model).solve(twin.data.qpos.copy(), grip, HOME_GRIP)
        assert beside.converged
        kinematics = ArmKinematics(twin.model, twin.data)
        assert ('red_cube' in kinematics._held_objects(beside.positions)) == carried
    finally:
        twin.close()


def test_a_chunk_starting_ahead_of_the_arm_carries_the_cube_the_arm_holds_now():
    """A streamed chunk starts where the arm will be (~0.4 s ahead), the twin's cube is where the arm holds it
    now. Held is judged at the twin's arm: the chunk (up, then down past here) carries the cube along instead
    of bringing the hand down onto where it is now."""
    from twinloop_execution.kinematics import ArmKinematics
    from twinloop_twin import scene
    from twinloop_twin.twin import Detection, MeshLibrary, SimTwin

    config = scene.SceneConfig.from_yaml(os.path.join(os.environ['TWINLOOP_ROOT'], 'config', 'scenes', 'tabletop.yaml'))
    cube = next(o for o in config.objects if o.id == 'red_cube')  # 5 cm
    twin = SimTwin(MeshLibrary.from_scene(config), [])
    try:
        held = [Detection('red_cube', cube.mesh_id, (0.5, 0.0, 0.175), (1, 0, 0, 0))]
        twin.sync(held, scene.HOME, 0.048)
        ik = PandaIk(twin.model)
        path = [ik.solve(twin.data.qpos.copy(), (0.5, 0.0, z), HOME_GRIP) for z in (0.2, 0.28, 0.2, 0.14)]
        assert all(p.converged for p in path)
        now, chunk = path[0].positions, np.array([p.positions for p in path[1:]])
        twin.sync(held, now, 0.048)
        assert ArmKinematics(twin.model, twin.data).collisions(chunk) == []
        stale = ArmKinematics(twin.model)  # no synced arm: held judged at the chunk's start, where nothing is
        stale.data.qpos[:] = twin.data.qpos
        assert any('red_cube' in pair for pair in stale.collisions(chunk))
    finally:
        twin.close()


def test_a_held_cube_may_be_set_down_but_not_driven_into_the_table():
    """Placing: the twin's held cube meets the table (or the bowl) it is put on. Pressing it in by the perceived
    poses' error is setting it down; through ROS a learned policy's place ended refused for red_cube|bowl with the
    cube 0.9 cm from its goal. Driving it a centimetre and a half in is a collision."""
    from twinloop_execution.kinematics import SET_DOWN_DEPTH, ArmKinematics
    from twinloop_twin import scene
    from twinloop_twin.twin import Detection, MeshLibrary, SimTwin

    config = scene.SceneConfig.from_yaml(os.path.join(os.environ['TWINLOOP_ROOT'], 'config', 'scenes', 'tabletop.yaml'))
    cube = next(o for o in config.objects if o.id == 'red_cube')  # 5 cm, held at its middle
    twin = SimTwin(MeshLibrary.from_scene(config), [])
    try:
        held = [Detection('red_cube', cube.mesh_id, (0.5, 0.0, 0.075), (1, 0, 0, 0))]
        twin.sync(held, scene.HOME, 0.048)
        ik = PandaIk(twin.model)
        up, on, pressed, driven = (
            ik.solve(twin.data.qpos.copy(), (0.5, 0.0, z), HOME_GRIP).positions for z in (0.1, 0.025, 0.022, 0.01)
        )
        twin.sync(held, up, 0.048)
        kinematics = ArmKinematics(twin.model, twin.data)
        assert 'red_cube' in kinematics._held_objects(up)
        assert kinematics.collisions(np.array([up, on, pressed])) == []  # 3 mm in
        assert 'red_cube|table' in kinematics.collisions(np.array([up, on, driven]))  # 15 mm in
        assert kinematics.collisions(np.array([up, on, pressed])) == []  # a check leaves the held cube where it was
        assert 0.003 < SET_DOWN_DEPTH < 0.015
    finally:
        twin.close()


@pytest.mark.parametrize('width', [0.0, 0.0035])
def test_shut_fingers_pressing_on_one_face_hold_nothing(width):
    """A push: both shut fingers press on the face of a box. The gate must not carry the box with the
    hand (its contact with what it stands on would read as a held object's collision). Shut fingers
    pushing part a little: world_sim measured 2.8-3.5 mm, wider than THIN_WALL (closed on something), in
    IKER's book push, whose every chunk was then refused for red_book|green_book."""
    from twinloop_execution.kinematics import ArmKinematics
    from twinloop_twin import scene
    from twinloop_twin.twin import Detection, MeshLibrary, SimTwin

    root = os.environ['TWINLOOP_ROOT']
    config = scene.SceneConfig.from_yaml(os.path.join(root, 'config', 'scenes', 'iker_three_stage.yaml'))
    box = next(o for o in config.objects if o.id == 'shoe_box')  # 20 x 30 x 10 cm
    twin = SimTwin(MeshLibrary.from_scene(config), [])
    try:
        twin.sync([Detection('shoe_box', box.mesh_id, (0.6, 0.0, 0.0), (1, 0, 0, 0))], scene.HOME, width)
        pressing = PandaIk(twin.model).solve(twin.data.qpos.copy(), (0.497, 0.0, 0.05), HOME_GRIP)
        assert pressing.converged
        kinematics = ArmKinematics(twin.model, twin.data)
        touching = kinematics.collisions(pressing.positions[None])
        assert 'shoe_box' not in kinematics._held_objects(pressing.positions), touching
        assert not [pair for pair in touching if pair.startswith('shoe_box|')]
    finally:
        twin.close()


def test_a_hand_that_starts_on_an_object_may_move_off_it_but_not_press_into_it():
    """Through ROS a policy let go of the red cube in the bowl with the perceived cube against the palm;
    every chunk after, the hand moving up and away, was refused for that contact. A contact the
    motion starts in is where the arm is; pressing more than START_CONTACT_SLACK deeper is a collision."""
    from twinloop_execution.kinematics import START_CONTACT_SLACK, ArmKinematics
    from twinloop_twin import scene
    from twinloop_twin.twin import Detection, MeshLibrary, SimTwin

    config = scene.SceneConfig.from_yaml(os.path.join(os.environ['TWINLOOP_ROOT'], 'config', 'scenes', 'tabletop.yaml'))
    cube = next(o for o in config.objects if o.id == 'red_cube')  # 5 cm: the palm reaches its top below grip 0.020
    twin = SimTwin(MeshLibrary.from_scene(config), [])
    try:
        twin.sync([Detection('red_cube', cube.mesh_id, (0.5, 0.0, 0.0), (1, 0, 0, 0))], scene.HOME, 0.08)
        ik = PandaIk(twin.model)
        on, up, deeper = (
            ik.solve(twin.data.qpos.copy(), (0.5, 0.0, z), HOME_GRIP).positions for z in (0.018, 0.06, 0.01)
        )
        kinematics = ArmKinematics(twin.model, twin.data)
        palm = 'panda_right_gripper|red_cube'
        assert kinematics.collisions(np.array([on, up])) == []  # moving off it
        assert palm in kinematics.collisions(np.array([on, deeper]))  # 8 mm further down: > START_CONTACT_SLACK
        assert palm in kinematics.collisions(np.array([up, on]))  # coming down onto it
        assert START_CONTACT_SLACK < 0.008
    finally:
        twin.close()


def test_fingertips_a_push_left_on_the_table_may_lift_off_it():
    """CI, IKER's disturbance test: a push braked with the fingertips on the table in the twin, and every
    motion after it - the way up included - was refused for panda_leftfinger|table, six iterations."""
    from twinloop_execution.kinematics import ArmKinematics
    from twinloop_twin import scene
    from twinloop_twin.twin import MeshLibrary, SimTwin

    config = scene.SceneConfig.from_yaml(os.path.join(os.environ['TWINLOOP_ROOT'], 'config', 'scenes', 'tabletop.yaml'))
    twin = SimTwin(MeshLibrary.from_scene(config), [])
    try:
        twin.sync([], scene.HOME, 0.0)
        ik = PandaIk(twin.model)
        on, up, down = (
            ik.solve(twin.data.qpos.copy(), (0.4, 0.3, z), HOME_GRIP).positions for z in (0.007, 0.05, -0.002)
        )
        kinematics = ArmKinematics(twin.model, twin.data)
        assert any('|table' in c for c in kinematics.collisions(np.array([up, on])))  # coming down onto it
        assert kinematics.collisions(np.array([on, up])) == []  # lifting off
        assert any('|table' in c for c in kinematics.collisions(np.array([on, down])))  # 9 mm into it
    finally:
        twin.close()
