"""One RunPolicy goal, closed loop (no ROS): observe, infer a chunk, re-anchor and blend it,
stream it through the execution node's gate, report, repeat.

The node hands `run_policy` a `RunIO` (observations, the robot's clock, the stream service,
cancel, feedback). Clocks: frame and joint stamps are the robot's clock (the newest joint-state
stamp); the stream clock is the robot's clock minus the stream's start, learned from the first
reply (stream_time at the moment of the reply).

Before the gate a chunk is raised to the grip floor, shaped to the limits and cut where it can still
brake above the floor (_guard), and sent with its velocities. Every chunk passes the gate with its
braking tail in the execution node; the first refusal stops the stream and ends the goal with the
gate's reason. A cancel stops the stream at once (the node also stops it from its cancel callback,
before the loop notices). A policy error (PolicyError, or a chunk not shaped (C, >= 7)) ends the
goal with its message. If the next chunk comes too late to continue the committed motion (or the
stream refuses it as late), the stream brakes to rest on its own; the loop waits for rest and starts
again from the measured joints and a frame of then (counted in `starved`). A chunk with under
MIN_SEGMENT left after its splice point, or none of whose starts brakes above the floor, is dropped
(counted) and the next one inferred from a newer frame; each chunk sees a frame newer than the last.
"""

import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from twinloop_execution.streaming import point_velocities
from twinloop_vla.blending import (
    ARM_DOF,
    Plan,
    TemporalEnsemble,
    anchor,
    blend_seam,
    gripper_commands,
    gripper_openings,
    joint_targets,
)
from twinloop_vla.policies.base import PolicyError

POLL = 0.005  # [s] how often waits look at the clock and the cancel request
REST_SPEED = 0.01  # [rad/s] every arm joint slower than this: the arm is at rest
MIN_SEGMENT = 0.1  # [s] the shortest chunk the stream takes (twinloop_execution.streaming.StreamConfig)
RECENT = 10  # chunks whose latencies make the typical one


@dataclass
class ChunkReport:
    """Feedback for one executed chunk."""

    index: int
    size: int  # actions of this chunk sent to the stream
    actions_executed: int  # in total so far
    inference_time: float  # [s] wall time of the policy call
    latency: float  # [s] robot clock: newest frame stamp -> chunk ready
    queue_depth: int  # actions committed ahead of the arm after this chunk was accepted
    last_action: np.ndarray  # the chunk's last action (policy's action space)
    skipped: int  # targets dropped by re-anchoring (their time had passed)


@dataclass
class RunResult:
    """How a goal ended."""

    success: bool
    reason: str
    chunks: int = 0
    actions: int = 0
    elapsed: float = 0.0  # [s] wall
    check: str = ''  # the gate's refusing check, when a chunk was refused
    starved: int = 0  # times the stream ran dry and the arm came to rest between chunks
    dropped: int = 0  # chunks not sent: stale on arrival (under MIN_SEGMENT left), or none of it brakes above the floor
    raised: int = 0  # targets raised to the hand's floor (floor.GripFloor)
    cut: int = 0  # chunks cut short where the arm could still brake above the floor
    latencies: list = field(default_factory=list)  # [s] per chunk


class RunIO(Protocol):
    """What the loop needs from the node."""

    def observation(self):
        """(Observation, '') or (None, why none is fresh and synchronised)."""

    def clock(self) -> float:
        """The robot's clock [s] (newest joint-state stamp)."""

    def arm(self):
        """Measured (positions (7,), velocities (7,)) of the arm."""

    def send(self, stream_id, times, positions, velocities, splice_time, gripper_widths):
        """One chunk (positions and velocities at times) with a gripper opening per point (< 0: keep;
        each commanded when the stream reaches its point) to the stream; a twinloop_core.ports.StreamReply."""

    def stop(self, stream_id):
        """Brake to rest now and end the stream."""

    def cancelled(self) -> bool:
        """The goal was canceled."""

    def feedback(self, report: ChunkReport) -> None:
        """Publish one chunk's feedback."""


class Canceled(Exception):
    """The goal was canceled."""


class TimedOut(Exception):
    """The goal's time ran out."""


class RunFailed(Exception):
    """The loop cannot go on (no fresh observation, a chunk stale on arrival); the message says why."""


