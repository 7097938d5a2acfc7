"""Pose estimation on rendered, noisy multi-view RGB-D of random simulated scenes: every object
found with the right identity and a pose close to the truth (modulo symmetry); tracking follows a
moved object and finds a lost one again."""

import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import mujoco
import numpy as np
import pytest

from twinloop_perception import pose_estimation as pe
from twinloop_twin import cameras, scene, world
from twinloop_core.gripper import closed_on_something

SCENES = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3])) / 'config' / 'scenes'


def frames(w, rng, std=0.001):
    out = []
    for c in w.config.cameras:
        if c.mount != 'world':
            continue
        f = w.render(c.name, c.width, c.height)
        out.append(
            pe.Frame(f.rgb, cameras.realsense_noise(f.depth, rng, std), f.intrinsics.matrix, f.position, f.rotation)
        )
    return out


@pytest.fixture(scope='module')
def robot_filter():
    model = scene.build_spec(scene.SceneConfig([], [])).compile()
    return pe.RobotFilter(model, scene.ARM_JOINTS, scene.FINGER_JOINTS, pe.EstimatorConfig().robot_margin)


@pytest.mark.parametrize('name, seed', [('tabletop', 11), ('clutter', 12), ('sorting', 13)])
def test_detects_every_object_close_to_the_truth(name, seed, robot_filter):
    config = scene.randomize_layout(scene.SceneConfig.from_yaml(SCENES / f'{name}.yaml'), np.random.default_rng(seed))
    w = world.SimWorld(config)
    try:
        models = pe.build_models(config.objects)
        found = pe.PoseEstimator(models, robot_filter=robot_filter).detect(
            frames(w, np.random.default_rng(seed)), w.arm_positions()
        )
        assert sorted(found) == sorted(w.object_ids)
        for model in models:
            position, quat = w.object_pose(model.id)
            estimate = found[model.id]
            assert np.linalg.norm(estimate.position - position) < (0.02 if model.static else 0.015), model.id
            assert np.degrees(pe.rotation_error(model, estimate.quat, quat)) < 8.0, model.id
            assert estimate.confidence > 0.5
    finally:
        w.close()


@pytest.mark.parametrize('layout_seed, noise_seed', [(1001, 1), (1005, 5), (1008, 8)])
def test_a_box_standing_on_a_rack_is_found_apart_from_it(layout_seed, noise_seed, robot_filter):
    # Both form one cluster; registered on all of it, the rack was turned 90 deg and pulled 15-17 cm and the
    # box was missed in these layouts. Each object is now registered on the points of its colour.
    base = scene.SceneConfig.from_yaml(SCENES / 'iker_three_stage.yaml')
    w = world.SimWorld(scene.randomize_layout(base, np.random.default_rng(layout_seed)))
    try:
        w.step(int(1.0 / w.model.opt.timestep))
        models = [m for m in pe.build_models(w.config.objects) if m.id in ('shoe_box', 'rack')]
        found = pe.PoseEstimator(pe.build_models(w.config.objects), robot_filter=robot_filter).detect(
            frames(w, np.random.default_rng(noise_seed)), w.arm_positions()
        )
        for model in models:
            position, quat = w.object_pose(model.id)
            assert model.id in found
            # the plank's length is weakly held once the box hides its middle: the rack may slide along it
            assert np.linalg.norm(found[model.id].position - position) < (0.04 if model.static else 0.01), model.id
            assert np.degrees(pe.rotation_error(model, found[model.id].quat, quat)) < 3.0, model.id
    finally:
        w.close()


def test_a_bowl_seen_from_one_side_is_centred(robot_filter):
    # A noise draw where ICP from the visible points' mean settled the bowl 9 mm off (a CI failure of
    # test_pose_estimation_node); the box-middle start finds its middle.
    config = scene.SceneConfig.from_yaml(SCENES / 'tabletop.yaml')
    w = world.SimWorld(config)
    try:
        w.step(int(1.0 / w.model.opt.timestep))
        found = pe.PoseEstimator(pe.build_models(config.objects), robot_filter=robot_filter).detect(
            frames(w, np.random.default_rng(10)), w.arm_positions()
        )
        assert np.linalg.norm(found['bowl'].position - w.object_pose('bowl')[0]) < 0.003
    finally:
        w.close()


