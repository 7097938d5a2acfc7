"""The template writer: for every relation the code it writes passes the real sandbox, and the
targets it returns move the object's keypoints as a rigid set to where the relation holds, judged
with twinloop_core's own judges (judge_subtask, region_done); the three-stage shoe task is chained
to done; stages without a template fail with the reason; every code names the template writer."""

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from twinloop_core.gripper import HAND_LENGTH
from twinloop_core.judging import judge_subtask
from twinloop_core.regions import placement_offset, region_done
from twinloop_core.task import SubTask, TaskSpec
from twinloop_iker import query_image as qi
from twinloop_iker import template_writer as tw
from twinloop_iker.sandbox import run_interaction_code
from twinloop_perception import keypoints as kp
from twinloop_twin import objects as catalog
from twinloop_twin import scene

SCENES = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3])) / 'config' / 'scenes'
WORKSPACE = ((-0.3, -0.7, -0.01), (1.0, 0.7, 1.0))


@dataclass
class Layout:
    """Object states and every keypoint (number -> (object id, xyz)) of a scene file."""

    states: dict
    keypoints: dict

    def run(self, task, stage=0, multi_step=None):
        code = tw.write_code(task, self.keypoints, self.states, stage, multi_step)
        assert tw.LABEL in code
        positions = {n: xyz for n, (_, xyz) in self.keypoints.items()}
        objects = {oid: [n for n, (o, _) in self.keypoints.items() if o == oid] for oid in self.states}
        return run_interaction_code(code, positions, objects, WORKSPACE)

    def moved(self, result):
        """The layout after the object's keypoints reach their targets by a rigid motion (checked: the
        set keeps its shape; a turn about z at most, the object stays level)."""
        before = np.array([self.keypoints[i][1] for i in result.keypoint_indices])
        after = np.array(result.target_positions)
        a, b = before - before.mean(axis=0), after - after.mean(axis=0)
        u, _, vt = np.linalg.svd(b.T @ a)
        turn = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        turn = np.eye(3) if np.allclose(a, b, atol=1e-9) else turn  # a translation (exact, also for collinear sets)
        assert np.allclose(a @ turn.T, b, atol=1e-4), 'the keypoint set moves rigidly, its layout kept'
        shift = after.mean(axis=0) - before.mean(axis=0) @ turn.T
        oid = result.object_id
        p, q, size = self.states[oid]
        quat = Rotation.from_matrix(turn) * Rotation.from_quat(np.roll(q, -1))
        states = {**self.states, oid: (tuple(turn @ p + shift), tuple(np.roll(quat.as_quat(), 1)), size)}
        keypoints = {n: (o, tuple(turn @ xyz + shift) if o == oid else xyz) for n, (o, xyz) in self.keypoints.items()}
        return Layout(states, keypoints)


def layout(name, yaws=None):
    """The scene file's layout; yaws: {object id: yaw [rad]} replacing the file's."""
    config = scene.SceneConfig.from_yaml(SCENES / f'{name}.yaml')
    states, meshes = {}, []
    for o in config.objects:
        shape = catalog.make_shape(o.kind, **o.params)
        z = o.pos[2] if len(o.pos) > 2 else 0.0
        yaw = (yaws or {}).get(o.id, o.yaw)
        states[o.id] = ((o.pos[0], o.pos[1], z), (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)), shape.extents)
        meshes.append((o.id, catalog.shape_mesh(shape), shape.static))
    proposed = kp.propose(meshes)
    world = kp.world_positions(proposed, {oid: s[:2] for oid, s in states.items()})
    return Layout(states, {k.label: (k.object_id, tuple(world[i])) for i, k in enumerate(proposed)})


@pytest.fixture(scope='module')
def tabletop():
    return layout('tabletop')


def single(*args, **kwargs):
    return TaskSpec('test', [SubTask(*args, **kwargs)], parser='test')