def run_policy(
    policy, instruction, io, config, max_chunks, timeout, observation_timeout=2.0, shaping=None, floor=None, trace=None
):
    """Run `policy` (a Policy: select_action_chunk) for up to max_chunks chunks or timeout [s];
    floor: a floor.GripFloor every chunk's targets are raised to, then shaping: a blending.RateLimit
    every chunk is shaped with before it is sent (None: neither; sent as anchored and blended); trace:
    a trace.ChunkTrace every inferred chunk is written to (None: none; its files are on disk when this
    returns). The stream is stopped however the run ends."""
    run = _Run(policy, instruction, io, config, timeout, observation_timeout, shaping, floor, trace)
    try:
        while run.chunks < max_chunks:
            reply = run.step(run.chunks)
            if reply is None or reply.accepted:
                continue
            run.check()  # a chunk not sent because the goal was canceled
            if reply.check != 'late':
                return run.result(
                    False, f'chunk {run.chunks} refused by the execution node: {reply.reason}', reply.check
                )
            run.starved += 1  # it came too late to splice: the arm brakes to rest, start again from there
            run.plan = None
        if run.plan is not None:
            run.wait_until(lambda: run.now() >= run.plan.end)
        return run.result(True, f'executed {run.chunks} chunks (max_chunks; a policy does not signal done)')
    except Canceled:
        return run.result(False, 'canceled')
    except TimedOut:
        return run.result(False, f'timeout reached ({timeout:.1f} s) after {run.chunks} chunks')
    except RunFailed as exc:
        return run.result(False, str(exc))
    except PolicyError as exc:
        return run.result(False, f'the policy failed: {exc}')
    finally:
        io.stop(run.stream_id)
        if trace is not None:
            trace.flush()