def test_tracking_follows_a_moved_object_and_recovers_a_lost_one(robot_filter):
    config = scene.SceneConfig.from_yaml(SCENES / 'tabletop.yaml')
    w = world.SimWorld(config)
    rng = np.random.default_rng(0)
    try:
        estimator = pe.PoseEstimator(pe.build_models(config.objects), robot_filter=robot_filter)
        estimator.detect(frames(w, rng), w.arm_positions())
        adr = w.model.joint('red_cube_joint').qposadr[0]
        w.data.qpos[adr : adr + 2] += (0.02, -0.015)
        mujoco.mj_forward(w.model, w.data)
        tracked = estimator.track(frames(w, rng), w.arm_positions())
        assert tracked['red_cube'].tracked
        assert np.linalg.norm(tracked['red_cube'].position - w.object_pose('red_cube')[0]) < 0.01
        w.data.qpos[adr : adr + 2] = (0.62, 0.25)  # far from where tracking looks
        mujoco.mj_forward(w.model, w.data)
        recovered = estimator.track(frames(w, rng), w.arm_positions())
        assert not recovered['red_cube'].tracked  # found again by a global search
        assert np.linalg.norm(recovered['red_cube'].position - w.object_pose('red_cube')[0]) < 0.01
    finally:
        w.close()


@pytest.mark.parametrize('resting_fitness, settles', [(pe.EstimatorConfig().resting_fitness, True), (0.0, False)])
def test_a_dropped_box_is_tracked_onto_the_table_not_one_height_up(robot_filter, resting_fitness, settles):
    """A box last seen 3 cm up (it fell from the fingers) has its top face where its bottom was
    expected: tracking alone fits the bottom face to the top, one height too high (the reference
    case without resting hypotheses shows it); resting hypotheses put it back on the table."""
    with arm_scene('stacking', 2, robot_filter, pe.EstimatorConfig(resting_fitness=resting_fitness)) as (
        w,
        _,
        estimator,
        rng,
        fingers,
    ):
        truth = np.asarray(w.object_pose('sponge')[0])
        estimator.previous['sponge'] = replace(estimator.previous['sponge'], position=truth + (0, 0, 0.03))
        found = estimator.track(frames(w, rng), w.arm_positions(), fingers())['sponge']
        assert (np.linalg.norm(found.position - truth) < 0.005) == settles, found.position - truth


def test_rotation_error_is_modulo_symmetry():
    config = scene.SceneConfig.from_yaml(SCENES / 'tabletop.yaml')
    models = {m.id: m for m in pe.build_models(config.objects)}
    quarter = (np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4))  # 90 degrees about z
    assert pe.rotation_error(models['red_cube'], quarter, (1, 0, 0, 0)) < 1e-6
    assert np.degrees(pe.rotation_error(models['green_block'], quarter, (1, 0, 0, 0))) == pytest.approx(90.0, abs=1e-3)
    assert pe.rotation_error(models['bowl'], quarter, (1, 0, 0, 0)) < 1e-6


