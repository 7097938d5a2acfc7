"""How the solver's planned TCP steps become streamed arm motion (no ROS): `deploy.loop` picks a drive.

`chunked`: each step is one rest-to-rest chunk played to its end, and the scene is perceived again
after the motion (frames captured after it) before the next step is planned.

`receding`: the closed loop of the paper's policy at the twin's control rate (shared/seeds/002, Sec.
III-C: 10 Hz) on the execution node's stream. Every control period the engine perceives, plans the
next step from where the arm will be `splice_lead` ahead of now, and splices a segment to it into the
running stream there: ruckig from the commanded position, velocity and acceleration at the splice
point to rest at the step's joints, within the deploy's joint velocity, acceleration and jerk, no
faster than its mean TCP speed, at most one stream chunk long. The next period replaces it from its
own splice point on, so the arm moves on without stopping while the plan follows what is perceived;
a segment no one replaces ends at rest (the stream's braking tail is empty). `StreamMirror` keeps
what was sent, on the stream clock, to know the commanded state at the next splice point;
`StreamClock` follows the stream clock from the node's replies. The objects are perceived while the
arm moves, so their poses are older than the splice point: the twin is set up as the objects were
seen, with the hand where it was commanded to be then, its hand driven to the splice point over that
time (what it pushes or holds goes along), and the step is planned from there. The loop runs as fast
as perception, planning and the gate allow, at most at the control rate; each stage's outcome says
the rate it reached.
"""

import math
import uuid

import numpy as np
from ruckig import InputParameter, Result, Ruckig, Synchronization, Trajectory

from twinloop_core.geometry import HOME_GRIP, quat_conjugate, quat_multiply
from twinloop_iker import deploy
from twinloop_iker.env import yaw_pitch

ARM_DOF = 7
SETTLE = 0.1  # [s] waited after a motion's end before perceiving again
SHORTEST_CHUNK = 0.1  # [s] the stream's shortest chunk (twinloop_execution.streaming.StreamConfig)
MAX_LEAD = 0.5  # [s] a splice lead grows up to this when the node answers that chunks come late
DIP = 0.005  # [m] receding: a segment whose TCP passes this far under the floor and its start is not spliced
MAX_SWING = 0.5  # [rad] receding: a step whose joints lie further than this from the splice point's is refused


class Refused(Exception):
    """A chunk was not streamed: the execution node refused it (it brakes the arm and ends the stream) or
    the arm cannot reach its end; the message says why."""


def new_stream_id():
    """A fresh id for a stream of chunks on the execution node."""
    return f'iker-{uuid.uuid4().hex[:8]}'


class StreamClock:
    """The stream clock (seconds since the stream began, the execution node's) from its replies and the
    streamer's own time base (ports' streamer.clock(): wall time through ROS, simulated time in process)."""

    def __init__(self, clock):
        self.clock, self.offset = clock, None

    def sync(self, reply, sent_at):
        """Learn the offset from a reply to a chunk sent at clock() = sent_at (stream_time: the stream clock
        when the node took the chunk, before its gate checked it)."""
        self.offset = reply.stream_time - sent_at

    def now(self):
        """The stream clock now (None before the first reply)."""
        return None if self.offset is None else self.clock() + self.offset


class StreamMirror:
    """The segments sent to one stream, each (splice time, ruckig trajectory, duration sent): the commanded
    state at any stream time up to the last segment's end (before the first, the arm rests at q_start)."""

    def __init__(self, q_start):
        self.q_start, self.segments = np.asarray(q_start, float), []

    def add(self, splice_time, trajectory, duration):
        """A segment accepted at splice_time replaces what was committed after it."""
        self.segments = [s for s in self.segments if s[0] < splice_time - 1e-9]
        self.segments.append((splice_time, trajectory, duration))

    @property
    def end(self):
        """Stream time at which the last segment ends (None: nothing sent)."""
        return self.segments[-1][0] + self.segments[-1][2] if self.segments else None

    def state(self, t):
        """(position, velocity, acceleration) commanded at stream time t; None beyond the last segment's end
        when it was cut while moving (the node's braking tail follows there, not mirrored)."""
        for start, trajectory, duration in reversed(self.segments):
            if t >= start - 1e-9:
                if t > start + duration + 1e-9 and duration < trajectory.duration - 1e-9:
                    return None
                return tuple(np.array(v, float) for v in trajectory.at_time(min(t - start, duration)))
        return self.q_start.copy(), np.zeros(ARM_DOF), np.zeros(ARM_DOF)


