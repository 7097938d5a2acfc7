"""Re-anchoring, seam blending, temporal ensembling and observation synchronisation (no ROS)."""

from types import SimpleNamespace

import numpy as np
import pytest

from twinloop_execution import streaming
from twinloop_execution.streaming import point_velocities
from twinloop_execution.safety import SafetyGate, Verdict
from twinloop_vla.blending import (
    BlendConfig,
    Plan,
    RateLimit,
    TemporalEnsemble,
    anchor,
    blend_seam,
    gripper_commands,
    gripper_openings,
    joint_targets,
)
from twinloop_vla.sync import ObservationSync

DT = 0.05


def _ramp(q0, t0, n, speed=0.4):
    """n targets at t0 + (k+1) DT moving joint 0 at `speed` from q0."""
    targets = np.tile(np.asarray(q0, float), (n, 1))
    targets[:, 0] += speed * DT * np.arange(1, n + 1)
    return targets


def test_a_stale_chunk_drops_past_targets_and_continues_from_the_splice_point():
    q_obs = np.zeros(7)
    targets = _ramp(q_obs, 0.0, 8)
    q_splice = np.full(7, 0.01)  # the arm is commanded 1 cm-rad off where the policy thought
    times, positions = anchor(targets, 0.0, DT, 0.12, q_splice, q_obs=q_obs)
    assert np.allclose(positions[0], q_splice) and times[0] == 0
    kept = np.arange(1, 9) * DT > 0.12  # targets at 0.15 .. 0.40 s remain
    assert len(times) - 1 == kept.sum() == 6
    assert np.allclose(times[1:], np.arange(1, 9)[kept] * DT - 0.12)
    # the relative motion is the policy's: chunk(0.12) = 0.4 * 0.12 on joint 0, shifted onto q_splice
    expected = targets[kept] + (q_splice - np.array([0.4 * 0.12] + [0.0] * 6))
    assert np.allclose(positions[1:], expected)
    assert np.allclose(np.diff(positions[:, 0]) / np.diff(times), 0.4)  # no jump at the seam


def test_a_converging_anchor_fades_the_shift_back_to_the_policys_own_targets():
    q_obs = np.zeros(7)
    targets = _ramp(q_obs, 0.0, 8)
    q_splice = np.full(7, 0.03)  # the running plan is 3 cm-rad off the aim of the new chunk
    times, positions = anchor(targets, 0.0, DT, 0.12, q_splice, q_obs=q_obs, converge_steps=3)
    kept = np.arange(1, 9) * DT > 0.12
    offset = q_splice - np.array([0.4 * 0.12] + [0.0] * 6)
    assert np.allclose(positions[0], q_splice)  # continuous at the splice point
    assert np.allclose(positions[1:4], targets[kept][:3] + np.array([[2 / 3], [1 / 3], [0.0]]) * offset)
    assert np.allclose(positions[4:], targets[kept][3:])  # the policy's own targets from then on
    rigid = anchor(targets, 0.0, DT, 0.12, q_splice, q_obs=q_obs)[1]
    assert not np.allclose(rigid[4:], targets[kept][3:])


def test_a_chunk_from_rest_keeps_all_targets_and_an_entirely_stale_one_is_none():
    q_obs, q_rest = np.zeros(7), np.full(7, 0.005)
    times, positions = anchor(_ramp(q_obs, 0, 4), 0.0, DT, 0.0, q_rest, moving=False, q_obs=q_obs)
    assert len(times) == 5 and np.allclose(positions[1:] - positions[0], _ramp(q_obs, 0, 4))
    assert anchor(_ramp(q_obs, 0, 4), 0.0, DT, 0.5, q_rest) is None


def test_the_rtc_seam_ramps_from_the_running_plan_to_the_new_chunk():
    plan = Plan(np.arange(11) * DT, np.zeros((11, 7)), np.zeros((11, 7)))  # holding still
    times = np.arange(6) * DT
    new = np.zeros((6, 7))
    new[1:, 0] = 1.0  # a new chunk that wants to be elsewhere at once
    blended = blend_seam(plan, 0.1, times, new, blend_steps=3)
    assert blended[0, 0] == 0.0  # the splice point is the plan's
    assert np.allclose(blended[1:4, 0], [0.25, 0.5, 0.75]) and np.allclose(blended[4:, 0], 1.0)
    plan.splice(0.1, times, blended, point_velocities(times, blended, 0.0))
    assert np.isclose(plan.sample(0.1 + 2 * DT)[0], 0.5) and plan.end == pytest.approx(0.1 + 5 * DT)


