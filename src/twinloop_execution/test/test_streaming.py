"""Streamed chunks without ROS: they splice onto the commanded path without stopping, every
committed path ends at rest within the limits, and chunks that do not continue the commanded
state, come late or are refused by the gate change nothing."""

from types import SimpleNamespace

import numpy as np
import pytest

from twinloop_execution.streaming import ChunkRefused, JointStream, StreamConfig

ACC, JERK = np.full(7, 15.0), np.full(7, 7500.0)
Q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785])
CONFIG = StreamConfig(start_lead=0.3)  # a stream at rest starts 0.3 s ahead


def _accept(times, positions, current, start_velocity):
    return SimpleNamespace(ok=True, reason='', check='')


def _wave(t):
    """A smooth joint-1 motion from rest that never stops: velocity 0.3 (1 - exp(-5 t)) rad/s."""
    q = np.tile(Q0, (len(t), 1))
    q[:, 0] += 0.3 * (t - (1 - np.exp(-5 * t)) / 5)
    v = np.zeros_like(q)
    v[:, 0] = 0.3 * (1 - np.exp(-5 * t))
    return q, v


def _chunk(start, duration=0.4, dt=0.05):
    t = np.arange(0, duration + 1e-9, dt)
    q, v = _wave(start + t)
    return t, q, v


def test_chunks_continue_without_stopping_and_every_path_ends_at_rest():
    stream, now = JointStream('s', Q0, ACC, JERK, _accept, CONFIG), 0.0
    for k in range(5):
        # each chunk splices 0.3 s after the previous one, inside it; the first start_lead (0.3 s) from now
        t, q, v = _chunk(0.05 + 0.3 * k)
        times, positions, velocities = stream.splice(now, 0.3 + 0.3 * k if k else -1, t, q, v)
        assert np.abs(velocities[-1]).max() == 0.0  # committed motion ends at rest
        acceleration = np.diff(velocities, axis=0) / np.diff(times)[:, None]
        assert np.abs(acceleration).max() < 15.0 + 1e-6
        now = 0.3 + 0.3 * k + 0.2
    path = stream.path
    moving = (path.times > 0.35) & (path.times < 1.55)
    assert np.abs(path.velocities[moving, 0]).min() > 0.05  # never stopped between chunks
    assert np.abs(np.diff(path.positions[:, 0])).max() < 0.02  # and never jumped


def test_starved_stream_brakes_to_rest_and_brake_now_stops_within_limits():
    stream = JointStream('s', Q0, ACC, JERK, _accept, CONFIG)
    t, q, v = _chunk(0.05, duration=0.5)
    stream.splice(0.0, -1, t, q, v)
    end_q, end_v = stream.commanded(stream.path.end)
    assert np.abs(end_v).max() == 0.0 and end_q[0] > q[-1, 0]  # the tail goes on a little, then rests
    times, positions, velocities = stream.brake(0.5)
    assert times[0] == 0.5 and np.abs(velocities[-1]).max() == 0.0 and times[-1] < 1.0
    assert np.abs(np.diff(velocities, axis=0) / np.diff(times)[:, None]).max() < 15.0 + 1e-6


@pytest.mark.parametrize(
    'change, check',
    [
        (lambda t, q, v: (t, q + 0.05, v), 'continuity'),  # does not start at the commanded position
        (lambda t, q, v: (t, q, v + 1.0), 'continuity'),  # nor at the commanded velocity
        (lambda t, q, v: (t[:2] * 0.1, q[:2], v[:2]), 'structure'),  # too short
        (lambda t, q, v: (t, np.where(np.arange(len(t))[:, None] == 3, np.nan, q), v), 'structure'),
        (lambda t, q, v: (t + 0.1, q, v), 'structure'),  # does not start at the splice point
    ],
)
def test_malformed_or_discontinuous_chunks_are_refused_and_change_nothing(change, check):
    stream = JointStream('s', Q0, ACC, JERK, _accept, CONFIG)
    t, q, v = _chunk(0.05)
    stream.splice(0.0, -1, t, q, v)
    before = stream.path
    t, q, v = _chunk(0.35)
    stream.splice(0.1, 0.6, t, q, v)  # unchanged, the chunk continues the commanded state
    stream.path = before
    with pytest.raises(ChunkRefused) as refused:
        stream.splice(0.1, 0.6, *change(t, q, v))
    assert refused.value.check == check and stream.path is before


def test_a_gate_slower_than_the_lead_makes_the_chunk_late():
    stream = JointStream('s', Q0, ACC, JERK, _accept, CONFIG)
    with pytest.raises(ChunkRefused, match='passed while the chunk was checked') as refused:
        stream.splice(0.0, -1, *_chunk(0.05), clock=lambda: 0.5)  # the gate took 0.5 s; the splice was at 0.3
    assert refused.value.check == 'late' and stream.chunks == 0


def test_late_chunks_and_gate_refusals_change_nothing():
    refusals = []

    def gate(times, positions, current, start_velocity):
        refusals.append(len(times))
        return SimpleNamespace(ok=len(refusals) == 1, reason='too fast', check='velocity_limits')

    stream = JointStream('s', Q0, ACC, JERK, gate, CONFIG)
    t, q, v = _chunk(0.05)
    stream.splice(0.0, -1, t, q, v)
    before = stream.path
    with pytest.raises(ChunkRefused, match='not ahead of now'):
        stream.splice(0.3, 0.25, *_chunk(0.25))
    with pytest.raises(ChunkRefused, match='safety gate') as refused:
        stream.splice(0.1, 0.6, *_chunk(0.35))
    assert refused.value.check == 'velocity_limits' and stream.path is before


def test_per_point_gripper_openings_fall_due_at_their_points_and_a_splice_replaces_the_later_ones():
    stream = JointStream('s', Q0, ACC, JERK, _accept, CONFIG)
    t, q, v = _chunk(0.05)  # 9 points, 0.05 s apart, from rest: spliced start_lead (0.3 s) ahead
    stream.splice(0.0, -1, t, q, v, gripper_widths=[0.08] * 3 + [0.0] * 5 + [-1.0])
    assert stream.gripper_due(0.2) is None  # nothing planned before the splice point
    assert stream.gripper_due(0.3) == 0.08 and stream.gripper_due(0.4) is None  # open: said once
    t2, q2, v2 = _chunk(0.25)
    stream.splice(0.4, 0.5, t2, q2, v2, gripper_widths=[0.08] * len(t2))  # replaces the shut from 0.5 on
    assert stream.gripper_due(0.46) == 0.0  # the first chunk's, at 0.45, before the splice point
    assert stream.gripper_due(0.5) == 0.08 and stream.gripper_due(2.0) is None
    with pytest.raises(ChunkRefused, match='gripper_widths'):
        stream.splice(0.6, -1, *_chunk(0.35), gripper_widths=[0.0, float('nan')])
