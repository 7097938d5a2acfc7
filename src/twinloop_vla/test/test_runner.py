"""The RunPolicy loop (no ROS) against the execution node's real stream core
(twinloop_execution.streaming.JointStream) on a clock that runs in real time: every blending keeps
the arm moving through chunk seams; a chunk the gate refuses ends the run with the gate's reason
and nothing committed; cancel stops the stream."""

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from twinloop_core.ports import StreamReply
from twinloop_execution import streaming
from twinloop_execution.safety import Verdict
from twinloop_vla.blending import BlendConfig, RateLimit
from twinloop_vla.policies import Policy, PolicyConfig
from twinloop_vla.runner import run_policy
from twinloop_vla import trace
from twinloop_vla.sync import Observation
from twinloop_vla.trace import ChunkTrace

SPEED = 0.3  # [rad/s] of the scripted policy's joint 1
LIMITS = np.full(7, 10.0), np.full(7, 5000.0)  # acceleration, jerk of the braking tails


class ScriptedSweep(Policy):
    """Scripted (not learned): joint 1 onwards at SPEED from the observed state; chunks of 8 at 20 Hz."""

    config_class = PolicyConfig

    def __init__(self, targets_offset=0.0):
        super().__init__(None)
        self.targets_offset = targets_offset

    def select_action_chunk(self, observation):
        time.sleep(0.03)  # a policy takes time to think
        chunk = np.tile(observation['state'], (8, 1))
        chunk[:, 0] += SPEED * 0.05 * np.arange(1, 9) + self.targets_offset
        return chunk


class FakeArm:
    """The execution node's stream on a real-time clock, with an arm that tracks the commanded path
    perfectly and a camera at 20 Hz. gate(positions) -> Verdict."""

    def __init__(self, gate=None, cancel_after=None):
        self.t0 = time.monotonic()
        self.gate = gate or (lambda positions: Verdict(True))
        self.stream = None
        self.started = self.first_splice = 0.0
        self.reports, self.stops, self.grippers = [], 0, []
        self.cancel_after = cancel_after

    def clock(self):
        return time.monotonic() - self.t0

    def _commanded(self, t):
        if self.stream is None:
            return np.zeros(7), np.zeros(7)
        return self.stream.commanded(t - self.started)

    def arm(self):
        return self._commanded(self.clock())

    def observation(self):
        stamp = np.floor(self.clock() * 20) / 20
        state = np.append(self._commanded(stamp)[0], 0.04)
        return Observation(np.zeros((1, 8, 8, 3), np.uint8), None, state, stamp, stamp), ''

    def send(self, stream_id, times, positions, velocities, splice_time, gripper_widths):
        assert len(gripper_widths) == len(times)
        self.grippers.append(list(gripper_widths))
        if self.stream is None:
            gate = lambda t, q, current, v0: self.gate(q)  # noqa: E731
            self.stream = streaming.JointStream(stream_id, self.arm()[0], *LIMITS, gate)
            self.started = self.clock()
        now = self.clock() - self.started
        try:
            clock = lambda: self.clock() - self.started  # noqa: E731
            self.stream.splice(now, splice_time, times, positions, velocities, clock)
        except streaming.ChunkRefused as refused:
            return StreamReply(False, str(refused), refused.check, now)
        if self.stream.chunks == 1:
            self.first_splice = self.stream.last_chunk_end - times[-1]
        return StreamReply(True, '', '', now, self.stream.last_chunk_end)

    def stop(self, stream_id):
        self.stops += 1
        if self.stream is not None:
            self.stream.brake(self.clock() - self.started)

    def cancelled(self):
        return self.cancel_after is not None and len(self.reports) >= self.cancel_after

    def feedback(self, report):
        self.reports.append(report)


