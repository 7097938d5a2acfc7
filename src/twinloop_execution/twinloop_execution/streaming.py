"""Streaming execution (no rclpy): short joint chunks that continue the commanded motion without
stopping, each through the safety gate.

The stream keeps one committed path on its own clock (seconds since the stream started): the
accepted chunks, each followed by a braking tail (ruckig, velocity interface, to rest within the
velocity, acceleration and jerk limits). A chunk splices in at a time of the committed path
ahead of now; its first point (time 0) must be the commanded state there (position, and velocity
when the chunk gives one) within tolerances. What the gate checks is exactly what is then
committed from the splice point: the chunk and its braking tail, starting from the commanded
state and velocity. So if the next chunk comes late, or never, the arm brakes to rest on a path
the gate accepted; a refused chunk changes nothing committed, and the caller brakes now.
A chunk may carry a gripper opening per point: the stream keeps them on its clock and says which is
due (`gripper_due`), so the gripper changes with the arm motion it belongs to, as a policy's steps
were recorded; the openings of a spliced chunk replace the plan's from its splice point on.
"""

from dataclasses import dataclass

import numpy as np
from ruckig import ControlInterface, InputParameter, Result, Ruckig, Trajectory


@dataclass
class StreamConfig:
    """Tolerances and sizes of streamed chunks."""

    min_chunk: float = 0.1  # [s] shortest chunk
    max_chunk: float = 1.0  # [s] longest chunk
    max_points: int = 200  # per chunk
    position_tolerance: float = 0.02  # [rad] chunk start vs the commanded position at the splice point
    velocity_tolerance: float = 0.15  # [rad/s] chunk start velocity vs the commanded velocity there
    min_lead: float = 0.05  # [s] a splice point must lie at least this far ahead of now
    start_lead: float = 1.0  # [s] a stream at rest starts moving this far ahead (the gate's time, on a loaded host)
    period: float = 0.02  # [s] sampling of the committed path and of braking tails
    braking_scale: float = 0.5  # fraction of the acceleration and jerk limits a braking tail uses


class ChunkRefused(ValueError):
    """The chunk cannot be committed; the message says why (check: which rule refused it)."""

    def __init__(self, check, reason):
        super().__init__(reason)
        self.check = check


@dataclass
class CommittedPath:
    """Samples of the committed motion on the stream clock: times (N,), positions and velocities (N, 7)."""

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    @property
    def end(self):
        """Stream time at which the committed motion (braking tail included) is at rest."""
        return float(self.times[-1])

    def sample(self, t):
        """(position, velocity) at stream time t (held at the ends)."""
        q = np.array([np.interp(t, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])])
        v = np.array([np.interp(t, self.times, self.velocities[:, j]) for j in range(self.velocities.shape[1])])
        return q, v

    def until(self, t):
        """The samples strictly before t."""
        keep = self.times < t - 1e-9
        return self.times[keep], self.positions[keep], self.velocities[keep]


def at_rest(q, t=0.0):
    """A committed path that holds q from stream time t."""
    q = np.asarray(q, float)
    return CommittedPath(np.array([t]), q[None, :], np.zeros((1, len(q))))


def braking_tail(q, v, a, acceleration, jerk, period):
    """(times from 0, positions, velocities) that bring (q, v, a) to rest within the limits (excludes t = 0)."""
    dof = len(q)
    if np.abs(v).max() < 1e-9 and np.abs(a).max() < 1e-9:
        return np.zeros(0), np.zeros((0, dof)), np.zeros((0, dof))
    inp = InputParameter(dof)
    inp.control_interface = ControlInterface.Velocity
    inp.current_position, inp.current_velocity = list(map(float, q)), list(map(float, v))
    inp.current_acceleration = list(map(float, np.clip(a, -acceleration, acceleration)))
    inp.target_velocity = inp.target_acceleration = [0.0] * dof
    inp.max_velocity = [1e3] * dof  # not used by the velocity interface, but must be set
    inp.max_acceleration, inp.max_jerk = list(map(float, acceleration)), list(map(float, jerk))
    tail = Trajectory(dof)
    if Ruckig(dof).calculate(inp, tail) not in (Result.Working, Result.Finished):
        raise ChunkRefused('braking', 'no braking profile to rest from the chunk end state')
    n = max(1, int(np.ceil(tail.duration / period)))
    times = tail.duration * np.arange(1, n + 1) / n
    samples = [tail.at_time(t) for t in times]
    positions = np.array([s[0] for s in samples])
    velocities = np.array([s[1] for s in samples])
    velocities[-1] = 0.0
    return times, positions, velocities


