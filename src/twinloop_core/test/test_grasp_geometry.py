"""Grasp geometry: objects the open fingers span are held across their narrower side over their
base; wider ones (a LIBERO bowl is 10.7 cm across, the Panda opens 8 cm) by the rim on the side
away from their neighbours, with the fingers across the wall."""

import numpy as np

from twinloop_core.geometry import (
    FINGER_HOLD,
    HOME_GRIP,
    RIM_INSET,
    grasp_of,
    grip_height,
    lean_away,
    quat_matrix,
    spans_open_fingers,
)
from twinloop_core.gripper import HAND_UNDERSIDE, OPEN_WIDTH

UPRIGHT = (1.0, 0.0, 0.0, 0.0)
BOWL = ((0.5, 0.1, 0.0), UPRIGHT, (0.107, 0.107, 0.051))
CUBE = ((0.5, 0.1, 0.0), UPRIGHT, (0.05, 0.05, 0.05))


def test_only_objects_wider_than_the_open_fingers_both_ways_are_rim_grasped():
    assert not spans_open_fingers((0.05, 0.05, 0.05))
    assert not spans_open_fingers((0.146, 0.053, 0.036))  # a bottle on its side: across its narrow side
    assert spans_open_fingers((0.107, 0.107, 0.051))
    assert spans_open_fingers((0.138, 0.137, 0.019))  # a plate
    assert not spans_open_fingers((OPEN_WIDTH - 0.01, 0.2, 0.02))


def test_a_narrow_object_is_held_over_its_base_at_grip_height():
    grasp = grasp_of(CUBE, others=[(0.5, 0.3, 0.0)])
    assert grasp.side == 0.0
    assert np.allclose(grasp.point, (0.5, 0.1, grip_height(CUBE[2])))


def test_a_bowl_is_held_by_the_rim_away_from_its_neighbour():
    neighbour_on_plus_y = [(0.5, 0.25, 0.0)]
    grasp = grasp_of(BOWL, others=neighbour_on_plus_y)
    assert grasp.side == -1.0
    assert np.allclose(grasp.point[:2], (0.5, 0.1 - (0.107 / 2 - RIM_INSET)))
    assert 0.01 <= grasp.point[2] < 0.051  # below the rim, above the base
    assert np.allclose(grasp.quat, HOME_GRIP)  # fingers close along y: across the wall at the +-y rim
    assert grasp_of(BOWL, others=[(0.5, -0.05, 0.0)]).side == 1.0


def test_a_rim_side_once_chosen_is_kept():
    """The side is chosen once: a neighbour moving to the far side does not flip it mid-grasp."""
    first = grasp_of(BOWL, others=[(0.5, 0.25, 0.0)])
    again = grasp_of(BOWL, others=[(0.5, -0.05, 0.0)], side=first.side)
    assert again.side == first.side and np.allclose(again.point, first.point)


def test_in_a_container_the_hand_spans_the_grip_rises_until_the_hand_clears_its_walls():
    block = (0.08, 0.035, 0.035)
    assert grip_height(block, walls=0.0) == grip_height(block)  # on the table: mid height
    high = grip_height(block, walls=0.052)  # a drawer's walls 5.2 cm above the block's base
    assert high + HAND_UNDERSIDE >= 0.052 or high == block[2] - FINGER_HOLD
    assert grip_height(block) < high <= block[2] - FINGER_HOLD  # the pads keep hold of its top
    assert grip_height(block, walls=0.2) == block[2] - FINGER_HOLD  # too deep: as high as a grip holds


def test_a_lean_tips_the_lower_end_of_the_hand_away_from_the_base():
    for point in ((0.8, 0.0), (0.6, -0.4), (-0.3, 0.5)):
        tip = quat_matrix(lean_away(point, 0.5)) @ np.array([0.0, 0.0, -1.0])  # what pointed down
        outward = np.asarray(point) / np.linalg.norm(point)
        assert np.isclose(tip[2], -np.cos(0.5)) and np.allclose(tip[:2], np.sin(0.5) * outward)
    assert np.allclose(lean_away((0.5, 0.2), 0.0), UPRIGHT)