def test_tracking_follows_an_object_carried_by_the_gripper(robot_filter):
    """The gripper's motion (from the joints) predicts where a held object went: it stays tracked."""
    from twinloop_core.geometry import grasp_orientation

    with arm_scene('tabletop', 1, robot_filter) as (w, arm, estimator, rng, fingers):
        position, quat = w.object_pose('blue_cube')
        grip = grasp_orientation(quat, (0.04, 0.04))

        def move_to(offset, close=False):
            move_grip(w, arm, np.add(position, offset), grip, 0.0 if close else None)
            return estimator.track(frames(w, rng), w.arm_positions(), fingers())

        move_to((0, 0, 0.12))
        move_to((0, 0, 0.02), close=True)
        move_to((0, 0, 0.15))
        for offset in ((0.15, 0.15, 0.15), (0.0, 0.3, 0.15)):  # 21 and 15 cm hops, farther than tracking looks
            found = move_to(offset)
            assert found['blue_cube'].tracked
            assert np.linalg.norm(found['blue_cube'].position - w.object_pose('blue_cube')[0]) < 0.01
        hidden = frames_without(w, rng, 'blue_cube')  # the hand hides it: no points at all
        found = estimator.track(hidden, w.arm_positions(), fingers())
        assert 'blue_cube' not in found and 'blue_cube' in estimator.predicted
        move_to((0.1, 0.1, 0.15))
        predicted = estimator.track(frames_without(w, rng, 'blue_cube'), w.arm_positions(), fingers())
        assert 'blue_cube' not in predicted and estimator.predicted['blue_cube'].confidence == 0.0
        assert np.linalg.norm(estimator.predicted['blue_cube'].position - w.object_pose('blue_cube')[0]) < 0.01
        # a weak global match elsewhere does not take a held object out of the closed fingers (through
        # ROS a sponge carried over its target was "found" 15 cm away at confidence 0.49); a sure one does
        elsewhere = replace(estimator.predicted['blue_cube'], position=np.array([0.37, -0.3, 0.0]), tracked=False)
        detect = estimator.detect
        for confidence, moved in ((0.5, False), (0.9, True)):
            estimator.detect = lambda *a, c=confidence: {**detect(*a), 'blue_cube': replace(elsewhere, confidence=c)}
            found = estimator.track(frames_without(w, rng, 'blue_cube'), w.arm_positions(), fingers())
            assert ('blue_cube' in found) == moved
            assert (
                np.linalg.norm(estimator.previous['blue_cube'].position - w.object_pose('blue_cube')[0]) < 0.01
            ) != moved


@pytest.mark.parametrize('width, carried', [(0.006, False), (0.038, True)])
def test_fingers_closed_narrower_than_a_cube_are_not_around_it(robot_filter, width, carried):
    """Through ROS a learned policy pinched 6-7 mm of a 4 cm cube's edge and lifted; the cube stayed on the
    table, and tracking carried it up with the hand (closed on something, the cube within reach of the grip).
    The fingers report the width here (the simulated hand stays open): 6 mm is not around the cube, 38 mm is;
    the lifted hand hides the cube from the cameras, so only the grip's motion could move it."""
    from twinloop_core.geometry import grasp_orientation

    with arm_scene('tabletop', 1, robot_filter) as (w, arm, estimator, rng, fingers):
        position, quat = w.object_pose('blue_cube')
        grip = grasp_orientation(quat, (0.04, 0.04))
        for offset, reported in (((0, 0, 0.12), fingers()), ((0, 0, 0.03), (width / 2, width / 2))):
            move_grip(w, arm, np.add(position, offset), grip)
            estimator.track(frames(w, rng), w.arm_positions(), reported)
        move_grip(w, arm, np.add(position, (0, 0, 0.15)), grip)
        estimator.track(frames_without(w, rng, 'blue_cube'), w.arm_positions(), (width / 2, width / 2))
        assert ('blue_cube' in estimator.predicted) == carried
        if carried:
            assert estimator.predicted['blue_cube'].position[2] > position[2] + 0.1  # went up with the hand


@contextmanager
def arm_scene(name, seed, robot_filter, config=pe.EstimatorConfig()):
    """A simulated scene with its arm, an estimator that has detected it, the noise source and the fingers' state."""
    from twinloop_execution.kinematics import Arm

    scene_config = scene.SceneConfig.from_yaml(SCENES / f'{name}.yaml')
    w = world.SimWorld(scene_config)
    rng = np.random.default_rng(seed)
    fingers = lambda: (w.gripper_width() / 2, w.gripper_width() / 2)  # noqa: E731
    try:
        estimator = pe.PoseEstimator(pe.build_models(scene_config.objects), config, robot_filter=robot_filter)
        estimator.detect(frames(w, rng), w.arm_positions(), fingers())
        yield w, Arm.panda(), estimator, rng, fingers
    finally:
        w.close()