def segment(q0, v0, a0, q_goal, min_duration, config, jerk):
    """(ruckig trajectory, duration to send): from (q0, v0, a0) to rest at q_goal within the deploy config's
    joint velocity and acceleration and the jerk (per joint), lasting min_duration at least, sent for at most
    config.max_chunk. None when ruckig finds no profile."""
    inp = InputParameter(ARM_DOF)
    inp.current_position, inp.current_velocity = list(map(float, q0)), list(map(float, v0))
    inp.current_acceleration = list(map(float, a0))
    inp.target_position = list(map(float, q_goal))
    inp.target_velocity = inp.target_acceleration = [0.0] * ARM_DOF
    inp.max_velocity = [config.joint_velocity] * ARM_DOF
    inp.max_acceleration = [config.joint_acceleration] * ARM_DOF
    inp.max_jerk = list(map(float, jerk))
    inp.minimum_duration = float(min_duration)
    inp.synchronization = Synchronization.Phase  # a straight joint line where the start allows (from rest)
    trajectory = Trajectory(ARM_DOF)
    if Ruckig(ARM_DOF).calculate(inp, trajectory) not in (Result.Working, Result.Finished):
        return None
    return trajectory, min(trajectory.duration, config.max_chunk)


def samples(trajectory, duration, spacing, shortest):
    """(times from 0, positions, velocities) of a trajectory every `spacing` seconds up to duration (at least
    `shortest` long: held at rest after a shorter one's end, as the stream needs)."""
    length = max(duration, shortest)
    count = max(2, int(np.ceil(length / spacing)) + 1)
    times = np.linspace(0.0, length, count)
    states = [trajectory.at_time(min(t, duration)) for t in times]
    positions = np.array([s[0] for s in states])
    velocities = np.array([s[1] for s in states])
    velocities[times > duration + 1e-9] = 0.0
    return times, positions, velocities


class ChunkedDrive:
    """deploy.loop chunked: each step one chunk to its end; perceived again after the motion."""

    def __init__(self, engine, ports, q_arm, angles, lean):
        self.engine, self.ports, self.lean = engine, ports, lean
        self.q, self.angles = np.asarray(q_arm, float), np.array(angles, float)
        self.stream_id, self.sent = new_stream_id(), 0

    def spent(self, chunks):
        """Whether the stage has streamed deploy.max_chunks chunks."""
        return chunks >= self.engine.config.deploy.max_chunks

    def perceive(self):
        """The scene from frames after the last motion."""
        return self.ports.perception.state()

    def hand(self):
        """(TCP, hand yaw and pitch) where the next step starts."""
        return self.engine.arm.ee_position(self.q), self.angles

    observed_hand = hand  # the hand rests while the scene is perceived

    def advance(self, env):
        """Nothing moved since the scene was perceived."""

    def execute(self, points, turn, floor):
        """One chunk to the last point, waited for; True (sent). Refused when refused or out of reach. floor:
        unused (a chunk starts and ends at rest: its straight joint line stays near the points)."""
        d = self.engine.config.deploy
        tcp = self.engine.arm.ee_position(self.q)
        option, q_end = self.engine.step_joints(self.q, points[-1], (self.angles, turn, self.lean))
        length = float(np.linalg.norm(np.diff(np.vstack([tcp, points]), axis=0), axis=1).sum())
        times, positions = deploy.joint_chunk(self.q, q_end, length, d)
        reply = self.ports.streamer.send_chunk(self.stream_id, times, positions)
        if not reply.accepted:
            raise Refused(f'the execution node refused a chunk ({reply.check}): {reply.reason}')
        self.sent += 1
        self.ports.streamer.wait(max(0.0, reply.committed_until - reply.stream_time) + SETTLE)
        commanded = np.asarray(reply.commanded_positions, float)
        self.q, self.angles = (commanded if commanded.shape == (ARM_DOF,) else positions[-1]), np.array(option)
        return True

    def restart(self):
        """After a refusal: a new stream where the arm rests."""
        self.finish()
        self.stream_id, self.sent = new_stream_id(), 0
        self.q = self.ports.perception.state().arm

    def finish(self):
        """End the stream (the arm rests after each chunk)."""
        if self.sent:
            self.ports.streamer.stop_stream(self.stream_id)

    def rate(self):
        """'' (chunks are not paced)."""
        return ''


