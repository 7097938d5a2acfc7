"""Spots beside objects (twinloop_core.regions) and how judges check them: free, reachable, on the
requested side, following the reference; pushes judged beside their destination; do-not-move."""

import numpy as np
import pytest

from twinloop_core.judging import extra_checks, judge
from twinloop_core.regions import RegionError, placement_offset, radius, region_target
from twinloop_core.task import SubTask

Q = (1.0, 0.0, 0.0, 0.0)


def obj(x, y, size=0.04, z=0.0):
    return ((x, y, z), Q, (size, size, size))


SCENE = {'cube': obj(0.45, -0.1), 'bowl': obj(0.55, 0.1, 0.15), 'mug': obj(0.55, 0.28, 0.07)}


@pytest.mark.parametrize('relation, axis, sign', [('left_of', 1, 1), ('right_of', 1, -1), ('behind', 0, 1)])
def test_side_spots_are_on_that_side_and_clear(relation, axis, sign):
    offset = np.asarray(placement_offset(relation, 'cube', ['bowl'], SCENE))
    assert sign * offset[axis] > radius(SCENE['bowl'][2]) + radius(SCENE['cube'][2])
    spot = np.asarray(SCENE['bowl'][0][:2]) + offset
    assert np.linalg.norm(spot - SCENE['mug'][0][:2]) > radius(SCENE['mug'][2]) + radius(SCENE['cube'][2])


def test_next_to_prefers_the_side_nearest_the_object_and_blocked_sides_are_skipped():
    offset = placement_offset('next_to', 'cube', ['bowl'], SCENE)
    assert offset[1] < 0 and abs(offset[0]) < 0.09  # right of the bowl: the cube's side
    blocked = {**SCENE, 'box': obj(0.55, -0.1, 0.12)}  # something stands there
    offset = np.asarray(placement_offset('next_to', 'cube', ['bowl'], blocked))
    spot = np.asarray(SCENE['bowl'][0][:2]) + offset
    assert np.linalg.norm(spot - blocked['box'][0][:2]) > radius(blocked['box'][2]) + radius(SCENE['cube'][2])
    walled = {
        **SCENE,
        **{
            f'wall{i}': obj(0.55 + 0.26 * np.cos(a), 0.1 + 0.26 * np.sin(a), 0.3)
            for i, a in enumerate(np.radians(np.arange(0, 360, 45)))
        },
    }
    with pytest.raises(RegionError, match='no free spot'):
        placement_offset('next_to', 'cube', ['bowl'], walled)


def test_unreachable_spots_are_refused():
    far = {'cube': obj(0.45, 0.0), 'plate': obj(0.78, 0.0, 0.1)}
    with pytest.raises(RegionError, match='within reach'):
        placement_offset('behind', 'cube', ['plate'], far)


def test_a_region_subtask_is_judged_at_its_spot_and_follows_its_reference():
    s = SubTask('place', 'cube', 'bowl', 'left_of', offset=placement_offset('left_of', 'cube', ['bowl'], SCENE))
    spot = region_target(s, SCENE)
    there = {**SCENE, 'cube': obj(spot[0] + 0.01, spot[1])}
    assert judge([s], SCENE, there)[0]
    assert not judge([s], SCENE, {**there, 'cube': obj(spot[0], spot[1], z=0.05)})[0]  # not resting
    moved_bowl = {**there, 'bowl': obj(0.45, 0.1, 0.15)}
    assert not judge([s], SCENE, moved_bowl)[0]  # the spot moved with the bowl


def test_push_is_judged_beside_and_do_not_move_fails_the_task():
    push = SubTask('push', 'cube', 'bowl', 'towards')
    beside = {**SCENE, 'cube': obj(0.55, -0.02)}
    assert judge([push], SCENE, beside)[0] and not judge([push], SCENE, SCENE)[0]
    nudged = {**beside, 'mug': obj(0.58, 0.28, 0.07)}
    done, detail = judge([push], SCENE, nudged, do_not_move=('mug',))
    assert not done and 'mug was not to be moved' in detail


def test_a_push_without_destination_is_done_once_aside_on_its_support():
    aside = SubTask('push', 'cube')
    assert judge([aside], SCENE, {**SCENE, 'cube': obj(0.45, -0.17)})[0]
    assert not judge([aside], SCENE, {**SCENE, 'cube': obj(0.45, -0.13)})[0]  # 3 cm: not aside
    assert not judge([aside], SCENE, {**SCENE, 'cube': obj(0.45, -0.2, z=-0.1)})[0]  # pushed off what it stood on


