"""Receding-horizon segments and the mirror of a stream (twinloop_iker.pacing), ROS-free."""

import numpy as np
import pytest

from twinloop_iker.config import default_config
from twinloop_iker.pacing import SHORTEST_CHUNK, StreamClock, StreamMirror, samples, segment

DEPLOY = default_config().deploy
JERK = np.full(7, DEPLOY.joint_jerk)


def test_a_segment_continues_the_motion_and_ends_at_rest_within_the_limits():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q0, q_goal = rng.uniform(-1, 1, 7), rng.uniform(-1, 1, 7) * 0.05
        v0, a0 = rng.uniform(-0.3, 0.3, 7), rng.uniform(-1, 1, 7)
        trajectory, duration = segment(q0, v0, a0, q0 + q_goal, 0.4, DEPLOY, JERK)
        start = [np.array(v) for v in trajectory.at_time(0.0)]
        assert np.allclose(start[0], q0) and np.allclose(start[1], v0) and np.allclose(start[2], a0)
        assert trajectory.duration >= 0.4 - 1e-9 and duration == min(trajectory.duration, DEPLOY.max_chunk)
        end = [np.array(v) for v in trajectory.at_time(trajectory.duration)]
        assert np.allclose(end[0], q0 + q_goal) and np.allclose(end[1], 0.0, atol=1e-9)
        times, positions, velocities = samples(trajectory, duration, DEPLOY.point_spacing, SHORTEST_CHUNK)
        assert times[0] == 0 and np.all(np.diff(times) <= DEPLOY.point_spacing + 1e-9)
        assert np.abs(velocities).max() <= DEPLOY.joint_velocity + 1e-6
        accelerations = np.diff(velocities, axis=0) / np.diff(times)[:, None]
        assert np.abs(accelerations).max() <= DEPLOY.joint_acceleration + 1e-6


def test_a_long_move_is_cut_at_the_longest_chunk_and_a_short_one_held_to_the_shortest():
    q0 = np.zeros(7)
    trajectory, duration = segment(q0, np.zeros(7), np.zeros(7), q0 + 1.0, 0.0, DEPLOY, JERK)
    assert trajectory.duration > DEPLOY.max_chunk and duration == DEPLOY.max_chunk
    trajectory, duration = segment(q0, np.zeros(7), np.zeros(7), q0 + 1e-4, 0.0, DEPLOY, JERK)
    times, positions, velocities = samples(trajectory, duration, DEPLOY.point_spacing, SHORTEST_CHUNK)
    assert duration < SHORTEST_CHUNK and times[-1] == pytest.approx(SHORTEST_CHUNK)
    assert np.allclose(positions[-1], q0 + 1e-4) and np.all(velocities[times > duration] == 0)


def test_the_mirror_gives_the_commanded_state_of_the_segments_sent():
    q_start = np.linspace(-0.5, 0.5, 7)
    mirror = StreamMirror(q_start)
    q, v, a = mirror.state(3.0)  # nothing sent: the arm rests where the stream starts
    assert np.allclose(q, q_start) and not v.any() and not a.any() and mirror.end is None
    first, first_duration = segment(q_start, np.zeros(7), np.zeros(7), q_start + 0.2, 0.5, DEPLOY, JERK)
    mirror.add(1.0, first, first_duration)
    assert np.allclose(mirror.state(0.5)[0], q_start)  # before the first segment starts
    assert np.allclose(mirror.state(1.2)[0], first.at_time(0.2)[0])
    q, v, a = mirror.state(1.2)
    second, second_duration = segment(q, v, a, q_start + 0.25, 0.5, DEPLOY, JERK)
    assert second_duration == second.duration  # not cut: it ends at rest
    mirror.add(1.2, second, second_duration)  # replaces the first from 1.2 s on
    assert np.allclose(mirror.state(1.3)[0], second.at_time(0.1)[0]) and mirror.end == pytest.approx(
        1.2 + second_duration
    )
    assert np.allclose(mirror.state(9.0)[0], q_start + 0.25)  # ended at rest: it stays there
    cut, cut_duration = segment(q_start + 0.25, np.zeros(7), np.zeros(7), q_start + 2.0, 0.0, DEPLOY, JERK)
    mirror.add(5.0, cut, cut_duration)
    assert mirror.state(5.0 + cut_duration + 0.5) is None  # cut while moving: the node's braking tail, unknown


def test_the_stream_clock_follows_the_node_from_the_time_a_chunk_was_sent():
    now = [10.0]
    clock = StreamClock(lambda: now[0])
    assert clock.now() is None
    clock.sync(type('Reply', (), {'stream_time': 2.5})(), 9.9)
    now[0] = 10.4
    assert clock.now() == pytest.approx(3.0)
