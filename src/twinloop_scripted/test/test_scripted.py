"""The scripted strategy's grasp: across the narrow side, the smallest joint-7 turn."""

import numpy as np
import pytest

from twinloop_core.geometry import grasp_yaw
from twinloop_core.task import SubTask
from twinloop_scripted.engine import motions


def _quat(theta):
    return (np.cos(theta / 2), 0.0, 0.0, np.sin(theta / 2))


def test_grasp_yaw_closes_across_the_narrow_side():
    assert grasp_yaw(_quat(1.0), 0.08, 0.04) == pytest.approx(1.0)
    assert grasp_yaw(_quat(1.0), 0.04, 0.08) == pytest.approx(1.0 + np.pi / 2 - np.pi)
    assert grasp_yaw(_quat(1.0), 0.05, 0.05) == pytest.approx(1.0 - np.pi / 2)
    assert abs(grasp_yaw(_quat(-2.5), 0.08, 0.04)) <= np.pi / 2


def test_place_motions_and_unsupported_actions():
    objects = {
        'cube': ((0.5, 0.1, 0.0), _quat(0.0), (0.05, 0.05, 0.05)),
        'bowl': ((0.5, -0.3, 0.0), _quat(0.0), (0.15, 0.15, 0.05)),
    }
    steps = motions(SubTask('place', 'cube', 'bowl'), objects)
    assert [s[0] for s in steps][-3:] == ['above the destination', 'lower into the destination, release', 'retreat']
    assert steps[1][4] == 0.0 and steps[4][4] == 0.08  # close at the grasp, open at the release
    with pytest.raises(ValueError, match='only pick and place'):
        motions(SubTask('push', 'cube', 'bowl'), objects)
