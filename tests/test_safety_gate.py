"""The safety gate refuses every kind of bad trajectory with a reason, and a fuzz run finds no
trajectory that passes while violating a limit."""

import dataclasses
import os
import time

import numpy as np
import pytest

from twinloop_execution.kinematics import ArmKinematics, PandaIk
from twinloop_execution.safety import Box, JointLimits, SafetyConfig, SafetyGate
from twinloop_twin import scene, world

ROOT = os.environ['TWINLOOP_ROOT']
JOINTS = list(scene.ARM_JOINTS)


@pytest.fixture(scope='module')
def setup():
    sim = world.SimWorld(scene.SceneConfig.from_yaml(os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')))
    limits = JointLimits.from_description(
        os.path.join(ROOT, 'urdf', 'panda.urdf'), os.path.join(ROOT, 'config', 'panda_joint_limits.yaml'), JOINTS
    )
    config = SafetyConfig.from_yaml(os.path.join(ROOT, 'config', 'safety.yaml'))
    kin = ArmKinematics(sim.model, sim.data)
    gate = SafetyGate(limits, config, kin.grip_positions, kin.collisions)
    yield sim, gate
    sim.close()


def _slow_path(start, goal, speed=0.5, dt=0.05):
    """Rest-to-rest linear joint path with a smooth (cosine) profile."""
    duration = max(1.0, np.abs(goal - start).max() / speed * 1.6)
    t = np.arange(dt, duration + 1e-9, dt)
    s = 0.5 - 0.5 * np.cos(np.pi * t / duration)
    return t, start + s[:, None] * (goal - start)


def _check(gate, sim, t, q, names=JOINTS, **kw):
    kw.setdefault('current', sim.arm_positions())
    kw.setdefault('state_age', 0.01)
    kw.setdefault('perception_age', 0.1)
    return gate.check(names, t, q, **kw)


def test_clean_motion_passes(setup):
    sim, gate = setup
    start = sim.arm_positions()
    goal = PandaIk(sim.model).solve(sim.data.qpos.copy(), (0.5, 0.1, 0.25)).positions
    t, q = _slow_path(start, goal)
    verdict = _check(gate, sim, t, q)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize(
    'mutate, check',
    [
        (lambda t, q, n: (t, q, n[:-1]), 'structure'),
        (lambda t, q, n: (t, q, n[:-1] + ['elbow']), 'structure'),
        (lambda t, q, n: (t, q, n[:-1] + [n[0]]), 'structure'),
        (lambda t, q, n: (t, np.where(np.arange(q.size).reshape(q.shape) == 5, np.nan, q), n), 'structure'),
        (lambda t, q, n: (t[::-1], q, n), 'structure'),
        (lambda t, q, n: ([], q[:0], n), 'structure'),
        (lambda t, q, n: (t, q[:, :6], n), 'structure'),
        (
            lambda t, q, n: (t, q + np.array([0, 0, 0, 3.5, 0, 0, 0]) * np.linspace(0, 1, len(t))[:, None], n),
            'position_limits',
        ),
        (lambda t, q, n: (t / 20, q, n), 'velocity_limits'),
    ],
)
def test_bad_trajectories_refused(setup, mutate, check):
    sim, gate = setup
    goal = sim.arm_positions() + np.array([0.3, 0.2, 0, 0.2, 0, 0, 0.3])
    t, q = _slow_path(sim.arm_positions(), goal)
    t2, q2, names = mutate(t, q, JOINTS)
    verdict = _check(gate, sim, t2, q2, names)
    assert not verdict.ok and verdict.check == check, (verdict.check, verdict.reason)
    assert verdict.reason


def test_reordered_joint_names_are_mapped(setup):
    sim, gate = setup
    t, q = _slow_path(sim.arm_positions(), sim.arm_positions() + 0.2)
    order = [3, 1, 6, 0, 2, 5, 4]
    assert _check(gate, sim, t, q[:, order], [JOINTS[i] for i in order]).ok


def test_step_start_watchdog_workspace_and_table(setup):
    sim, gate = setup
    start = sim.arm_positions()
    t, q = _slow_path(start, start + 0.4)
    assert _check(gate, sim, [0.5, 3.0], [start + 0.05, start + 0.4]).check == 'step_size'
    assert _check(gate, sim, t, q, current=start + 0.3).check == 'start'
    assert _check(gate, sim, t, q, state_age=2.0).check == 'watchdog'
    assert _check(gate, sim, t, q, state_age=None).check == 'watchdog'
    assert _check(gate, sim, t, q, perception_age=60).check == 'watchdog'
    ik = PandaIk(sim.model)
    high = ik.solve(sim.data.qpos.copy(), (0.5, 0.0, 0.45))
    assert high.converged
    t, q = _slow_path(start, high.positions)
    low_ceiling = SafetyGate(
        gate.limits,
        dataclasses.replace(gate.config, workspace=Box('workspace', np.array([-1, -1, 0.0]), np.array([1, 1, 0.42]))),
        gate.grip_positions,
        gate.collisions,
    )
    verdict = _check(low_ceiling, sim, t, q)
    assert verdict.check == 'workspace' and 'leaves the workspace' in verdict.reason
    keep_out = SafetyGate(
        gate.limits,
        dataclasses.replace(
            gate.config, keep_out=[Box('fixture', np.array([0.45, -0.1, 0.3]), np.array([0.55, 0.1, 0.5]))]
        ),
        gate.grip_positions,
        gate.collisions,
    )
    verdict = _check(keep_out, sim, t, q)
    assert verdict.check == 'keep_out' and 'fixture' in verdict.reason
    qfull = sim.data.qpos.copy()
    above = ik.solve(qfull, (0.3, 0.35, 0.15)).positions
    qfull[sim.arm_qpos] = above
    low = ik.solve(qfull, (0.3, 0.35, 0.004)).positions  # fingertips below the table surface
    t1, q1 = _slow_path(start, above)
    t2, q2 = _slow_path(above, low)
    verdict = _check(gate, sim, np.concatenate([t1, t1[-1] + t2]), np.vstack([q1, q2]))
    assert verdict.check == 'collision' and 'table' in verdict.reason, verdict.reason


def test_fuzz_no_violation_passes(setup):
    """Thousands of random trajectories: every accepted one satisfies every limit (checked independently)."""
    sim, gate = setup
    rng = np.random.default_rng(0)
    limits, config = gate.limits, gate.config
    start = sim.arm_positions()
    counts = {'accepted': 0}
    started = time.monotonic()
    for i in range(3000):
        n = int(rng.integers(0, 12))
        kind = rng.integers(0, 6)
        t = np.cumsum(rng.uniform(0.05, 1.0, n))
        q = start + rng.normal(0, rng.choice([0.02, 0.1, 0.5]), (n, 7)).cumsum(axis=0)
        names = list(JOINTS)
        if kind == 0:
            q[rng.integers(0, max(n, 1)) if n else 0 :] *= rng.choice([np.nan, np.inf, -np.inf, 1e9]) if n else 1
        elif kind == 1:
            names[rng.integers(0, 7)] = rng.choice(['panda_joint8', '', 'panda_finger_joint1'])
        elif kind == 2:
            t = t[::-1] if n > 1 else t - 5
        elif kind == 3:
            q = q[:, : int(rng.integers(0, 7))]
        verdict = _check(gate, sim, t, q, names)
        key = 'accepted' if verdict.ok else verdict.check
        counts[key] = counts.get(key, 0) + 1
        if verdict.ok:
            assert names == JOINTS and np.all(np.isfinite(q)) and np.all(np.diff(t) > 0)
            assert np.all(q >= limits.lower) and np.all(q <= limits.upper)
            full_t, full_q = np.concatenate([[0], t]), np.vstack([start, q])
            assert np.all(np.abs(np.diff(full_q, axis=0)) / np.diff(full_t)[:, None] <= limits.velocity + 1e-9)
            assert np.abs(np.diff(q, axis=0)).max(initial=0) <= config.max_step
            points = gate.grip_positions(gate.dense(q))
            assert config.workspace.contains(points).all()
    print(f'fuzz: 3000 trajectories in {time.monotonic() - started:.1f} s: {counts}')
    assert counts['accepted'] > 0 and len(counts) >= 6, counts
