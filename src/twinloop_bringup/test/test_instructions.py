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


def test_grasp_yaw_closes_across_the_narrow_side():
    from types import SimpleNamespace as NS

    import numpy as np

    from twinloop_bringup.demo import grasp_yaw

    def obj(theta, sx, sy):
        return NS(pose=NS(orientation=NS(w=np.cos(theta / 2), x=0.0, y=0.0, z=np.sin(theta / 2))), size=NS(x=sx, y=sy, z=0.04))

    assert grasp_yaw(obj(1.0, 0.08, 0.04)) == pytest.approx(1.0)            # narrow along the object's y
    assert grasp_yaw(obj(1.0, 0.04, 0.08)) == pytest.approx(1.0 + np.pi / 2 - np.pi)
    assert grasp_yaw(obj(1.0, 0.05, 0.05)) == pytest.approx(1.0 - np.pi / 2)  # cube: the smallest turn
    assert abs(grasp_yaw(obj(-2.5, 0.08, 0.04))) <= np.pi / 2
