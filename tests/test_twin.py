"""The sim twin rebuilt from ground-truth poses: it looks like the world, and rollouts report
collisions, grasps and displacements without touching its base state."""

import os

import numpy as np
import pytest

from twinloop_execution.kinematics import PandaIk
from twinloop_core import gripper
from twinloop_twin import scene, world
import itertools

from twinloop_twin.twin import Candidate, Detection, MeshLibrary, SimTwin, length_groups

SCENE = os.path.join(os.environ['TWINLOOP_ROOT'], 'config', 'scenes', 'tabletop.yaml')


@pytest.fixture(scope='module')
def sim_world():
    w = world.SimWorld(scene.SceneConfig.from_yaml(SCENE))
    yield w
    w.close()


@pytest.fixture(scope='module')
def twin(sim_world):
    config = sim_world.config
    t = SimTwin(MeshLibrary.from_scene(config), config.cameras)
    t.sync(_ground_truth(sim_world), sim_world.arm_positions(), sim_world.gripper_width())
    yield t
    t.close()


def _ground_truth(w):
    return [Detection(o.id, o.mesh_id, *w.object_pose(o.id), label=o.label) for o in w.config.objects]


@pytest.mark.parametrize('camera', ['front', 'left', 'wrist'])
def test_twin_segmentation_matches_world(sim_world, twin, camera):
    cfg = next(c for c in sim_world.config.cameras if c.name == camera)
    truth = sim_world.segmentation(camera, cfg.width, cfg.height)
    mine = twin.segmentation(camera, cfg.width, cfg.height)
    checked = 0
    for index, oid in enumerate(sim_world.object_ids):
        a, b = truth == index, mine == twin.world.object_ids.index(oid)
        if a.sum() < 50:
            continue
        iou = (a & b).sum() / (a | b).sum()
        assert iou >= 0.9, f'{oid} in {camera}: IoU {iou:.3f}'
        checked += 1
    assert checked >= 2


def _base_state(t):
    return t.data.qpos.copy(), t.data.qvel.copy(), t.data.ctrl.copy(), t.data.time


def _plan(t, targets):
    ik, q = PandaIk(t.model), t.data.qpos.copy()
    out = []
    for target in targets:
        result = ik.solve(q, target)
        assert result.converged, target
        out.append(result.positions)
        q[ik.arm_qpos] = result.positions
    return out


def test_rollout_into_table_reports_table_collision(twin):
    before = _base_state(twin)
    into_table = _plan(twin, [(0.35, 0.0, 0.2), (0.35, 0.0, -0.04)])
    result = twin.rollout(Candidate(times=[1.0, 2.0], positions=into_table))
    assert any(other == 'table' for _, other in result.collisions), result.collisions
    for a, b in zip(before, _base_state(twin)):
        np.testing.assert_array_equal(a, b)


def test_rollout_grasp_and_lift_reports_holding(twin):
    before = _base_state(twin)
    cube, _ = twin.world.object_pose('red_cube')
    waypoints = _plan(twin, [cube + (0, 0, 0.15), cube + (0, 0, 0.025), cube + (0, 0, 0.2)])
    result = twin.rollout(Candidate(times=[1.5, 2.5, 4.5], positions=waypoints, gripper=[(0.0, 0.08), (2.6, 0.0)]))
    assert result.holding == 'red_cube', (result.holding, result.contacts)
    assert result.displacements['red_cube'][2] > 0.1
    assert result.moved() == ['red_cube']
    assert not [c for c in result.collisions if c[1] == 'table']
    assert result.ee_path.shape[1] == 3 and result.ee_path[-1][2] > 0.15
    for a, b in zip(before, _base_state(twin)):
        np.testing.assert_array_equal(a, b)


def test_a_batch_of_rollouts_of_different_lengths_reads_as_each_played_alone(twin):
    """Rollouts are played in groups of similar length, each padded to its longest: padding and grouping
    change nothing a rollout reports."""
    cube, _ = twin.world.object_pose('red_cube')
    waypoints = _plan(twin, [cube + (0, 0, 0.15), cube + (0, 0, 0.025), cube + (0, 0, 0.2)])
    candidates = [
        Candidate(times=[1.5, 2.5, 4.5], positions=waypoints, gripper=[(0.0, 0.08), (2.6, 0.0)]),
        Candidate(times=[0.6], positions=waypoints[:1]),
        Candidate(times=[1.0, 2.0], positions=_plan(twin, [(0.35, 0.0, 0.2), (0.35, 0.0, -0.04)])),
        Candidate(times=[0.8, 1.4], positions=waypoints[:2]),
    ]
    batch = twin.rollout_batch(candidates)
    assert len({round(r.duration, 3) for r in batch}) == len(candidates)
    for together, candidate in zip(batch, candidates):
        alone = twin.rollout(candidate)
        assert (together.collisions, together.contacts, together.holding) == (
            alone.collisions,
            alone.contacts,
            alone.holding,
        )
        assert together.duration == alone.duration
        for oid, displacement in alone.displacements.items():
            np.testing.assert_allclose(together.displacements[oid], displacement, atol=1e-9)


