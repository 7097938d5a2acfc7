"""The demo's instruction grammar: grounded when unambiguous, rejected with a reason otherwise."""
import pytest

from twinloop_bringup.instructions import GroundingError, PickPlaceGoal, ground

LABELS = {'red_cube': 'red cube', 'blue_cube': 'blue cube', 'bowl': 'bowl', 'green_block': 'green block'}


@pytest.mark.parametrize('text, goal', [
    ('put the red cube in the bowl', PickPlaceGoal('red_cube', 'bowl')),
    ('Place the green block on the blue cube.', PickPlaceGoal('green_block', 'blue_cube')),
    ('pick up the blue cube', PickPlaceGoal('blue_cube')),
    ('lift the bowl', PickPlaceGoal('bowl')),
])
def test_grounded(text, goal):
    assert ground(text, LABELS) == goal


@pytest.mark.parametrize('text, reason', [
    ('', 'empty'),
    ('pick up the cube', 'ambiguous'),
    ('put the banana in the bowl', 'no object matches'),
    ('put the bowl in the bowl', 'same'),
    ('dance', 'understands'),
])
def test_rejected_with_reason(text, reason):
    with pytest.raises(GroundingError, match=reason):
        ground(text, LABELS)
