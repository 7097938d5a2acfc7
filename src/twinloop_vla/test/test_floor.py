"""The hand's floor (no ROS) on the scene's Panda: targets a little below it are raised straight up,
a dive is left for the gate."""

import numpy as np
import pytest

from twinloop_execution.kinematics import Arm
from twinloop_vla.floor import GripFloor

FLOOR, TOLERANCE = 0.015, 0.03
READY = np.array([0.0, 0.3, 0.0, -2.2, 0.0, 2.5, 0.785])


@pytest.fixture(scope='module')
def arm():
    return Arm.panda()


def _descent(arm, heights, xy=(0.5, 0.1)):
    """Joint targets that put the grip site (hand down) at these heights above xy."""
    return np.array([arm.ik.solve(arm.q_full(READY), np.array([*xy, z])).positions for z in heights])


def test_targets_below_the_floor_are_raised_straight_up_and_the_rest_kept(arm):
    floor = GripFloor.panda(FLOOR, TOLERANCE)
    targets = _descent(arm, [0.002, 0.05, 0.02, 0.01, 0.0, -0.01])  # the first: the splice point, kept
    raised, count = floor.apply(targets)
    assert count == 3
    before, after = arm.kinematics.grip_positions(targets), arm.kinematics.grip_positions(raised)
    assert np.array_equal(raised[:3], targets[:3])  # the splice point and the targets above the floor
    assert np.allclose(after[3:, 2], FLOOR, atol=2e-4)
    assert np.allclose(after[3:, :2], before[3:, :2], atol=2e-3)  # straight up
    for q, r in zip(targets[3:], raised[3:]):
        assert np.allclose(arm.ee_quat(q), arm.ee_quat(r), atol=5e-3)  # the hand keeps its orientation


def test_a_dive_or_a_broken_chunk_is_left_for_the_gate(arm):
    floor = GripFloor.panda(FLOOR, TOLERANCE)
    dive = _descent(arm, [0.05, 0.02, 0.0, -0.03])  # 4.5 cm under the floor: beyond the tolerance
    same, count = floor.apply(dive)
    assert count == 0 and np.array_equal(same, dive)
    broken = _descent(arm, [0.05, 0.0])
    broken[1, 3] = np.nan
    same, count = floor.apply(broken)
    assert count == 0 and np.array_equal(same, broken, equal_nan=True)
    assert GripFloor.panda(0.0, TOLERANCE) is None