def test_a_ring_counts_as_threaded_only_down_the_post():
    post = ((0.6, -0.2, 0.0), Q, (0.1, 0.1, 0.16))
    down = {'post': post, 'ring': ((0.61, -0.2, 0.012), Q, (0.1, 0.1, 0.03))}
    on_top = {'post': post, 'ring': ((0.6, -0.2, 0.16), Q, (0.1, 0.1, 0.03))}
    beside = {'post': post, 'ring': ((0.72, -0.2, 0.0), Q, (0.1, 0.1, 0.03))}
    checks = [{'threaded': {'object_id': 'ring', 'destination_id': 'post'}}]
    assert extra_checks(checks, down)[0]
    assert not extra_checks(checks, on_top)[0] and 'not down it' in extra_checks(checks, on_top)[1]
    assert not extra_checks(checks, beside)[0]
    with pytest.raises(ValueError, match='unknown check'):
        extra_checks([{'stacked_nicely': {}}], down)


def test_a_pair_goes_beside_the_reference_across_its_own_heading():
    turned = (np.cos(0.6), 0.0, 0.0, np.sin(0.6))  # heading 1.2 rad
    objects = {
        'left': ((0.45, -0.2, 0.0), Q, (0.2, 0.07, 0.05)),
        'right': ((0.55, 0.1, 0.0), turned, (0.2, 0.07, 0.05)),
        'sponge': ((0.4, 0.3, 0.0), Q, (0.09, 0.06, 0.03)),
    }
    offset = np.asarray(placement_offset('side_by_side', 'left', ['right'], objects))
    heading = np.array([np.cos(1.2), np.sin(1.2)])
    assert abs(offset @ heading) < 0.011  # level along it (toes in line)
    assert np.linalg.norm(offset) == pytest.approx(0.07 + 0.03, abs=0.011)  # sides PAIR_GAP apart
    spot = np.add(objects['right'][0][:2], offset)
    after = {**objects, 'left': ((*spot, 0.0), turned, (0.2, 0.07, 0.05))}
    assert extra_checks([{'side_by_side': {'object_id': 'left', 'reference_id': 'right'}}], after)[0]
    unturned = {**after, 'left': ((*spot, 0.0), Q, (0.2, 0.07, 0.05))}
    done, note = extra_checks([{'side_by_side': {'object_id': 'left', 'reference_id': 'right'}}], unturned)
    assert not done and 'turned 69 deg' in note


@pytest.mark.parametrize(
    'position, done',
    [
        ((0.72, 0.25, 0.12), True),  # on the top, near its end
        ((0.72, 0.25, 0.0), False),  # under it, on the table
        ((0.72, 0.35, 0.12), False),  # beyond its end
        ((0.72, 0.25, 0.2), False),  # on something standing on it
    ],
)
def test_on_top_of_a_turned_rack(position, done):
    """A rack turned a quarter turn: its 60 cm length lies along x, so y = 0.25 is off it."""
    quarter = (np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4))
    rack = ((0.72, 0.0, 0.0), Q, (0.26, 0.6, 0.12))
    shoe = (position, Q, (0.18, 0.07, 0.06))
    assert (
        extra_checks([{'on_top_of': {'object_id': 'shoe', 'destination_id': 'rack'}}], {'shoe': shoe, 'rack': rack})[0]
        == done
    )
    turned = {'shoe': shoe, 'rack': (rack[0], quarter, rack[2])}
    assert not extra_checks([{'on_top_of': {'object_id': 'shoe', 'destination_id': 'rack'}}], turned)[0]


@pytest.mark.parametrize(
    'position, done',
    [
        ((0.62, -0.3, 0.01), True),  # down the hole, on the chute's floor
        ((0.635, -0.3, 0.06), False),  # resting on the rim, half over the hole
        ((0.62, -0.17, 0.01), False),  # in the other hole
        ((0.50, -0.3, 0.0), False),  # beside it on the table
    ],
)
def test_inside_a_hole_only_below_its_rim(position, done):
    holes = {
        'square_hole': ((0.62, -0.3, 0.0), Q, (0.08, 0.08, 0.06)),
        'slot': ((0.62, -0.17, 0.0), Q, (0.16, 0.05, 0.06)),
    }
    after = {**holes, 'cube': (position, Q, (0.04, 0.04, 0.04))}
    assert extra_checks([{'inside': {'object_id': 'cube', 'destination_id': 'square_hole'}}], after)[0] == done


