"""Panda IK (mink) on the scene model: reachable targets are reached in simulation, unreachable ones are reported."""
import os

import numpy as np
import pytest

from twinloop_execution.kinematics import EE_SITE, PandaIk


@pytest.mark.parametrize('target', [(0.5, 0.12, 0.15), (0.4, -0.25, 0.08), (0.65, 0.2, 0.3)])
def test_reachable_target_is_reached_in_simulation(sim, target):
    result = PandaIk(sim.model).solve(sim.data.qpos.copy(), target)
    assert result.converged
    sim.follow_trajectory([2.0], [result.positions])
    sim.step(1250)
    assert np.linalg.norm(sim.data.site(EE_SITE).xpos - target) < 0.005


def test_unreachable_target_is_not_converged(sim):
    result = PandaIk(sim.model).solve(sim.data.qpos.copy(), (1.6, 0.0, 0.2))
    assert not result.converged and result.position_error > 0.3