@pytest.mark.parametrize('threads', [1, 2, 3])
def test_length_groups_pick_the_split_with_the_fewest_rounds_of_steps(threads):
    rng = np.random.default_rng(threads)
    for _ in range(30):
        lengths = [int(v) for v in rng.integers(200, 700, rng.integers(1, 8))]
        groups = length_groups(lengths, threads)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths))) and len(groups) <= 3

        def rounds(split):
            return sum(-(-len(g) // threads) * max(lengths[i] for i in g) for g in split)

        best = min(  # every way to put each rollout in one of three groups
            rounds([g for g in ([i for i, c in enumerate(choice) if c == k] for k in range(3)) if g])
            for choice in itertools.product(range(3), repeat=len(lengths))
        )
        assert rounds(groups) == best, (lengths, groups)


def test_sync_moves_objects_without_rebuilding(sim_world, twin):
    model = twin.model
    detections = _ground_truth(sim_world)
    moved = [
        Detection(
            d.id, d.mesh_id, np.add(d.position, (0.05, 0, 0)) if d.id == 'blue_cube' else d.position, d.quat, d.label
        )
        for d in detections
    ]
    twin.sync(moved, sim_world.arm_positions())
    assert twin.model is model
    assert abs(twin.world.object_pose('blue_cube')[0][0] - sim_world.object_pose('blue_cube')[0][0] - 0.05) < 1e-9
    twin.sync(detections, sim_world.arm_positions())


def test_unknown_mesh_is_a_clear_error(sim_world):
    t = SimTwin(MeshLibrary.from_scene(sim_world.config), sim_world.config.cameras)
    with pytest.raises(KeyError, match='unknown mesh_id'):
        t.sync([Detection('x', 'teapot', (0.5, 0, 0), (1, 0, 0, 0))], sim_world.arm_positions())


def test_a_held_cube_stays_put_in_the_fingers():
    """Held still for 20 s (a planner thinking between steps) the cube neither slides down nor
    tilts in the grip: the friction model holds without creeping."""
    w = world.SimWorld(scene.SceneConfig.from_yaml(SCENE))
    try:
        cube, _ = w.object_pose('red_cube')
        ik, q = PandaIk(w.model), w.data.qpos.copy()
        for target, width in ((cube + (0, 0, 0.12), None), (cube + (0, 0, 0.02), 0.0), (cube + (0, 0, 0.15), None)):
            result = ik.solve(q, target)
            assert result.converged, target
            q[ik.arm_qpos] = result.positions
            w.follow_trajectory([1.5], [result.positions])
            w.step(1000)
            if width is not None:
                w.set_gripper(width)
                w.step(400)
        w.step(1000)  # the cube settles in the grip (turns to the fingers' yaw)
        lifted, quat = w.object_pose('red_cube')
        assert lifted[2] > 0.1 and gripper.closed_on_something(w.gripper_width())
        w.step(10000)
        held, turned = w.object_pose('red_cube')
        tilt = np.degrees(abs(_tilt(turned) - _tilt(quat)))
        assert lifted[2] - held[2] < 0.003 and tilt < 0.5, (lifted[2] - held[2], tilt)
    finally:
        w.close()


def _tilt(quat):
    """Angle between an object's z axis and the vertical [rad]."""
    _, x, y, _ = quat
    return float(np.arccos(np.clip(1 - 2 * (x * x + y * y), -1.0, 1.0)))


def test_a_drawer_sits_on_its_slide_as_perceived_and_a_pull_on_its_handle_holds_it_with_its_contents():
    """A drawer perceived 5 cm out is 5 cm out in the twin (no rebuild for sliding); a rollout that closes
    on its handle and pulls holds the drawer (the block riding in it does not count as a support) and
    brings the block along."""
    from twinloop_core.geometry import grasp_of, handle_of
    from twinloop_twin import objects

    path = os.path.join(os.path.dirname(SCENE), 'paper_drawer.yaml')
    w = world.SimWorld(scene.SceneConfig.from_yaml(path))
    t = SimTwin(MeshLibrary.from_scene(w.config), w.config.cameras)
    try:
        closed = _ground_truth(w)
        t.sync(closed, w.arm_positions())
        model = t.model
        out = [
            Detection(d.id, d.mesh_id, np.add(d.position, (-0.05, 0, 0)), d.quat, d.label)
            if d.id in ('drawer', 'red_block')
            else d
            for d in closed
        ]
        t.sync(out, w.arm_positions())
        assert t.model is model, 'sliding a drawer must not rebuild the twin'
        drawer = next(d for d in out if d.id == 'drawer')
        np.testing.assert_allclose(t.world.object_pose('drawer')[0], drawer.position, atol=1e-9)
        grip = grasp_of(handle_of((drawer.position, drawer.quat, objects.make_shape('drawer').extents))).point
        waypoints = _plan(t, [grip + (0, 0, 0.08), grip, grip + (-0.08, 0, 0)])
        result = t.rollout(Candidate(times=[1.5, 2.5, 4.5], positions=waypoints, gripper=[(0.0, 0.08), (2.6, 0.0)]))
        assert result.holding == 'drawer', (result.holding, result.contacts)
        assert result.displacements['drawer'][0] < -0.06
        assert result.displacements['red_block'][0] < -0.06
    finally:
        t.close()
        w.close()