@pytest.mark.parametrize(
    'relation, destination, top',
    [('in', 'bowl', tw.FLOOR), ('', 'bowl', tw.FLOOR), ('on', 'green_block', 0.04), ('on', 'blue_cube', 0.04)],
)
def test_place_in_and_on(tabletop, relation, destination, top):
    task = single('place', 'red_cube', destination, relation)
    result = tabletop.run(task)
    assert result.object_id == 'red_cube' and result.grasp and not result.done
    after = tabletop.moved(result)
    position = after.states['red_cube'][0]
    assert np.allclose(position[:2], tabletop.states[destination][0][:2], atol=0.002), 'over its middle'
    assert position[2] == pytest.approx(top, abs=0.002), 'the base at the floor / on the top'
    assert judge_subtask(task.subtasks[0], tabletop.states, after.states)[0]


REGIONS = [
    ('next_to', 'bowl', ''),
    ('left_of', 'bowl', ''),
    ('right_of', 'green_block', ''),
    ('in_front_of', 'green_block', ''),
    ('behind', 'blue_cube', ''),
    ('between', 'blue_cube', 'bowl'),
    ('aligned_with', 'green_block', ''),
    ('at_distance', 'bowl', ''),
]


@pytest.mark.parametrize('relation, reference, reference2', REGIONS)
def test_region_relations(tabletop, relation, reference, reference2):
    refs = [reference] + ([reference2] if reference2 else [])
    offset = placement_offset(relation, 'red_cube', refs, tabletop.states)
    task = single('place', 'red_cube', reference, relation, reference2, offset)  # as the parser gives it
    result = tabletop.run(task)
    assert result.grasp
    after = tabletop.moved(result)
    done, note = region_done(task.subtasks[0], tabletop.states, after.states)
    assert done, note
    assert after.states['red_cube'][0][2] == pytest.approx(tabletop.states['red_cube'][0][2], abs=1e-6)
    p, r = after.states['red_cube'][0], tabletop.states[reference][0]
    expected = {'left_of': p[1] > r[1], 'right_of': p[1] < r[1], 'in_front_of': p[0] < r[0], 'behind': p[0] > r[0]}
    assert expected.get(relation, True)
    if relation == 'aligned_with':
        assert p[0] == pytest.approx(r[0], abs=0.002), 'in line across the table'
    without = tabletop.run(replace(task, subtasks=[replace(task.subtasks[0], offset=())]))
    assert np.allclose(without.target_positions, result.target_positions), 'no offset: the same spot, computed'


def test_push_towards_stays_on_the_table_beside_the_destination(tabletop):
    task = single('push', 'blue_cube', 'bowl', 'towards')
    result = tabletop.run(task)
    assert not result.grasp
    after = tabletop.moved(result)
    assert judge_subtask(task.subtasks[0], tabletop.states, after.states)[0]
    gap = np.linalg.norm(np.subtract(after.states['blue_cube'][0], tabletop.states['bowl'][0]))
    assert gap < np.linalg.norm(np.subtract(tabletop.states['blue_cube'][0], tabletop.states['bowl'][0]))
    assert after.states['blue_cube'][0][2] == tabletop.states['blue_cube'][0][2]


def test_push_to_form_a_pair():
    shoes = layout('iker_shoes')
    offset = placement_offset('left_of', 'left_shoe', ['right_shoe'], shoes.states)
    task = single('push', 'left_shoe', 'right_shoe', 'left_of', offset=offset)
    result = shoes.run(task)
    after = shoes.moved(result)
    assert not result.grasp and region_done(task.subtasks[0], shoes.states, after.states)[0]
    assert after.states['left_shoe'][0][1] > after.states['right_shoe'][0][1]


def test_push_a_book_in_line_with_another():
    books = layout('iker_align')
    task = single('push', 'red_book', 'green_book', 'aligned_with')
    result = books.run(task)
    after = books.moved(result)
    assert not result.grasp
    offset = placement_offset('aligned_with', 'red_book', ['green_book'], books.states)
    assert region_done(replace(task.subtasks[0], offset=offset), books.states, after.states)[0]
    assert after.states['red_book'][0][0] == pytest.approx(books.states['green_book'][0][0], abs=0.002)


