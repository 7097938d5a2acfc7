"""The safety gate refuses every kind of bad trajectory with a reason, and a fuzz run finds no
trajectory that passes while violating a limit (tests/test_gate_fuzz.py fuzzes it against an
independent oracle). The fixture builds the gate the way the execution node does (with the twin's
grip_positions, which the gate takes as the whole arm's link_points).

Review findings, one test each (all failed before the fix): t = 0 starts within start_tolerance,
the way from the measured state to a t = 0 first point swept, rest at both ends, streamed chunks
with start_velocity, jerk limits (bang-bang refused, ruckig output passing), non-finite states and
ages, every link in the workspace and out of keep-out zones, a size cap, a sweep that cannot step
over a 1 cm object."""

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
    gate = SafetyGate(limits, config, kin.link_points, kin.collisions)
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
        gate.link_points,
        gate.collisions,
    )
    verdict = _check(low_ceiling, sim, t, q)
    assert verdict.check == 'workspace' and 'leaves the workspace' in verdict.reason
    keep_out = SafetyGate(
        gate.limits,
        dataclasses.replace(
            gate.config, keep_out=[Box('fixture', np.array([0.45, -0.1, 0.3]), np.array([0.55, 0.1, 0.5]))]
        ),
        gate.link_points,
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
            points = gate.link_points(gate.dense(np.vstack([start, q])))
            assert config.workspace.contains(points).all()
    print(f'fuzz: 3000 trajectories in {time.monotonic() - started:.1f} s: {counts}')
    assert counts['accepted'] > 0 and len(counts) >= 6, counts


# --- review findings: each one a test --------------------------------------------------------------------------


def _variant(gate, **changes):
    """The gate with some configuration changed (same limits, points and twin)."""
    return SafetyGate(gate.limits, dataclasses.replace(gate.config, **changes), gate.link_points, gate.collisions)


def _away(start, axis=0, distance=0.3):
    goal = start.copy()
    goal[axis] += distance
    return goal


def test_first_point_at_t0_must_be_within_the_start_tolerance(setup):
    """t = 0 means the first point IS the start: it may differ from the measured joints by
    start_tolerance (0.05 rad), not by max_step (0.25 rad)."""
    sim, gate = setup
    start = sim.arm_positions()
    t, q = _slow_path(start + 0.2, start + 0.2 + np.array([0.3, 0, 0, 0.2, 0, 0, 0]))
    verdict = _check(gate, sim, np.concatenate([[0.0], t]), np.vstack([start + 0.2, q]))
    assert verdict.check == 'start' and '0.05' in verdict.reason, (verdict.check, verdict.reason)
    t, q = _slow_path(start + 0.04, start + 0.04 + np.array([0.3, 0, 0, 0.2, 0, 0, 0]))
    verdict = _check(gate, sim, np.concatenate([[0.0], t]), np.vstack([start + 0.04, q]))
    assert verdict.ok, verdict.reason


def test_segment_from_the_measured_state_to_a_t0_first_point_is_swept(setup):
    """The arm moves from where it is to the first point even when that point has t = 0: a keep-out
    zone around the measured grip point refuses the trajectory."""
    sim, gate = setup
    start = sim.arm_positions()
    grip = sim.data.site('panda_grip_site').xpos.copy()
    zone = Box('around_the_hand', grip - 0.004, grip + 0.004)
    first = start + np.array([0.04, 0, 0, 0, 0, 0, 0])
    t, q = _slow_path(first, first + np.array([0.3, 0, 0, 0, 0, 0, 0]))
    verdict = _check(_variant(gate, keep_out=[zone]), sim, np.concatenate([[0.0], t]), np.vstack([first, q]))
    assert verdict.check == 'keep_out' and 'around_the_hand' in verdict.reason, (verdict.check, verdict.reason)


def _cruise(start, speed, dt=0.05, cruise=0.3, joint=0, ramp=True, stop=True):
    """Joint `joint` cruising at `speed` [rad/s]; smooth (cosine) ramps up and down unless switched off."""
    t, v = [], []
    if ramp:
        ramp_t = np.arange(dt, 0.5 + 1e-9, dt)
        t += list(ramp_t)
        v += list(speed * (0.5 - 0.5 * np.cos(np.pi * ramp_t / 0.5)))
    t0 = t[-1] if t else 0.0
    t += list(t0 + np.arange(dt, cruise + 1e-9, dt))
    v += [speed] * (len(t) - len(v))
    if stop:
        t0 = t[-1]
        stop_t = np.arange(dt, 0.5 + 1e-9, dt)
        t += list(t0 + stop_t)
        v += list(speed * (0.5 + 0.5 * np.cos(np.pi * stop_t / 0.5)))
    t, v = np.array(t), np.array(v)
    dts = np.diff(np.concatenate([[0.0], t]))
    q = np.repeat(start[None], len(t), axis=0)
    q[:, joint] += np.cumsum(v * dts)
    return t, q


def test_starting_at_full_speed_from_rest_is_refused(setup):
    sim, gate = setup
    start = sim.arm_positions()
    t, q = _cruise(start, 2.0, ramp=True)
    assert _check(gate, sim, t, q).ok, _check(gate, sim, t, q).reason
    t, q = _cruise(start, 2.0, ramp=False)  # first point at 0.05 s already 0.1 rad away: ~80 rad/s^2
    verdict = _check(gate, sim, t, q)
    assert verdict.check == 'acceleration_limits', (verdict.check, verdict.reason)
    verdict = _check(gate, sim, np.concatenate([[0.0], t]), np.vstack([start, q]))  # the same from t = 0
    assert verdict.check == 'acceleration_limits', (verdict.check, verdict.reason)


def test_stopping_dead_from_full_speed_is_refused(setup):
    sim, gate = setup
    t, q = _cruise(sim.arm_positions(), 2.0, stop=False)
    verdict = _check(gate, sim, t, q)
    assert verdict.check == 'acceleration_limits' and 'rest' in verdict.reason, (verdict.check, verdict.reason)


def test_streamed_chunk_starts_with_the_given_velocity_and_must_end_at_rest(setup):
    """A policy chunk splices into a motion at speed: with start_velocity it passes, from rest it
    would be a jump in speed, against the motion it is refused; it must still brake to rest."""
    sim, gate = setup
    start = sim.arm_positions()
    v0 = np.array([1.0, 0, 0, 0, 0, 0, 0])
    t, q = _cruise(start, 1.0, ramp=False)
    assert _check(gate, sim, t, q, start_velocity=v0).ok, _check(gate, sim, t, q, start_velocity=v0).reason
    with_t0 = (np.concatenate([[0.0], t]), np.vstack([start, q]))
    assert _check(gate, sim, *with_t0, start_velocity=v0).ok
    assert _check(gate, sim, t, q).check == 'acceleration_limits'
    assert _check(gate, sim, t, q, start_velocity=-v0).check == 'acceleration_limits'
    t, q = _cruise(start, 1.0, ramp=False, stop=False)
    assert _check(gate, sim, t, q, start_velocity=v0).check == 'acceleration_limits'
    for bad in ([1.0] * 6, [np.nan] * 7, 'fast'):
        assert _check(gate, sim, t, q, start_velocity=bad).check == 'structure'
    too_fast = np.array([3.0, 0, 0, 0, 0, 0, 0])
    assert _check(gate, sim, t, q, start_velocity=too_fast).check == 'velocity_limits'


def test_jerk_limits_come_from_the_description(setup):
    _, gate = setup
    assert np.allclose(gate.limits.jerk, [7500, 3750, 5000, 6250, 7500, 10000, 10000])
    assert gate.config.jerk_margin > 0


def _bang_bang(start, joint, accel, dt, phase=0.1):
    """Rest to rest: +accel for `phase` seconds, then -accel: acceleration switches instantly."""
    t = np.arange(dt, 2 * phase + 1e-9, dt)
    x = np.where(t <= phase, 0.5 * accel * t**2, accel * phase**2 - 0.5 * accel * (2 * phase - t) ** 2)
    q = np.repeat(start[None], len(t), axis=0)
    q[:, joint] += x
    return t, q


def test_bang_bang_jerk_is_refused(setup):
    """panda_joint2 switching between +7 and -7 rad/s^2 (its limit is 7.5) sampled at 1 kHz: about
    7000 rad/s^3 where the limit is 3750."""
    sim, gate = setup
    t, q = _bang_bang(sim.arm_positions(), 1, 7.0, 0.001)
    verdict = _check(gate, sim, t, q)
    assert verdict.check == 'jerk_limits' and 'panda_joint2' in verdict.reason, (verdict.check, verdict.reason)
    t, q = _bang_bang(sim.arm_positions(), 1, 7.0, 0.05)  # the same profile at 20 Hz: 280 rad/s^3
    assert _check(gate, sim, t, q).ok, _check(gate, sim, t, q).reason


@pytest.mark.parametrize('scale', [0.5, 1.0])
def test_ruckig_paths_pass(setup, scale):
    """What the execution node sends (twinloop_execution.trajectory: jerk-limited, rest to rest at each
    waypoint, sampled every 0.05 s) passes at the node's scale (0.5) and at the full limits. Sampled at
    1 kHz the same profiles reach the limits in the gate's estimates (they are tight) without exceeding them."""
    from twinloop_execution import trajectory

    sim, gate = setup
    jerk = trajectory.jerk_limits(os.path.join(ROOT, 'config', 'panda_joint_limits.yaml'), JOINTS)
    assert np.allclose(jerk, gate.limits.jerk)
    start = sim.arm_positions()
    ik = PandaIk(sim.model)
    goals = [ik.solve(sim.data.qpos.copy(), p).positions for p in ((0.5, 0.1, 0.25), (0.45, -0.2, 0.15))]
    limits = gate.limits
    for period in (0.05, 0.001):
        for waypoints in ([start, goals[0]], [start, goals[0], goals[1], start], [start, start + 0.3]):
            path = trajectory.parametrize(
                np.array(waypoints), limits.velocity, limits.acceleration, jerk, scale=scale, period=period
            )
            verdict = _check(gate, sim, path.times, path.positions)
            assert verdict.ok, (scale, period, verdict.check, verdict.reason)
            _, acceleration, jerks = gate.derivatives(
                np.concatenate([[0.0], path.times]), np.vstack([start, path.positions])
            )
            peak = max((np.abs(acceleration) / limits.acceleration).max(), (np.abs(jerks) / limits.jerk).max())
            if period == 0.001 and waypoints[-1] is not start:
                assert peak > 0.99 * scale, peak
            assert peak <= scale * (1 + 1e-9)


def test_non_finite_state_and_bad_ages_are_refused(setup):
    sim, gate = setup
    start = sim.arm_positions()
    t, q = _slow_path(start, start + 0.2)
    for current in (np.full(7, np.nan), np.where(np.arange(7) == 3, np.inf, start)):
        verdict = _check(gate, sim, t, q, current=current)
        assert verdict.check == 'start' and 'finite' in verdict.reason, (verdict.check, verdict.reason)
    for age in (np.nan, -0.1, np.inf, -np.inf):
        verdict = _check(gate, sim, t, q, state_age=age)
        assert verdict.check == 'watchdog' and 'joint state' in verdict.reason, (age, verdict.check, verdict.reason)
        verdict = _check(gate, sim, t, q, perception_age=age)
        assert verdict.check == 'watchdog' and 'object poses' in verdict.reason, (age, verdict.check, verdict.reason)


def test_elbow_and_forearm_are_held_to_the_workspace_and_keep_out_zones(setup):
    """Only joint 7 turns: the grip point stays put, the elbow (panda_link3/4, about 0.64 m high) and
    the forearm (panda_link4 -> panda_link5) are where they are."""
    sim, gate = setup
    start = sim.arm_positions()
    t, q = _slow_path(start, start + np.array([0, 0, 0, 0, 0, 0, 0.5]))
    assert _check(gate, sim, t, q).ok
    ceiling = Box('workspace', np.array([-0.2, -0.75, 0.0]), np.array([0.95, 0.75, 0.6]))
    verdict = _check(_variant(gate, workspace=ceiling), sim, t, q)
    assert verdict.check == 'workspace' and 'panda_link' in verdict.reason, (verdict.check, verdict.reason)
    elbow = Box('elbow_zone', np.array([-0.12, -0.05, 0.6]), np.array([0.02, 0.05, 0.7]))
    verdict = _check(_variant(gate, keep_out=[elbow]), sim, t, q)
    assert verdict.check == 'keep_out' and 'elbow_zone' in verdict.reason, (verdict.check, verdict.reason)
    forearm = Box('forearm_zone', np.array([0.16, -0.02, 0.6]), np.array([0.2, 0.02, 0.67]))  # no body origin inside
    verdict = _check(_variant(gate, keep_out=[forearm]), sim, t, q)
    assert verdict.check == 'keep_out' and 'forearm_zone' in verdict.reason, (verdict.check, verdict.reason)


def test_huge_trajectories_are_refused_before_any_work(setup):
    sim, gate = setup
    n = 10**6
    t = np.arange(1, n + 1) * 0.01
    q = np.repeat(sim.arm_positions()[None], n, axis=0)
    verdict = _check(gate, sim, t, q, state_age=5.0)  # the size first: nothing else is looked at
    assert verdict.check == 'size' and str(gate.config.max_points) in verdict.reason, (verdict.check, verdict.reason)
    as_lists = list(t), list(q)
    for args in ((t, q), as_lists):
        started = time.monotonic()
        verdict = _check(gate, sim, *args)
        assert verdict.check == 'size' and time.monotonic() - started < 0.5


def test_dense_sweep_moves_every_link_point_at_most_the_resolution(setup):
    """Between consecutive samples of the sweep no point on the arm moves more than 5 mm."""
    sim, gate = setup
    start = sim.arm_positions()
    goal = start + np.array([0.25, -0.25, 0.25, 0.25, -0.25, 0.25, 0.25])
    dense = gate.dense(np.vstack([start, goal]))
    points = gate.link_points(dense)
    points = points.reshape(len(dense), -1, 3)
    moved = np.linalg.norm(np.diff(points, axis=0), axis=-1).max()
    assert moved <= 0.005 + 1e-9, moved
    started = time.monotonic()
    many = start + np.linspace(0, 1, 5000)[:, None] * (goal - start)
    assert len(gate.dense(many)) >= len(dense) and time.monotonic() - started < 1.0


SPECK = (0.285, 0.52, 0.4698)  # where a 1 cm cube sits in the hand's path between two samples 0.02 rad apart
SPECK_GOAL = np.array([0.8107, -0.2094, 0.843, -2.2756, -0.3167, 2.5654, 0.3113])


def _old_dense(q, resolution=0.02):
    """The sweep before the review: at most 0.02 rad per joint between samples."""
    out = [q[0]]
    for a, b in zip(q[:-1], q[1:]):
        n = max(1, int(np.ceil(np.abs(b - a).max() / resolution)))
        out.extend(a + (b - a) * (i / n) for i in range(1, n + 1))
    return np.array(out)


def test_a_one_centimetre_object_is_not_stepped_over(setup):
    """A fast, coarse motion (8 points in 2 s) whose hand sweeps past a 1 cm cube floating in the
    twin: the old 0.02 rad sweep stepped over it (the hand moves up to 2.6 cm between its samples),
    the gate's sweep (at most 5 mm per sample for any point) finds the contact."""
    _, gate = setup
    speck = scene.ObjectConfig(id='speck', kind='cube', label='speck', params={'size': 0.01}, pos=SPECK, mass=0.01)
    kin = ArmKinematics(scene.build_spec(scene.SceneConfig([speck], [])).compile())
    home = np.array(scene.HOME)
    t = np.arange(1, 9) * 0.25
    q = home + (0.5 - 0.5 * np.cos(np.pi * t / 2.0))[:, None] * (SPECK_GOAL - home)
    assert not kin.collisions(_old_dense(np.vstack([home, q])))  # stepped over
    twin_gate = SafetyGate(gate.limits, gate.config, kin.link_points, kin.collisions)
    verdict = twin_gate.check(JOINTS, t, q, current=home, state_age=0.01, perception_age=0.1)
    assert verdict.check == 'collision' and 'speck' in verdict.reason, (verdict.check, verdict.reason)
    empty = ArmKinematics(scene.build_spec(scene.SceneConfig([], [])).compile())
    clear_gate = SafetyGate(gate.limits, gate.config, empty.link_points, empty.collisions)
    verdict = clear_gate.check(JOINTS, t, q, current=home, state_age=0.01, perception_age=0.1)
    assert verdict.ok, verdict.reason


def test_link_points_follow_the_model_and_the_reach_bounds_the_sweep(setup):
    """ArmKinematics.link_points (vectorised) gives MuJoCo's body and site positions; the reach the
    gate's sweep relies on covers the model's own bound; a caller handing the gate grip_positions
    (the execution node) gets the whole arm checked."""
    import mujoco

    from twinloop_execution.kinematics import LINK_POINTS
    from twinloop_execution.safety import PANDA_REACH

    sim, gate = setup
    kin = ArmKinematics(sim.model)
    rng = np.random.default_rng(1)
    qs = rng.uniform(gate.limits.lower, gate.limits.upper, (50, 7))
    points = kin.link_points(qs)
    assert points.shape == (50, len(LINK_POINTS), 3)
    data = mujoco.MjData(sim.model)
    bodies = [sim.model.body(name).id for name in LINK_POINTS[:-1]]
    for q, p in zip(qs, points):
        data.qpos[kin.arm_qpos] = q
        mujoco.mj_kinematics(sim.model, data)
        assert np.allclose(p[:-1], data.xpos[bodies], atol=1e-12)
        assert np.allclose(p[-1], data.site('panda_grip_site').xpos, atol=1e-12)
    assert np.allclose(kin.grip_positions(qs), points[:, -1], atol=1e-12)
    reach = kin.joint_reach()
    assert np.all(reach + 0.1 <= PANDA_REACH), (reach, PANDA_REACH)  # 0.1 m left for a held object
    assert gate.link_points == gate.link_points.__self__.link_points and gate.point_names == LINK_POINTS
    # the bound holds: no arm point moves more than sum(reach * |dq|) along a joint-space segment
    a, b = qs[:2]
    fine = kin.link_points(a + np.linspace(0, 1, 2001)[:, None] * (b - a))
    travel = np.linalg.norm(np.diff(fine, axis=0), axis=-1).sum(axis=0).max()
    assert travel <= np.abs(b - a) @ reach


def test_holds_limits_and_internal_errors(setup):
    sim, gate = setup
    start = sim.arm_positions()
    assert _check(gate, sim, [0.0], [start]).ok  # hold where it is
    assert _check(gate, sim, [0.0], [start], start_velocity=np.full(7, 0.1)).check == 'acceleration_limits'
    t, q = _slow_path(start, start + 0.5)
    verdict = _check(_variant(gate, max_sweep_samples=100), sim, t, q)
    assert verdict.check == 'size' and 'sweep' in verdict.reason, verdict.reason

    def broken(qs):
        raise RuntimeError('no model')

    verdict = _check(SafetyGate(gate.limits, gate.config, broken), sim, t, q)
    assert verdict.check == 'internal' and 'no model' in verdict.reason
    for names in (None, 7, [1, 2, 3, 4, 5, 6, 7], [JOINTS]):
        assert _check(gate, sim, t, q, names=names).check == 'structure'
    for current in ('home', start[:6], [start]):
        assert _check(gate, sim, t, q, current=current).check == 'start'
    for age in ('fresh', True, [0.1]):
        assert _check(gate, sim, t, q, state_age=age).check == 'watchdog'