def test_poured_counts_the_contents_that_landed_in_the_bowl():
    bowl = ((0.55, -0.3, 0.0), Q, (0.16, 0.16, 0.05))
    marble = lambda x, y, z: ((x, y, z), Q, (0.018, 0.018, 0.018))  # noqa: E731
    state = {
        'bowl': bowl,
        'cup': ((0.5, -0.2, 0.1), Q, (0.07, 0.07, 0.09)),
        'marble_0': marble(0.56, -0.31, 0.01),
        'marble_1': marble(0.52, -0.27, 0.01),
        'marble_2': marble(0.50, -0.2, 0.12),  # still in the cup
        'marble_3': marble(0.70, -0.3, 0.0),  # on the table
    }
    check = [{'poured': {'contents': 'marble', 'destination_id': 'bowl'}}]
    done, note = extra_checks(check, state)
    assert done and note.startswith('2 of 4 marble in bowl')
    assert not extra_checks([{'poured': {'contents': 'marble', 'destination_id': 'bowl', 'share': 0.75}}], state)[0]
    with pytest.raises(ValueError, match='no object ids'):
        extra_checks([{'poured': {'contents': 'ball', 'destination_id': 'bowl'}}], state)


def test_a_drawer_is_open_once_pulled_out_along_its_axis_even_if_its_first_yaw_was_misread():
    """open: the drawer moved at least OPENED along its own -x axis, as its newer pose has it (a yaw
    misread at the start does not turn a pull into a sideways move)."""
    from twinloop_core.judging import OPENED

    size = (0.23, 0.2, 0.06)
    closed = ((0.6, 0.2, 0.006), (1.0, 0.0, 0.0, 0.0), size)
    misread = ((0.6, 0.2, 0.006), (np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)), size)  # a quarter turn off
    opened = ((0.6 - OPENED - 0.01, 0.2, 0.006), (1.0, 0.0, 0.0, 0.0), size)
    task = [SubTask('open', 'drawer')]
    assert judge(task, {'drawer': closed}, {'drawer': opened})[0]
    assert judge(task, {'drawer': misread}, {'drawer': opened})[0]
    done, note = judge(task, {'drawer': closed}, {'drawer': closed})
    assert not done and note == 'not done: drawer pulled out 0.0 cm'
    pushed_in = ((0.6 + 0.05, 0.2, 0.006), (1.0, 0.0, 0.0, 0.0), size)
    assert not judge(task, {'drawer': closed}, {'drawer': pushed_in})[0]


def test_a_reorientation_is_done_with_the_longest_side_upright_on_the_destination():
    """A 16 x 7 x 3 cm book stood on its end: its frame's origin (the flat book's bottom centre) is then half its
    length up, on a long side; the judge finds its lowest point on the shelf's top and its centre over it."""
    book, shelf = (0.16, 0.07, 0.03), ((0.66, -0.05, 0.0), Q, (0.24, 0.5, 0.15))
    standing = (np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0)  # a quarter turn about y: x (its length) vertical
    flat = {'book': ((0.4, 0.15, 0.0), Q, book), 'shelf': shelf}
    on_shelf = {**flat, 'book': ((0.66 - 0.015, -0.05, 0.15 + 0.08), standing, book)}
    up = SubTask('reorient', 'book', 'shelf', 'on')
    assert judge([up], flat, on_shelf)[0]
    assert not judge([up], flat, flat)[0]  # lying flat
    assert not judge([up], flat, {**on_shelf, 'book': ((0.4, 0.15, 0.08), standing, book)})[0]  # upright, on the table
    assert judge([SubTask('reorient', 'book')], flat, {**on_shelf, 'book': ((0.4, 0.15, 0.08), standing, book)})[0]
    tipped = (np.cos(np.pi / 6), 0.0, np.sin(np.pi / 6), 0.0)  # 60 degrees: leaning
    assert not judge([SubTask('reorient', 'book')], flat, {**flat, 'book': ((0.4, 0.15, 0.06), tipped, book)})[0]