def test_pick_raises_the_keypoints(tabletop):
    result = tabletop.run(single('pick', 'green_block'))
    after = tabletop.moved(result)
    assert result.grasp and after.states['green_block'][0][2] == pytest.approx(tw.LIFT)


@pytest.mark.parametrize('destination', ['shelf', ''])
def test_reorient_stands_the_book_up(destination):
    shelf = layout('iker_shelf')
    result = shelf.run(single('reorient', 'book', destination, 'on' if destination else ''))
    before = np.array([shelf.keypoints[i][1] for i in result.keypoint_indices])
    after = np.array(result.target_positions)
    distances = [np.linalg.norm(points[:, None] - points[None], axis=2) for points in (before, after)]
    assert np.allclose(*distances, atol=1e-3), 'a rigid motion of the keypoint set'
    pair = slice(0, 2) if np.ptp(before[:2, 2]) < 0.01 else slice(2, 4)  # the two ends of its longest side
    ends = after[pair]
    along = ends[0] - ends[1]
    assert abs(along[2]) / np.linalg.norm(along) > 0.98, 'the longest side upright'
    far = int(np.argmax(np.linalg.norm(before[pair, :2], axis=1)))  # from the robot's base
    assert ends[far][2] > ends[1 - far][2], 'the far end goes up (the hand turns its fingertips away from the robot)'
    surface = shelf.states['shelf'][2][2] if destination else 0.0
    assert after[:, 2].min() == pytest.approx(surface, abs=0.004), 'standing on the surface'
    if destination:
        middle = after.mean(axis=0)
        (x, y, _), size = shelf.states['shelf'][0], shelf.states['shelf'][2]
        assert abs(middle[0] - x) < size[0] / 2 and abs(middle[1] - y) < size[1] / 2


def test_three_stage_chain_box_aside_then_the_pair_on_the_rack():
    chain_three_stages(layout('iker_three_stage'))


def chain_three_stages(state):
    """Box aside, then the pair on the rack, each stage's targets reached; (first, last) layouts."""
    task = TaskSpec(
        'put the shoes on the rack',
        [
            SubTask('push', 'shoe_box'),
            SubTask('place', 'left_shoe', 'rack', 'on'),
            SubTask('place', 'right_shoe', 'rack', 'on'),
        ],
        parser='test',
    )
    start = state
    for stage, (oid, grasp) in enumerate([('shoe_box', False), ('left_shoe', True), ('right_shoe', True)]):
        result = state.run(task, stage)
        assert (result.object_id, result.grasp, result.done) == (oid, grasp, False)
        assert f'Stage {stage + 1} of 3' in result.plan
        state = state.moved(result)
    assert state.run(task, 3).done
    box_shift = np.subtract(state.states['shoe_box'][0], start.states['shoe_box'][0])
    assert abs(box_shift[0]) < 1e-9 and abs(box_shift[1]) > 0.1 and box_shift[2] == 0, 'slid along the rack'
    rack_low, rack_high = tw._bounds(state.states['rack'])
    footprints = {}
    for oid in ('shoe_box', 'left_shoe', 'right_shoe'):
        low, high = tw._bounds(state.states[oid])
        assert low[2] == pytest.approx(rack_high[2], abs=0.001), f'{oid} stands on the rack'
        assert np.all(low[:2] >= rack_low[:2]) and np.all(high[:2] <= rack_high[:2]), f'{oid} within its top'
        footprints[oid] = ((low[:2] + high[:2]) / 2, (high[:2] - low[:2]) / 2)
    for a, b in (('shoe_box', 'left_shoe'), ('shoe_box', 'right_shoe'), ('left_shoe', 'right_shoe')):
        assert tw._gap(*footprints[a], *footprints[b]) >= tw.CLEARANCE - 1e-6, f'{a} and {b} do not overlap'
    for shoe in ('left_shoe', 'right_shoe'):  # the hand holding a shoe across its width reaches 7 cm past it
        overhang = HAND_LENGTH / 2 - footprints[shoe][1][1]
        assert tw._gap(*footprints['shoe_box'], *footprints[shoe]) >= overhang, (
            f'the hand placing {shoe} clears the box'
        )
    assert state.states['left_shoe'][0][1] > state.states['right_shoe'][0][1], 'the left shoe on the left'
    # the box went to -y; the first shoe goes to the other end, all the room between them is the second one's
    assert rack_high[1] - (footprints['left_shoe'][0][1] + footprints['left_shoe'][1][1]) <= tw.EDGE_MARGIN + tw.STEP
    for s in task.subtasks[1:]:
        assert judge_subtask(s, start.states, state.states)[0]
    return start, state


