"""ruckig timing keeps within the scaled limits and ends exactly at each waypoint."""

import numpy as np
import pytest

from twinloop_execution import trajectory

VEL = np.array([2.175] * 4 + [2.61] * 3)
ACC = np.array([15, 7.5, 10, 12.5, 15, 20, 20.0])
JERK = ACC * 500


def test_within_limits_and_through_waypoints():
    start = np.zeros(7)
    waypoints = [start, start + 0.5, start + np.array([0.5, -0.3, 0.2, 0.1, 0, 0, 1.0])]
    path = trajectory.parametrize(waypoints, VEL, ACC, JERK, scale=0.5, period=0.02)
    assert np.all(np.diff(path.times) > 0) and path.times[0] > 0
    np.testing.assert_allclose(path.positions[-1], waypoints[-1], atol=1e-9)
    assert np.any(np.all(np.abs(path.positions - waypoints[1]) < 1e-9, axis=1)), 'stops at the middle waypoint'
    assert np.all(np.abs(path.velocities) <= 0.5 * VEL + 1e-9)
    np.testing.assert_allclose(path.sample(path.duration), waypoints[-1], atol=1e-9)


@pytest.mark.parametrize(
    'waypoints, scale', [([np.zeros(7)], 0.5), ([np.zeros(7), np.zeros(7)], 0.5), ([np.zeros(7), np.ones(7)], 0.0)]
)
def test_bad_requests(waypoints, scale):
    with pytest.raises(ValueError):
        trajectory.parametrize(waypoints, VEL, ACC, JERK, scale=scale)