def test_temporal_ensembling_weights_older_chunks_more_with_act_weights():
    ensemble = TemporalEnsemble(decay=0.5)
    t = np.arange(5) * DT
    ensemble.add(t, np.zeros((5, 7)))  # oldest
    ensemble.add(t + DT, np.ones((5, 7)))  # newer, covers DT .. 5 DT
    times, points = ensemble.segment(0.0, np.zeros(7), DT, 6)
    w_old, w_new = 1.0, np.exp(-0.5)
    assert np.isclose(points[1, 0], w_new / (w_old + w_new))  # both cover t = DT
    assert np.isclose(points[5, 0], 1.0)  # only the newer one covers t = 5 DT
    assert len(times) == 6  # nothing covers 6 DT: the segment ends there
    ensemble.forget_before(0.21)
    assert len(ensemble.chunks) == 1


def test_actions_become_arm_targets_and_bad_configs_are_refused():
    actions = np.ones((3, 8))  # 7 joints + gripper
    state = np.arange(8.0)
    assert np.allclose(joint_targets(actions, state, 'joint_position'), 1.0)
    assert np.allclose(joint_targets(actions, state, 'joint_delta'), 1.0 + np.arange(7.0))
    with pytest.raises(ValueError, match='shape'):
        joint_targets(np.ones((3, 5)), state, 'joint_position')
    with pytest.raises(ValueError, match='blending'):
        BlendConfig(blending='average')


def test_observations_are_synchronised_by_stamp_and_refused_when_stale():
    sync = ObservationSync(['front', 'wrist'], slop=0.02, max_age=0.3)
    frame = np.zeros((4, 4, 3), np.uint8)
    assert sync.latest()[0] is None
    for k in range(30):  # joint states at 50 Hz
        sync.add_joints(k * 0.02, np.full(8, k))
    sync.add_frame('front', 'color', 0.2, frame)
    obs, why = sync.latest()
    assert obs is None and 'wrist' in why
    sync.add_frame('wrist', 'color', 0.25, frame + 1)  # 50 ms apart: not one observation
    assert 'within' in sync.latest()[1]
    sync.add_frame('front', 'color', 0.4, frame + 2)
    sync.add_frame('wrist', 'color', 0.405, frame + 3)
    obs, _ = sync.latest()
    assert obs.stamp == 0.405 and obs.images.shape == (2, 4, 4, 3) and obs.images[1, 0, 0, 0] == 3
    assert obs.joint_stamp == pytest.approx(0.4) and obs.state[0] == 20  # the joint state nearest 0.405 s
    for k in range(30, 40):
        sync.add_joints(k * 0.02, np.full(8, k))  # the robot's clock runs on to 0.78 s
    obs, why = sync.latest()
    assert obs is None and 'old' in why


def _limits():
    """Seven joints at 2 rad/s and 10 rad/s^2 (a JointLimits' velocity and acceleration)."""
    return SimpleNamespace(
        velocity=np.full(7, 2.0), acceleration=np.full(7, 10.0), lower=np.full(7, -3.0), upper=np.full(7, 3.0)
    )


def _accelerations(times, positions, start_velocity):
    """Each step's acceleration as the gate estimates it (the last, to rest, left out: a chunk goes on)."""
    return SafetyGate.derivatives(times, positions, start_velocity)[1][:-1]