def long_side(obj):
    """The direction of an object's longest side."""
    return Rotation.from_quat(np.roll(obj[1], -1)).as_matrix()[:, int(np.argmax(obj[2]))]


@pytest.mark.parametrize('yaws', [(0.1, -0.1), (1.4, -1.9), (-1.57, 2.6)])
def test_a_pair_is_laid_across_its_row_turning_the_shorter_way(yaws):
    """Shoes lying any way on the table end side by side on the rack, each long side along x (a pair
    takes two widths of the rack, not two lengths), each turned at most a quarter turn."""
    turned = layout('iker_three_stage', dict(zip(('left_shoe', 'right_shoe'), yaws)))
    start, end = chain_three_stages(turned)
    for oid in ('left_shoe', 'right_shoe'):
        before, after = long_side(start.states[oid]), long_side(end.states[oid])
        assert abs(after[0]) > 0.999, f'{oid} lies across the row'
        assert before @ after > -1e-9, f'{oid} turned the short way (at most a quarter turn)'


def test_stages_without_a_template_say_why(tabletop):
    with pytest.raises(tw.TemplateError, match='open has no keypoint template'):
        tw.write_code(single('open', 'bowl'), tabletop.keypoints, tabletop.states)
    with pytest.raises(tw.TemplateError, match='has no destination'):
        tw.write_code(single('place', 'bowl'), tabletop.keypoints, tabletop.states)
    hidden = {n: v for n, v in tabletop.keypoints.items() if v[0] != 'red_cube'}
    with pytest.raises(tw.TemplateError, match='no keypoint of red_cube is drawn'):
        tw.write_code(single('place', 'red_cube', 'bowl', 'in'), hidden, tabletop.states)
    with pytest.raises(tw.TemplateError, match='the task has 1 sub-task'):
        tw.write_code(single('place', 'red_cube', 'bowl', 'in'), tabletop.keypoints, tabletop.states, stage=1)


def test_a_reference_without_keypoints_is_used_by_its_position(tabletop):
    hidden = Layout(tabletop.states, {n: v for n, v in tabletop.keypoints.items() if v[0] != 'bowl'})
    task = single('place', 'red_cube', 'bowl', 'in')
    assert 'no keypoint of bowl is drawn' in tw.write_code(task, hidden.keypoints, hidden.states)
    assert np.allclose(hidden.run(task).target_positions, tabletop.run(task).target_positions, atol=1e-4)


def test_on_a_real_render(sim):
    """'put the red cube next to the bowl' on the keypoints the query image shows."""
    frame = sim.render('front', 320, 240)
    poses = {oid: sim.object_pose(oid) for oid in sim.object_ids}
    query = qi.render_query_image(qi.CameraView.from_frame(frame), qi.scene_objects(sim.config, poses))
    states = {o.id: (*poses[o.id], catalog.make_shape(o.kind, **o.params).extents) for o in sim.config.objects}
    offset = placement_offset('next_to', 'red_cube', ['bowl'], states)
    task = TaskSpec(
        'put the red cube next to the bowl', [SubTask('place', 'red_cube', 'bowl', 'next_to', offset=offset)]
    )
    code = tw.write_code(task, query.keypoints, states)
    result = run_interaction_code(code, query.positions(), query.object_keypoints(), WORKSPACE)
    after = Layout(states, query.keypoints).moved(result)
    assert region_done(task.subtasks[0], states, after.states)[0]