def point_velocities(times, positions, start_velocity):
    """The velocity at each point of a chunk: start_velocity at the splice point (the commanded one
    there), central differences after it (backward at the end); what the stream uses when a chunk
    comes without velocities."""
    positions = np.asarray(positions, float)
    if len(times) < 2:
        velocities = np.zeros_like(positions)
    else:
        velocities = np.gradient(positions, np.asarray(times, float), axis=0)
    velocities[0] = start_velocity
    return velocities


def chunk_tail(times, positions, velocities, acceleration, jerk, period):
    """The braking tail (times from the chunk's end, positions, velocities) from a chunk's last point,
    at the acceleration its last two points' velocities imply (ChunkRefused: no profile within the
    limits)."""
    end_acceleration = (velocities[-1] - velocities[-2]) / (times[-1] - times[-2])
    return braking_tail(positions[-1], velocities[-1], end_acceleration, acceleration, jerk, period)


class JointStream:
    """One client's stream: splices chunks onto the committed path after `gate(times, positions,
    current, start_velocity)` accepted the chunk with its braking tail (a Verdict-like object with
    ok, reason, check)."""

    def __init__(self, stream_id, q_start, acceleration, jerk, gate, config=None):
        self.stream_id, self.gate = stream_id, gate
        self.config = config or StreamConfig()
        self.acceleration = np.asarray(acceleration, float) * self.config.braking_scale
        self.jerk = np.asarray(jerk, float) * self.config.braking_scale
        self.path = at_rest(q_start)
        self.chunks = 0
        self.last_chunk_end = 0.0  # stream time where the last accepted chunk (not its tail) ends
        self.gripper_plan = []  # [(stream time, opening [m])] still to command
        self.gripper_commanded = None  # the last opening commanded (None: unknown)

    def commanded(self, t):
        """The commanded (position, velocity) at stream time t."""
        return self.path.sample(t)

    def splice(self, now, splice_time, times, positions, velocities=None, clock=None, gripper_widths=None):
        """Commit a chunk (times from 0 at the splice point, positions (n, 7), optional velocities and
        gripper openings per point, negative: keep) at splice_time (< 0: where the last chunk ends, or
        start_lead from now when at rest); returns the committed path (from_time) from the stream time
        clock() says it is after the gate (default: now).
        Raises ChunkRefused, also when the gate took so long that the splice point has passed."""
        c = self.config
        times, positions = np.asarray(times, float), np.asarray(positions, float)
        widths = np.asarray([] if gripper_widths is None else gripper_widths, float)
        if len(widths) not in (0, len(times)) or not np.all(np.isfinite(widths)):
            raise ChunkRefused(
                'structure', f'gripper_widths: {len(widths)} finite values needed, one per point, or none'
            )
        if times.ndim != 1 or len(times) < 2 or positions.shape != (len(times), self.path.positions.shape[1]):
            raise ChunkRefused('structure', f'a chunk needs >= 2 points of {self.path.positions.shape[1]} joints')
        if len(times) > c.max_points:
            raise ChunkRefused('structure', f'{len(times)} points in a chunk (limit {c.max_points})')
        given = None if velocities is None or len(velocities) == 0 else np.asarray(velocities, float)
        if given is not None and given.shape != positions.shape:
            raise ChunkRefused('structure', f'velocities have shape {given.shape}, positions {positions.shape}')
        if not (
            np.all(np.isfinite(times))
            and np.all(np.isfinite(positions))
            and (given is None or np.all(np.isfinite(given)))
        ):
            raise ChunkRefused('structure', 'NaN or infinite values in the chunk')
        if abs(times[0]) > 1e-9 or np.any(np.diff(times) <= 0):
            raise ChunkRefused('structure', 'chunk times must start at 0 (the splice point) and increase')
        if not c.min_chunk - 1e-9 <= times[-1] <= c.max_chunk + 1e-9:
            raise ChunkRefused('structure', f'chunk lasts {times[-1]:.3f} s (allowed {c.min_chunk}-{c.max_chunk} s)')
        if splice_time < 0:
            splice_time = max(now + c.min_lead, self.last_chunk_end)
        if splice_time < now + c.min_lead - 1e-9:
            raise ChunkRefused(
                'late',
                f'splice point {splice_time:.3f} s is not ahead of now ({now:.3f} s): recompute the chunk '
                'from a fresher state',
            )
        if splice_time > self.path.end + 1e-9:  # the arm is (or will be) at rest: start from there, soon
            splice_time = max(self.path.end, now + c.start_lead)
        q0, v0 = self.commanded(splice_time)
        gap = float(np.abs(positions[0] - q0).max())
        if gap > c.position_tolerance:
            raise ChunkRefused(
                'continuity',
                f'chunk starts {gap:.3f} rad from the commanded position (tolerance {c.position_tolerance})',
            )
        chunk_velocities = point_velocities(times, positions, v0) if given is None else np.array(given, float)
        if given is not None:
            jump = float(np.abs(given[0] - v0).max())
            if jump > c.velocity_tolerance:
                raise ChunkRefused(
                    'continuity',
                    f'chunk starts at {jump:.2f} rad/s off the commanded velocity (tolerance {c.velocity_tolerance})',
                )
        chunk_velocities[0] = v0
        tail_t, tail_q, tail_v = chunk_tail(times, positions, chunk_velocities, self.acceleration, self.jerk, c.period)
        new_t = np.concatenate([times[1:], times[-1] + tail_t])
        new_q = np.vstack([positions[1:], tail_q])
        new_v = np.vstack([chunk_velocities[1:], tail_v])
        verdict = self.gate(new_t, new_q, q0, v0)
        if not verdict.ok:
            raise ChunkRefused(verdict.check or 'gate', f'safety gate ({verdict.check}): {verdict.reason}')
        now = clock() if clock is not None else now
        if now > splice_time - 1e-3:
            raise ChunkRefused(
                'late',
                f'the splice point {splice_time:.3f} s passed while the chunk was checked '
                f'(now {now:.3f} s): send chunks further ahead',
            )
        kept_t, kept_q, kept_v = self.path.until(splice_time)
        self.path = CommittedPath(
            np.concatenate([kept_t, [splice_time], splice_time + new_t]),
            np.vstack([kept_q, q0[None, :], new_q]),
            np.vstack([kept_v, v0[None, :], new_v]),
        )
        self.last_chunk_end = splice_time + times[-1]
        self.chunks += 1
        self.gripper_plan = [(t, w) for t, w in self.gripper_plan if t < splice_time - 1e-9]
        self.gripper_plan += [(splice_time + t, w) for t, w in zip(times, widths) if w >= 0]
        return self.from_time(now)

    def gripper_due(self, now):
        """The gripper opening to command at stream time now: the newest planned one reached, when it
        differs from the last commanded; else None."""
        reached = [w for t, w in self.gripper_plan if t <= now + 1e-9]
        self.gripper_plan = [(t, w) for t, w in self.gripper_plan if t > now + 1e-9]
        if not reached or reached[-1] == self.gripper_commanded:
            return None
        self.gripper_commanded = reached[-1]
        return reached[-1]

    def from_time(self, now):
        """The committed path from now on: (stream times, positions, velocities), the first point at now."""
        q, v = self.commanded(now)
        later = self.path.times > now + 1e-9
        return (
            np.concatenate([[now], self.path.times[later]]),
            np.vstack([q[None, :], self.path.positions[later]]),
            np.vstack([v[None, :], self.path.velocities[later]]),
        )

    def brake(self, now):
        """Replace what is committed after now by braking to rest from the commanded state; returns from_time(now)."""
        q, v = self.commanded(now)
        _, v_before = self.commanded(now - self.config.period)
        a = (v - v_before) / self.config.period
        tail_t, tail_q, tail_v = braking_tail(
            q,
            v,
            a,
            self.acceleration / self.config.braking_scale,
            self.jerk / self.config.braking_scale,
            self.config.period,
        )
        kept_t, kept_q, kept_v = self.path.until(now)
        self.path = CommittedPath(
            np.concatenate([kept_t, [now], now + tail_t]),
            np.vstack([kept_q, q[None, :], tail_q]),
            np.vstack([kept_v, v[None, :], tail_v]),
        )
        self.last_chunk_end = now
        return self.from_time(now)