@pytest.mark.parametrize('blending', ['receding_horizon', 'temporal_ensembling', 'rtc'])
def test_every_blending_keeps_the_arm_moving_through_the_seams(blending):
    torch.manual_seed(0)
    arm = FakeArm()
    config = BlendConfig(blending=blending, execute_steps=4, lead=0.1)
    result = run_policy(ScriptedSweep(), 'sweep', arm, config, max_chunks=6, timeout=20.0)
    assert result.success, result.reason
    assert result.chunks == 6 and result.starved == 0
    path = arm.stream.path
    moving = (path.times > arm.first_splice + 1e-6) & (path.times < arm.stream.last_chunk_end - 0.05)
    speed = path.velocities[moving, 0]
    # never slowed down between chunks, never ran ahead: the seams were re-anchored and blended
    assert speed.min() > 0.5 * SPEED and speed.max() < 1.5 * SPEED, (blending, speed.round(3))
    assert arm.stops == 1  # the run ends by stopping its stream
    reports = arm.reports
    assert [r.index for r in reports] == list(range(6))
    assert all(r.latency >= 0.03 and r.size >= 2 for r in reports)
    assert all(r.queue_depth >= 1 for r in reports[1:])  # later chunks were queued behind a running one


def test_a_chunk_the_gate_refuses_ends_the_run_with_its_reason_and_moves_nothing():
    refuse = lambda q: Verdict(False, 'the hand leaves the workspace', 'workspace')  # noqa: E731
    arm = FakeArm(gate=refuse)
    result = run_policy(ScriptedSweep(), 'sweep', arm, BlendConfig(), max_chunks=5, timeout=10.0)
    assert not result.success and result.check == 'workspace'
    assert 'leaves the workspace' in result.reason and result.chunks == 0
    assert arm.stream.chunks == 0 and np.allclose(arm.stream.path.positions, 0.0)


def test_a_bad_chunk_mid_run_keeps_what_was_committed_before_it():
    arm = FakeArm(gate=lambda q: Verdict(q[:, 0].max() < 0.2, 'joint 1 beyond 0.2 rad', 'position'))
    result = run_policy(ScriptedSweep(), 'sweep', arm, BlendConfig(), max_chunks=20, timeout=20.0)
    assert not result.success and result.check == 'position' and result.chunks >= 1
    assert arm.stream.path.positions[:, 0].max() < 0.2  # nothing past the refused chunk was ever commanded


def test_cancel_stops_the_stream_and_ends_the_run():
    arm = FakeArm(cancel_after=2)
    result = run_policy(ScriptedSweep(), 'sweep', arm, BlendConfig(), max_chunks=50, timeout=20.0)
    assert not result.success and result.reason == 'canceled' and result.chunks == 2
    assert arm.stops == 1
    _, velocity = arm.stream.commanded(arm.stream.path.end)
    assert np.abs(velocity).max() == 0.0  # braked to rest


def test_a_policy_that_fails_ends_the_run_with_its_message():
    class Broken(ScriptedSweep):
        def select_action_chunk(self, observation):
            return np.ones((8, 3))  # not 7 joints

    result = run_policy(Broken(), 'x', FakeArm(), BlendConfig(), max_chunks=3, timeout=5.0)
    assert not result.success and 'the policy failed' in result.reason and 'shape' in result.reason


def test_each_chunk_commands_the_gripper_opening_of_every_step_at_its_point():
    openings = [0.065] * 3 + [0.035, 0.01, -0.001, 0.0, 0.0]  # regressed: between open and shut

    class Closing(ScriptedSweep):
        """Sweeps, each chunk asking for the gripper to shut from its fourth action on (entry 8)."""

        def select_action_chunk(self, observation):
            chunk = super().select_action_chunk(observation)
            chunk[:, 7] = openings
            return chunk

    arm = FakeArm()
    result = run_policy(Closing(), 'sweep', arm, BlendConfig(execute_steps=4, lead=0.1), max_chunks=3, timeout=20.0)
    assert result.success, result.reason
    expected = [0.08] * 3 + [0.0] * 5 + [-1.0] * 10  # open or shut, as the demonstrations commanded; then keep
    assert arm.grippers[0] == expected[: len(arm.grippers[0])]  # from rest: point j is action j's start
    for widths in arm.grippers[1:]:  # later chunks from their first executed action on
        assert any(widths == expected[k : k + len(widths)] for k in range(1, 8)), widths
    arm = FakeArm()
    config = BlendConfig(execute_steps=4, lead=0.1, command_gripper=False)
    assert run_policy(Closing(), 'sweep', arm, config, max_chunks=3, timeout=20.0).success
    assert all(w == -1.0 for widths in arm.grippers for w in widths)