class RecedingDrive:
    """deploy.loop receding: every control period the newest perception, a step planned from the splice point
    a lead ahead and a segment spliced there (module docstring)."""

    def __init__(self, engine, ports, q_arm, angles, lean):
        """q_arm: unused (the stream starts where the arm is measured); the hand's angles come from the
        commanded joints, unwrapped next to `angles` (the twin's hand turns the short way from there)."""
        self.engine, self.ports, self.lean, self.reference = engine, ports, lean, np.array(angles, float)
        self.config = engine.config.deploy
        self.period = 1.0 / engine.config.env.control_hz
        self.lead, self.late, self.dipped, self.ticks, self.started = self.config.splice_lead, 0, 0, 0, None
        self._new_stream()

    def _new_stream(self):
        self.stream_id, self.sent = new_stream_id(), 0
        self.mirror, self.clock, self.tick = None, StreamClock(self.ports.streamer.clock), None

    def spent(self, chunks):
        """Whether the stage has run deploy.max_control_steps control steps (spliced or not)."""
        return self.ticks >= self.config.max_control_steps

    def perceive(self):
        """The newest scene, once a control period has passed since the last; sets the splice point and the
        commanded states there and when the objects were seen."""
        streamer = self.ports.streamer
        if self.tick is not None:
            streamer.wait(max(0.0, self.tick + self.period - streamer.clock()))
        self.tick, self.ticks = streamer.clock(), self.ticks + 1
        self.started = self.started if self.started is not None else self.tick
        state = self.ports.perception.newest()
        now = self.clock.now()
        if now is None:  # nothing sent yet: the arm rests where it is (where the node's stream will start)
            self.mirror = StreamMirror(state.arm)
            self.splice, self.at_splice, self.at_seen, self.ahead = -1.0, self.mirror.state(0.0), None, 0.0
            return state
        self.splice = now + self.lead
        self.at_splice = self.mirror.state(self.splice)
        if self.at_splice is None:  # the last segment was cut while moving and its braking tail ran: start anew
            self.restart()
            return self.perceive()
        seen = now - state.age
        self.at_seen, self.ahead = self.mirror.state(seen), self.splice - seen
        return state

    def _hand_at(self, joints):
        q = joints[0]
        relative = quat_multiply(
            quat_conjugate(self.lean), quat_multiply(self.engine.arm.ee_quat(q), quat_conjugate(HOME_GRIP))
        )
        angles = np.array(yaw_pitch(relative))
        return self.engine.arm.ee_position(q), self.reference + np.remainder(
            angles - self.reference + math.pi, math.tau
        ) - math.pi

    def hand(self):
        """(TCP, hand yaw and pitch) commanded at the splice point: where the next step starts."""
        return self._hand_at(self.at_splice)

    def observed_hand(self):
        """(TCP, hand yaw and pitch) commanded when the objects were seen."""
        return self._hand_at(self.at_seen if self.at_seen is not None else self.at_splice)

    def advance(self, env):
        """Drive the twin's hand from where it was when the objects were seen to the splice point."""
        if self.at_seen is None or self.ahead <= 0:
            return
        (tcp_seen, angles_seen), (tcp, angles) = self.observed_hand(), self.hand()
        env.advance_hand(tcp - tcp_seen, angles - angles_seen, self.ahead)

    def execute(self, points, turn, floor):
        """Splice a segment to the last point; True when sent. False when its TCP would pass under the floor [m]
        (a segment that turns a moving arm curves; one from rest runs straight): the committed motion runs on to
        rest and the next step starts from there; or when it came late (the node ends the stream: a new one
        starts from rest, the lead grows). Refused when the gate refuses it, the arm cannot reach it or only by
        swinging to another IK branch."""
        d = self.config
        q, v, a = self.at_splice
        tcp, angles = self.hand()
        _, q_goal = self.engine.step_joints(q, points[-1], (angles, turn, self.lean))
        swing = float(np.abs(q_goal - q).max())
        if swing > MAX_SWING:  # another IK branch: not while moving (a cut segment's braking tail runs on)
            raise Refused(f'the planned step needs a joint to swing {swing:.2f} rad (limit {MAX_SWING})')
        length = float(np.linalg.norm(np.diff(np.vstack([tcp, points]), axis=0), axis=1).sum())
        planned = segment(q, v, a, q_goal, length / d.tcp_speed, d, np.full(ARM_DOF, d.joint_jerk))
        if planned is None:
            raise Refused('no joint profile to the planned step within the limits')
        trajectory, duration = planned
        times, positions, velocities = samples(trajectory, duration, d.point_spacing, SHORTEST_CHUNK)
        if min(self.engine.arm.ee_position(q)[2] for q in positions) < min(floor, tcp[2]) - DIP:
            self.dipped += 1
            return False
        sent_at = self.ports.streamer.clock()
        reply = self.ports.streamer.send_chunk(self.stream_id, times, positions, self.splice, velocities)
        if not reply.accepted and reply.check == 'late':  # the node ended the stream: go on from rest, further ahead
            self.late, self.lead = self.late + 1, min(MAX_LEAD, 1.5 * self.lead)
            self.restart()
            return False
        if not reply.accepted:
            raise Refused(f'the execution node refused a chunk ({reply.check}): {reply.reason}')
        self.clock.sync(reply, sent_at)
        self.mirror.add(reply.committed_until - times[-1], trajectory, duration)
        self.sent += 1
        return True

    def restart(self):
        """After a refusal: a new stream where the arm rests."""
        self.finish()
        self._new_stream()

    def finish(self):
        """Let the last segment run to rest, then end the stream."""
        if not self.sent:
            return
        now = self.clock.now()
        if now is not None and self.mirror.end is not None:
            self.ports.streamer.wait(max(0.0, self.mirror.end - now) + SETTLE)
        self.ports.streamer.stop_stream(self.stream_id)

    def rate(self):
        """The control rate reached, in words."""
        if self.started is None or self.ticks < 2:
            return ''
        hz = (self.ticks - 1) / max(1e-9, self.tick - self.started)
        late = f', {self.late} late' if self.late else ''
        dipped = f', {self.dipped} not spliced (under the floor)' if self.dipped else ''
        return f'; {self.ticks} control steps at {hz:.1f} Hz{late}{dipped}'


DRIVES = {'chunked': ChunkedDrive, 'receding': RecedingDrive}
