"""Grounding with the packaged MiniLM: references resolve by meaning, multi-stage instructions
become sub-tasks, sorting picks the right bin, and what cannot be grounded is rejected."""

import os

import pytest

from twinloop_core.task import SubTask
from twinloop_planning.grounding import Grounder, GroundingError

ROOT = os.environ.get('TWINLOOP_ROOT', os.path.join(os.path.dirname(__file__), '..', '..', '..'))
LABELS = {
    'red_cube': 'red cube',
    'blue_cube': 'blue cube',
    'bowl': 'bowl',
    'banana': 'banana',
    'can': 'soda can',
    'wrapper': 'crumpled wrapper',
    'recycling_bin': 'blue recycling bin',
    'compost_bin': 'green compost bin',
    'trash_bin': 'black trash bin',
    'box': 'cardboard box',
}


@pytest.fixture(scope='module')
def grounder():
    return Grounder(os.path.join(ROOT, 'config', 'waste_categories.yaml'))


@pytest.mark.parametrize(
    'instruction, subtasks',
    [
        ('pick up the red cube', [SubTask('pick', 'red_cube')]),
        ('Put the fruit in the bowl.', [SubTask('place', 'banana', 'bowl')]),
        ('stack the blue cube on the red cube', [SubTask('place', 'blue_cube', 'red_cube')]),
        ('push the soda can towards the bowl', [SubTask('push', 'can', 'bowl')]),
        (
            'put the red cube and the blue cube in the bowl',
            [SubTask('place', 'red_cube', 'bowl'), SubTask('place', 'blue_cube', 'bowl')],
        ),
        ('pick up the banana, then put it... ', None),
        ('sort the banana into the right bin', [SubTask('place', 'banana', 'compost_bin')]),
        ('throw the soda can away', [SubTask('place', 'can', 'recycling_bin')]),
        ('sort the crumpled wrapper into the right bin', [SubTask('place', 'wrapper', 'trash_bin')]),
        (
            'put the red cube in the bowl then put the banana in the cardboard box',
            [SubTask('place', 'red_cube', 'bowl'), SubTask('place', 'banana', 'box')],
        ),
        ('open the cardboard box', [SubTask('open', 'box')]),
    ],
)
def test_grounded(grounder, instruction, subtasks):
    if subtasks is None:
        with pytest.raises(GroundingError):
            grounder.ground(instruction, LABELS)
        return
    spec = grounder.ground(instruction, LABELS)
    assert spec.subtasks == subtasks
    assert spec.to_dict()['subtasks']


@pytest.mark.parametrize(
    'instruction, reason',
    [
        ('', 'empty'),
        ('put the spaceship in the bowl', 'no object matches'),
        ('pick up the cube', 'ambiguous'),
        ('dance with the bowl', 'grammar'),
    ],
)
def test_rejected_with_reason(grounder, instruction, reason):
    with pytest.raises(GroundingError, match=reason):
        grounder.ground(instruction, LABELS)


LIBERO_LABELS = {
    'bowl_1': 'akita black bowl',
    'bowl_2': 'akita black bowl',
    'plate_1': 'plate',
    'ramekin_1': 'glazed rim porcelain ramekin',
    'cookies_1': 'cookies',
}
LIBERO_POSITIONS = {
    'bowl_1': (0.60, 0.20, 0.0),
    'bowl_2': (0.47, 0.32, 0.0),
    'plate_1': (0.71, 0.21, 0.0),
    'ramekin_1': (0.46, 0.19, 0.0),
    'cookies_1': (0.72, 0.03, 0.0),
}


@pytest.mark.parametrize(
    'instruction, subtasks',
    [
        (
            'pick up the black bowl between the plate and the ramekin and place it on the plate',
            [SubTask('place', 'bowl_1', 'plate_1')],
        ),
        (
            'pick up the black bowl next to the ramekin and place it on the plate',
            [SubTask('place', 'bowl_2', 'plate_1')],
        ),
        (
            'pick up the black bowl next to the cookie box and place it on the plate',
            [SubTask('place', 'bowl_1', 'plate_1')],
        ),
        ('put the cookies on top of the plate', [SubTask('place', 'cookies_1', 'plate_1')]),
    ],
)
def test_spatial_qualifiers_pick_one_of_equal_labels(grounder, instruction, subtasks):
    assert grounder.ground(instruction, LIBERO_LABELS, LIBERO_POSITIONS).subtasks == subtasks


def test_equal_labels_without_a_qualifier_or_positions_are_ambiguous(grounder):
    with pytest.raises(GroundingError, match='ambiguous'):
        grounder.ground('pick up the black bowl and place it on the plate', LIBERO_LABELS, LIBERO_POSITIONS)
    with pytest.raises(GroundingError, match='ambiguous'):
        grounder.ground('pick up the black bowl next to the ramekin and place it on the plate', LIBERO_LABELS)