def start_path(w, arm, target, grip):
    """Start a timed path of the simulated arm's grip site to target (IK); returns the path."""
    from twinloop_execution import trajectory

    q = arm.ik.solve(arm.q_full(w.arm_positions()), target, grip).positions
    path = trajectory.parametrize(
        np.vstack([w.arm_positions(), q]), np.full(7, 2.0), np.full(7, 5.0), np.full(7, 500.0), 0.5
    )
    w.follow_trajectory(path.times, path.positions)
    return path


def move_grip(w, arm, target, grip, gripper=None):
    """Move the grip site to target and wait until there, then set the fingers' width if given."""
    path = start_path(w, arm, target, grip)
    w.step(int((path.duration + 0.5) / w.model.opt.timestep))
    if gripper is not None:
        w.set_gripper(gripper)
        w.step(400)


def test_a_sponge_stacked_on_a_block_is_tracked_and_the_block_stays(robot_filter):
    """Carry the sponge over the red block, put it down on it, open, back off. Through ROS the
    block (within reach of the grip too) rode along with the hand and was then fitted to the
    sponge's points one height up; only the object in the fingers is carried, a fit to another
    object's colour counts as lost, and fingers that are opening carry nothing."""
    from twinloop_core.geometry import grasp_orientation

    with arm_scene('stacking', 3, robot_filter) as (w, arm, estimator, rng, fingers):
        sponge, quat = w.object_pose('sponge')
        on_block = np.asarray(w.object_pose('red_block')[0]) + (0, 0, 0.03 + 0.015)
        grip = grasp_orientation(quat, (0.09, 0.06))
        for target, gripper in (
            (sponge + (0, 0, 0.1), None),
            (sponge + (0, 0, 0.015), 0.0),
            (sponge + (0, 0, 0.12), None),
            (on_block + (0, 0, 0.03), None),
            (on_block + (0, 0, 0.015), None),
            ('open and back off', None),
            (on_block + (0, 0, 0.12), None),
        ):
            # open and back off: a frame while the fingers open (still touching) and the hand rises
            if isinstance(target, str):
                w.set_gripper(0.08)
                start_path(w, arm, on_block + (0, 0, 0.1), grip)
                w.step(int(0.1 / w.model.opt.timestep))
                assert closed_on_something(w.gripper_width())
            else:
                move_grip(w, arm, target, grip, gripper)
            estimator.track(frames(w, rng), w.arm_positions(), fingers())
            assert np.linalg.norm(estimator.previous['red_block'].position - w.object_pose('red_block')[0]) < 0.01, (
                target
            )
            assert np.linalg.norm(estimator.previous['sponge'].position - w.object_pose('sponge')[0]) < 0.01, target
        assert w.object_pose('sponge')[0][2] > 0.025  # it is on the block


def frames_without(w, rng, object_id):
    """frames() with no depth where object_id is seen (as if the hand hid it)."""
    out = frames(w, rng)
    cams = [c for c in w.config.cameras if c.mount == 'world']
    for frame, c in zip(out, cams):
        frame.depth[w.segmentation(c.name, c.width, c.height) == w.object_ids.index(object_id)] = 0.0
    return out


def test_joint_history_gives_the_joints_at_the_frames_capture_time():
    history = pe.JointHistory(seconds=1.0)
    assert history.at(0.0) is None
    history.add(10.00, np.zeros(7), (0.04, 0.04))
    history.add(10.02, np.ones(7), (0.02, 0.02))
    arm, fingers = history.at(10.005)
    assert np.allclose(arm, 0.25) and np.allclose(fingers, 0.035)
    assert np.allclose(history.at(10.04)[0], 1.0)  # just after the newest: the newest (within tolerance)
    assert history.at(10.20) is None  # frames newer than any joint state: wait for it
    history.add(11.50, np.full(7, 2.0), (0.0, 0.0))
    assert history.at(10.01) is None  # older than the kept second
    history.add(3.0, np.full(7, 3.0), (0.04, 0.04))  # time went back (a restarted simulation)
    assert np.allclose(history.at(3.0)[0], 3.0) and len(history.samples) == 1