class _Run:
    """The state of one goal's loop."""

    def __init__(self, policy, instruction, io, config, timeout, observation_timeout, shaping, floor, trace):
        self.policy, self.instruction, self.io, self.c = policy, instruction, io, config
        self.shaping, self.floor, self.trace = shaping, floor, trace
        self.deadline = time.monotonic() + timeout
        self.observation_timeout = observation_timeout
        self.stream_id = f'vla-{uuid.uuid4().hex[:8]}'
        self.plan = None  # Plan on the stream clock; None: the arm rests (no motion committed)
        self.offset = 0.0  # stream clock - robot clock
        self.ensemble = TemporalEnsemble(config.ensemble_decay)
        self.started = time.monotonic()
        self.chunks = self.actions = self.starved = 0
        self.latencies = []
        self.last_splice = 0.0
        self.last_stamp = -np.inf  # stamp of the newest frame used (each chunk sees a newer one)
        self.dropped = self.raised = self.cut = 0

    def now(self):
        """Stream clock now."""
        return self.io.clock() + self.offset

    def result(self, success, reason, check=''):
        """The RunResult so far."""
        elapsed = time.monotonic() - self.started
        return RunResult(
            success,
            reason,
            self.chunks,
            self.actions,
            elapsed,
            check,
            self.starved,
            self.dropped,
            self.raised,
            self.cut,
            list(self.latencies),
        )

    def wait_until(self, condition):
        """Sleep until condition() holds (Canceled, TimedOut)."""
        while not condition():
            self.check()
            time.sleep(POLL)

    def check(self):
        """Raise Canceled or TimedOut when it is time to end."""
        if self.io.cancelled():
            raise Canceled()
        if time.monotonic() > self.deadline:
            raise TimedOut()

    def _due(self):
        """When the next chunk should be inferred (stream clock), so that at the typical latency (the
        median of the last RECENT chunks') it arrives - rtc: after execute_steps actions of the running
        chunk, a step before the committed motion ends at the latest; otherwise just before the
        committed segment ends. A slower inference lets the motion run out: the stream brakes to rest
        and the loop starts again from there (starved)."""
        dt, ahead = self.c.control_period, float(np.median(self.latencies[-RECENT:])) + self.c.lead
        if self.c.blending == 'rtc':  # infer while the current chunk runs
            return min(self.last_splice + self.c.execute_steps * dt, self.plan.end - dt) - ahead
        return self.plan.end - ahead - dt

    def _observe(self):
        limit = time.monotonic() + self.observation_timeout
        while True:
            self.check()
            obs, why = self.io.observation()
            if obs is not None and obs.stamp > self.last_stamp:
                self.last_stamp = obs.stamp
                return obs
            why = why or 'no frame newer than the last one used'
            if time.monotonic() > limit:
                raise RunFailed(f'no fresh observation for {self.observation_timeout:.1f} s: {why}')
            time.sleep(POLL)

    def _guard(self, times, positions, start_velocity):
        """A chunk made ready for the gate: raised to the floor, shaped to the limits, cut where it can
        still brake above the floor. (times, positions, velocities, targets raised), or None when no
        start of a chunk that continues a motion can brake above the floor."""
        raised = 0
        if self.floor is not None:
            positions, raised = self.floor.apply(positions)
        if self.shaping is not None:
            positions = self.shaping.shape(times, positions, start_velocity)
        v0 = np.zeros(ARM_DOF) if start_velocity is None else start_velocity
        if self.floor is not None:
            keep = self.floor.stoppable(times, positions, v0)
            if keep < len(times) and times[keep - 1] >= MIN_SEGMENT:
                times, positions = times[:keep], positions[:keep]
                self.cut += 1
            elif keep < len(times) and start_velocity is not None:
                return None
        return times, positions, point_velocities(times, positions, v0), raised

    def step(self, index):
        """Infer, anchor, blend and send chunk `index`; its StreamReply (None: dropped as stale)."""
        if self.plan is not None:
            self.wait_until(lambda: self.now() >= self._due())
        obs = self._observe()
        sent_at = time.perf_counter()
        observation = {'images': obs.images, 'depth': obs.depth, 'state': obs.state, 'instruction': self.instruction}
        try:
            actions = np.asarray(self.policy.select_action_chunk(observation))
            targets = joint_targets(actions, obs.state, self.c.action_space)
        except ValueError as exc:  # a malformed chunk
            raise PolicyError(str(exc)) from None
        inference_time = time.perf_counter() - sent_at
        ready = self.io.clock()
        self.check()
        commanded = None if self.plan is None else self.plan.sample(obs.stamp + self.offset)  # at the frame's time
        reply, sent = self._commit(index, obs, actions, targets, inference_time, ready - obs.stamp)
        if self.trace is not None:
            self.trace.chunk(self.stream_id, index, obs, ready, actions, sent, commanded)
        return reply

    def _commit(self, index, obs, actions, targets, inference_time, latency):
        """Anchor, blend, guard and send one inferred chunk: (StreamReply or None when dropped, (times,
        positions, splice) sent or None)."""
        c = self.c
        q_obs = obs.state[:ARM_DOF]
        if self.plan is not None and self.plan.end < self.now() + c.lead:  # too late to continue the motion
            self.starved += 1
            self.wait_until(lambda: self.now() > self.plan.end)
            self.wait_until(lambda: np.abs(self.io.arm()[1]).max() < REST_SPEED)
            self.plan = None
            return None, None  # the arm braked to rest: the next chunk comes from a frame of then, not this one
        if self.plan is None:
            self.wait_until(lambda: np.abs(self.io.arm()[1]).max() < REST_SPEED)
            q_start = self.io.arm()[0]
            times, positions = anchor(targets, 0.0, c.control_period, 0.0, q_start, moving=False, q_obs=q_obs)
            skipped, splice = 0, -1.0
        else:
            if c.blending == 'rtc':  # a chunk not yet begun (a stream started from rest begins its motion
                # start_lead ahead) runs execute_steps first: spliced at its start it would be replaced from rest
                earliest = self.last_splice + c.execute_steps * c.control_period * (self.last_splice > self.now())
                splice = min(max(self.now() + c.lead, earliest), self.plan.end)
            else:
                splice = self.plan.end
            q_splice = self.plan.sample(splice)
            anchored = anchor(
                targets,
                obs.stamp + self.offset,
                c.control_period,
                splice,
                q_splice,
                q_obs=q_obs,
                converge_steps=c.converge_steps,
            )
            if anchored is None or anchored[0][-1] < MIN_SEGMENT:  # stale on arrival: infer again, fresher
                self.dropped += 1
                return None, None
            times, positions = anchored
            skipped = len(targets) - (len(times) - 1)
            if c.blending == 'rtc':
                positions = blend_seam(self.plan, splice, times, positions, c.blend_steps)
        chunk = times, positions  # the whole re-anchored chunk
        if c.blending == 'temporal_ensembling' and self.plan is not None:
            self.ensemble.forget_before(splice)
            self.ensemble.add(splice + times, positions)
            segment = self.ensemble.segment(splice, positions[0], c.control_period, c.execute_steps)
            if segment is None or segment[0][-1] < MIN_SEGMENT:
                self.dropped += 1
                return None, None
            times, positions = segment
        elif c.blending != 'rtc':  # receding horizon; temporal ensembling from rest (one chunk: no mean)
            times, positions = times[: c.execute_steps + 1], positions[: c.execute_steps + 1]
        guarded = self._guard(times, positions, None if self.plan is None else self.plan.velocity(splice))
        if guarded is None:
            self.dropped += 1  # no start of it can brake above the floor; the committed motion can
            return None, None
        times, positions, velocities, raised = guarded
        running = ()
        if c.blending == 'rtc' and c.blend_gripper and self.plan is not None:
            running = [self.plan.opening(splice + t) for t in times[: c.blend_steps]]
        grippers = gripper_commands(actions, skipped, len(times), c.command_gripper, running)
        openings = gripper_openings(actions, skipped, len(times))
        reply = self.io.send(self.stream_id, times, positions, velocities, splice, grippers)
        sent = times, positions, splice
        if not reply.accepted:
            return reply, sent
        # stream_time is the stream's clock before the gate ran, so this bound on the offset is low by
        # the gate's time; each reply may tighten it (a new stream, after a rest, has a clock of its own)
        offset = reply.stream_time - self.io.clock()
        if self.plan is None:
            self.offset = offset
            splice = reply.committed_until - times[-1]
            self.plan = Plan(splice + times, positions, velocities, openings)
            self.ensemble.chunks = [(splice + chunk[0], chunk[1])]
        else:
            self.offset = max(self.offset, offset)
            self.plan.splice(splice, times, positions, velocities, openings)
        self.last_splice = splice
        self.chunks += 1
        self.raised += raised
        self.actions += len(times) - 1
        self.latencies.append(latency)
        depth = max(0, int(round((reply.committed_until - reply.stream_time) / c.control_period)))
        self.io.feedback(
            ChunkReport(index, len(times) - 1, self.actions, inference_time, latency, depth, actions[-1], skipped)
        )
        return reply, sent
