"""The hand's floor (no ROS) on the scene's Panda: targets a little below it are raised straight up,
a dive is left for the gate, and a chunk is cut where the stream's braking tail would still stop
above it."""

import os
from pathlib import Path

import numpy as np
import pytest

from twinloop_execution import streaming
from twinloop_execution.kinematics import Arm
from twinloop_execution.safety import JointLimits
from twinloop_vla.floor import GripFloor

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3]))

FLOOR, TOLERANCE = 0.015, 0.03
READY = np.array([0.0, 0.3, 0.0, -2.2, 0.0, 2.5, 0.785])


@pytest.fixture(scope='module')
def arm():
    return Arm.panda()


@pytest.fixture(scope='module')
def floor():
    return GripFloor.panda(FLOOR, TOLERANCE, JointLimits.panda(ROOT))


def _descent(arm, heights, xy=(0.5, 0.1)):
    """Joint targets that put the grip site (hand down) at these heights above xy."""
    return np.array([arm.ik.solve(arm.q_full(READY), np.array([*xy, z])).positions for z in heights])


def test_targets_below_the_floor_are_raised_straight_up_and_the_rest_kept(arm, floor):
    targets = _descent(arm, [0.002, 0.05, 0.02, 0.01, 0.0, -0.01])  # the first: the splice point, kept
    raised, count = floor.apply(targets)
    assert count == 3
    before, after = arm.kinematics.grip_positions(targets), arm.kinematics.grip_positions(raised)
    assert np.array_equal(raised[:3], targets[:3])  # the splice point and the targets above the floor
    assert np.allclose(after[3:, 2], FLOOR, atol=2e-4)
    assert np.allclose(after[3:, :2], before[3:, :2], atol=2e-3)  # straight up
    for q, r in zip(targets[3:], raised[3:]):
        assert np.allclose(arm.ee_quat(q), arm.ee_quat(r), atol=5e-3)  # the hand keeps its orientation


def test_a_dive_or_a_broken_chunk_is_left_for_the_gate(arm, floor):
    dive = _descent(arm, [0.05, 0.02, 0.0, -0.03])  # 4.5 cm under the floor: beyond the tolerance
    same, count = floor.apply(dive)
    assert count == 0 and np.array_equal(same, dive)
    broken = _descent(arm, [0.05, 0.0])
    broken[1, 3] = np.nan
    same, count = floor.apply(broken)
    assert count == 0 and np.array_equal(same, broken, equal_nan=True)
    assert floor.stoppable(0.1 * np.arange(2), broken, np.zeros(7)) == 2
    assert floor.stoppable(0.1 * np.arange(4), dive, np.zeros(7)) == 4  # not cut either: refused whole
    assert GripFloor.panda(0.0, TOLERANCE, JointLimits.panda(ROOT)) is None


def test_a_fast_descent_is_cut_where_the_streams_braking_tail_still_stops_above_the_floor(arm, floor):
    """Through ROS a policy came down on the cube at 0.35 m/s, every target above the table; the
    execution node's braking tail from the chunk's end went through it and the gate refused."""
    times = 0.1 * np.arange(6)
    dive = _descent(arm, [0.20, 0.165, 0.13, 0.095, 0.06, 0.025])  # 0.35 m/s down to the last point
    keep = floor.stoppable(times, dive, np.zeros(7))
    assert 2 <= keep < len(times)
    limits = JointLimits.panda(ROOT)
    for end, stops_above in ((keep, True), (keep + 1, False)):  # the stream's own tail from each end
        stream = streaming.JointStream('s', dive[0], limits.acceleration, limits.jerk, lambda *a: None)
        velocities = streaming.point_velocities(times[:end], dive[:end], np.zeros(7))
        braking = stream.acceleration, stream.jerk, stream.config.period
        _, tail, _ = streaming.chunk_tail(times[:end], dive[:end], velocities, *braking)
        assert (arm.kinematics.grip_positions(tail)[:, 2].min() >= FLOOR) == stops_above
    slow = _descent(arm, [0.10, 0.09, 0.08, 0.07, 0.06, 0.05])  # 0.1 m/s, 5 cm above the cube's top
    assert floor.stoppable(times, slow, np.zeros(7)) == len(times)
    lagging = _descent(arm, [0.10, 0.08, 0.06, 0.04, 0.01, 0.03])  # the shaping overshot a raised target
    assert floor.stoppable(times, lagging, np.zeros(7)) <= 4  # sent up to the point before, at most
    assert floor.stoppable(times[:3], _descent(arm, [0.05, 0.005, 0.03]), np.zeros(7)) == 1  # nothing to send