def test_shaping_keeps_a_chunk_within_the_limits_and_leaves_a_jump_to_the_gate():
    shaping = RateLimit.of(_limits(), BlendConfig(limit_margin=0.9, limit_tolerance=0.05))
    times = DT * np.arange(9)
    v0 = np.zeros(7)
    v0[1] = 0.5
    # a lift: on at 0.5 rad/s, then at 1.0 rad/s from one step to the next (10 rad/s^2 asked for)
    positions = np.zeros((9, 7))
    positions[:, 1] = np.concatenate([[0.0, 0.025], 0.025 + 0.05 * np.arange(1, 8)])
    assert np.abs(_accelerations(times, positions, v0)).max() > 9.9
    shaped = shaping.shape(times, positions, v0)
    assert np.allclose(shaped[0], positions[0])
    assert np.abs(_accelerations(times, shaped, v0)).max() <= 9.0 + 1e-9
    assert 0 < np.abs(shaped - positions).max() <= 0.05
    assert np.abs(shaped[-1] - positions[-1]).max() < 0.01  # it catches up
    # from rest the first step may take half the velocity change (the gate's 2 dq / dt^2 estimate)
    from_rest = shaping.shape(times, positions, None)
    assert np.abs(_accelerations(times, from_rest, None)).max() <= 9.0 + 1e-9
    # a 0.3 rad jump, a NaN: unchanged, for the gate to refuse
    jump = positions.copy()
    jump[3:, 1] += 0.3
    assert np.array_equal(shaping.shape(times, jump, v0), jump)
    broken = positions.copy()
    broken[4, 1] = np.nan
    assert np.array_equal(shaping.shape(times, broken, v0), broken, equal_nan=True)
    # targets 0.03 rad beyond the joint range (at 3 rad) end inside it; 0.3 rad beyond: left to the gate
    beyond = np.zeros((9, 7))
    beyond[:, 2] = np.linspace(2.93, 3.03, 9)
    clipped = shaping.shape(times, beyond, np.zeros(7))
    assert clipped[:, 2].max() <= 3.0 - 0.01 + 1e-9 and np.abs(clipped - beyond).max() <= 0.05
    assert np.array_equal(
        shaping.shape(times, beyond + [0, 0, 0.3, 0, 0, 0, 0], np.zeros(7)), beyond + 0.3 * np.eye(7)[2]
    )
    assert RateLimit.of(_limits(), BlendConfig(limit_margin=0.0)) is None
    with pytest.raises(ValueError, match='limit_margin'):
        BlendConfig(limit_margin=1.5)


def test_a_plan_knows_the_velocity_the_stream_commits_at_every_splice_point():
    """The runner shapes each chunk from the velocity the stream has committed at its splice point (the
    gate judges the chunk's first step from it): the Plan, fed the chunks and velocities the stream
    accepted, says the same velocity as the stream anywhere along them, splices off the grid included."""
    stream = streaming.JointStream('s', np.zeros(7), np.full(7, 10.0), np.full(7, 5000.0), lambda *a: Verdict(True))
    shaping = RateLimit.of(_limits(), BlendConfig(limit_margin=0.9))
    rng = np.random.default_rng(3)
    plan, splice = None, 0.0
    for k in range(6):
        times = np.concatenate([[0.0], rng.uniform(0.01, DT) + DT * np.arange(8)])  # off the control grid
        start = np.zeros(7) if plan is None else plan.velocity(splice)
        q0 = np.zeros(7) if plan is None else plan.sample(splice)
        targets = q0 + np.cumsum(rng.normal(0.0, 0.03, (9, 7)), axis=0) * (np.arange(9) > 0)[:, None]
        positions = shaping.shape(times, targets, None if plan is None else start)
        velocities = point_velocities(times, positions, start)
        assert np.abs(_accelerations(times, positions, start)).max() <= 9.0 + 1e-9 or np.array_equal(positions, targets)
        stream.splice(splice - 0.1, splice, times, positions, velocities)
        if plan is None:
            plan = Plan(splice + times, positions, velocities)
        else:
            plan.splice(splice, times, positions, velocities)
        for t in splice + np.linspace(0.0, times[-1], 23):
            q, v = stream.commanded(t)
            assert np.allclose(plan.sample(t), q) and np.allclose(plan.velocity(t), v)
        splice += rng.uniform(0.1, times[-1])


def test_the_rtc_seam_ramps_the_gripper_opening_before_open_or_shut():
    """As the stepped evaluation blends every action dimension: a close the new chunk asks for at once
    while the running one still holds open lands two steps into a three-step seam."""
    actions = np.zeros((8, 8))  # the new chunk: shut from its first action
    assert gripper_commands(actions, 0, 5) == [0.0] * 5
    assert gripper_commands(actions, 0, 5, running=[0.08, 0.08, 0.08]) == [0.08, 0.08, 0.0, 0.0, 0.0]
    assert gripper_commands(actions, 0, 5, running=[np.nan, 0.08, np.nan]) == [0.0, 0.08, 0.0, 0.0, 0.0]
    assert gripper_commands(actions, 6, 4, running=[0.08] * 3) == [0.08, 0.08, -1.0, -1.0]  # keep past the end
    plan = Plan(np.arange(4) * DT, np.zeros((4, 7)), np.zeros((4, 7)), [0.08, 0.08, 0.0, 0.0])
    assert plan.opening(0.5 * DT) == 0.08 and plan.opening(2 * DT) == 0.0 and np.isnan(plan.opening(4 * DT))
    plan.splice(DT, np.array([0.0, DT]), np.zeros((2, 7)), np.zeros((2, 7)), gripper_openings(actions, 0, 2))
    assert plan.opening(1.5 * DT) == 0.0 and np.isnan(plan.opening(2.5 * DT))