def test_shaping_sends_chunks_within_the_limits_that_unshaped_would_exceed():
    """The sweep starts at SPEED from rest in one 0.05 s step (12 rad/s^2 as the gate estimates a start
    from rest); shaped to 8 rad/s^2, every sent chunk's first steps stay within it."""

    class Recording(FakeArm):
        sent = []

        def send(self, stream_id, times, positions, velocities, splice_time, gripper_widths):
            self.sent.append((np.array(times), np.array(positions)))
            return super().send(stream_id, times, positions, velocities, splice_time, gripper_widths)

    def first_acceleration(times, positions):  # from rest: 2 dq / dt^2
        return np.abs(2 * (positions[1] - positions[0]) / (times[1] - times[0]) ** 2).max()

    limits = SimpleNamespace(
        velocity=np.full(7, 2.0), acceleration=np.full(7, 8.0), lower=np.full(7, -3.0), upper=np.full(7, 3.0)
    )
    config = BlendConfig(execute_steps=4, lead=0.1, limit_margin=1.0)
    for shaping, within in ((None, False), (RateLimit.of(limits, config), True)):
        arm = Recording()
        arm.sent = []
        result = run_policy(ScriptedSweep(), 'sweep', arm, config, max_chunks=3, timeout=20.0, shaping=shaping)
        assert result.success and result.chunks == 3, result.reason
        assert (first_acceleration(*arm.sent[0]) <= 8.0 + 1e-9) == within, first_acceleration(*arm.sent[0])
    speed = arm.stream.path.velocities[:, 0]
    assert speed.max() > 0.8 * SPEED  # shaped, it still sweeps


def test_a_traced_goal_keeps_every_chunk_and_its_summary_reads_it(tmp_path, capsys):
    arm = FakeArm()
    config = BlendConfig(blending='rtc', execute_steps=4, lead=0.1, control_period=0.05)
    result = run_policy(
        ScriptedSweep(), 'sweep', arm, config, max_chunks=4, timeout=20.0, trace=ChunkTrace(tmp_path, 0.05)
    )
    assert result.success, result.reason
    folder = trace.goal_folder(tmp_path)  # the goal's folder, found from the trace_dir
    chunks = trace.load_goal(folder)
    assert len(chunks) == 4 and chunks[0]['images'].shape == (1, 8, 8, 3)
    rows = trace.summary(chunks)
    assert all(r['sent'] and r['age'] >= 0.03 for r in rows)  # the scripted policy thinks 30 ms
    assert all(np.isclose(r['first_step'], SPEED * 0.05, atol=1e-4) for r in rows)
    assert np.isnan(rows[0]['lag']) and all(r['lag'] < 1e-3 for r in rows[2:])  # FakeArm tracks perfectly
    # the first has none before it; the motion from rest starts after the second's targets began
    assert np.isnan(rows[0]['disagreement']) and all(r['disagreement'] < 0.01 for r in rows[2:])
    assert trace.contact_sheet(chunks, rows, every=2, height=16).size[1] == 2 * (16 + 14)
    trace.main([str(tmp_path), '--sheet', str(tmp_path / 'sheet.png')])
    assert '4 chunks, 4 sent' in capsys.readouterr().out and (tmp_path / 'sheet.png').exists()
    with pytest.raises(FileNotFoundError, match='no traced chunks'):
        trace.goal_folder(tmp_path / folder.name / '..' / '..')


class SlowStart(ScriptedSweep):
    """ScriptedSweep whose first chunk takes 0.3 s to think (a cold start), the others 0.03 s."""

    calls = 0

    def select_action_chunk(self, observation):
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.27)
        return super().select_action_chunk(observation)


def test_rtc_chunks_take_over_every_execute_steps_actions_at_the_typical_latency(tmp_path):
    """One slow inference must not make every later chunk come early (each would then run only a
    part of its execute_steps actions before the next took over, its seam blend never finished)."""
    arm = FakeArm()
    config = BlendConfig(blending='rtc', execute_steps=4, lead=0.1, control_period=0.05)
    result = run_policy(
        SlowStart(), 'sweep', arm, config, max_chunks=10, timeout=20.0, trace=ChunkTrace(tmp_path, 0.05)
    )
    assert result.success, result.reason
    splices = np.array([float(c['splice']) for c in trace.load_goal(trace.goal_folder(tmp_path))[1:]])
    spacing = np.diff(splices)[3:]  # once the slow start is no longer the median latency
    assert np.all(np.abs(spacing - 4 * 0.05) <= 0.05 + 1e-6), spacing.round(3)  # within one frame (20 Hz)
