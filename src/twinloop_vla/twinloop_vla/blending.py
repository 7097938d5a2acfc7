"""Action chunks onto a running joint stream (no ROS): re-anchoring and the three blendings.

Clocks. A chunk's actions are joint targets at `obs_time + (k + 1) * dt` (k = 0..C-1): one
control period apart, the first one period after the observation the policy saw. Everything here
is on the stream clock (twinloop_execution.streaming: seconds since the stream began).

Re-anchoring. A chunk is executed from a splice point `s` where the commanded motion is at `q_s`,
usually later than the observation (inference took time, the arm kept moving). `anchor` drops the
targets whose time is already past at `s` and shifts the rest by `q_s - chunk(s)`, so the
chunk continues from where the arm is commanded to be with the motion the policy meant from
there; with `converge_steps` the shift fades out linearly over that many actions, so the chunk
comes back to the policy's own targets (its correction of the aim is followed, as the stepped
evaluation follows it), otherwise it is kept rigidly for the whole chunk. A chunk that starts a
stream from rest is not time-clipped (the arm stood still while the policy thought): it starts at
the splice point, shifted by `q_s - q_obs`.

Blendings (how consecutive chunks become one commanded motion):
- `receding_horizon`: the first `execute_steps` actions of each chunk, spliced where the previous
  segment ends; the next chunk is inferred just before that.
- `temporal_ensembling` (ACT): every chunk's re-anchored targets are kept; the `execute_steps`
  actions after the splice point are the weighted mean of all chunks covering each time, weight
  exp(-decay * i) with i = 0 the oldest chunk.
- `rtc` (real-time chunking): the whole chunk is sent; the next is inferred while it runs and
  spliced `lead` seconds ahead of now, over the seam the position ramps linearly from the running
  chunk to the new one (`blend_steps` actions). The stepped evaluation (stepping.py) also ramps
  a chunk that starts the motion from rest; this runner does not yet (it broke the splice of the
  next chunk in tests/test_vla_policy_node.py: see the issue note). This blends positions at
  execution time; it is not the guided-inpainting inference of Black et al. (2025).

Shaping to the limits (`RateLimit`, libfranka's limitRate idea). A learned policy's targets may ask
for slightly more acceleration than the arm allows where its motion changes (the lift after a
grasp); the gate would refuse the chunk and end the goal. Before the gate, targets are followed
with a velocity feed-forward and a gap closed over `settle_steps`, every step's velocity change and
velocity clipped to `margin` of the limits, and the targets clipped into the joint range. A chunk
whose shaped path would stray more than `tolerance` [rad] from it is sent unchanged: a jump is the
gate's to refuse, not this to hide.
"""

from dataclasses import dataclass

import numpy as np

from twinloop_core.gripper import open_or_shut

BLENDINGS = ('receding_horizon', 'temporal_ensembling', 'rtc')
ACTION_SPACES = ('joint_position', 'joint_delta')
ARM_DOF = 7
RANGE_MARGIN = 0.01  # [rad] shaped targets stay this far inside the joint range


@dataclass
class BlendConfig:
    """How chunks are cut, anchored and blended (config/vla_policy.yaml documents each)."""

    blending: str = 'rtc'
    control_period: float = 0.05  # [s] between a chunk's actions (the policy's dataset rate)
    execute_steps: int = 4  # actions executed per chunk before the next one takes over
    blend_steps: int = 3  # rtc: actions over which the seam is blended
    converge_steps: int = 0  # actions over which a re-anchored chunk's shift fades to its own targets (0: kept)
    blend_gripper: bool = False  # rtc: the gripper opening blended over the seam too (as the stepped evaluation does)
    ensemble_decay: float = 0.1  # temporal ensembling: ACT's m in exp(-m i)
    lead: float = 0.2  # [s] a chunk is spliced this far ahead of now (service call and gate time)
    action_space: str = 'joint_position'  # joint_position: absolute targets; joint_delta: targets - observed state
    command_gripper: bool = True  # an action's entry after the arm joints is the gripper opening [m], sent per point
    limit_margin: float = (
        0.9  # share of the arm's velocity and acceleration limits chunks are shaped to (0: not shaped)
    )
    limit_tolerance: float = 0.15  # [rad] a chunk the shaping would move further than this is left to the gate
    # (a reversal of the policy's motion needs ~0.1 rad to be followed within the limits)

    def __post_init__(self):
        problems = []
        if self.blending not in BLENDINGS:
            problems.append(f'blending {self.blending!r} is not one of {BLENDINGS}')
        if self.action_space not in ACTION_SPACES:
            problems.append(f'action_space {self.action_space!r} is not one of {ACTION_SPACES}')
        if not self.control_period > 0 or not self.lead > 0:
            problems.append('control_period and lead must be > 0')
        if self.execute_steps * self.control_period < 0.1 - 1e-9:
            problems.append('execute_steps * control_period must be >= 0.1 s (the shortest streamed chunk)')
        if self.execute_steps < 1 or self.blend_steps < 1 or self.ensemble_decay < 0 or self.converge_steps < 0:
            problems.append('execute_steps and blend_steps must be >= 1, ensemble_decay and converge_steps >= 0')
        if not (0 <= self.limit_margin <= 1 and self.limit_tolerance >= 0):
            problems.append('limit_margin must be in [0, 1] and limit_tolerance >= 0')
        if problems:
            raise ValueError('; '.join(problems))


@dataclass
class RateLimit:
    """Joint targets shaped to velocity and acceleration limits (see the module docstring)."""

    velocity: np.ndarray  # [rad/s] per arm joint (the margin applied)
    acceleration: np.ndarray  # [rad/s^2]
    tolerance: float = 0.05  # [rad]
    settle_steps: float = 2.0  # a gap to the targets halves every step at 2
    lower: np.ndarray = None  # [rad] joint range targets are clipped into (None: not clipped)
    upper: np.ndarray = None

    @classmethod
    def of(cls, limits, config: BlendConfig):
        """The shaping of config for the arm's JointLimits; None when config.limit_margin is 0."""
        if config.limit_margin <= 0:
            return None
        m = config.limit_margin
        return cls(
            m * np.asarray(limits.velocity, float),
            m * np.asarray(limits.acceleration, float),
            config.limit_tolerance,
            lower=np.asarray(limits.lower, float) + RANGE_MARGIN,
            upper=np.asarray(limits.upper, float) - RANGE_MARGIN,
        )

    def shape(self, times, positions, start_velocity=None, previous=None):
        """positions (n, 7) at times (n,) from 0: the commanded point, then targets. start_velocity: the
        commanded velocity there (None: at rest). The gate estimates the first step's acceleration over
        half its duration (2 (dq / dt - v0) / dt), the others over the mean of two steps; the shaping keeps
        each within the limit as the gate estimates it. previous: the unshaped target the commanded point
        stands for (default: itself).
        Returns the shaped positions (the first point kept), or the given ones when shaping strays more
        than tolerance from them or they are not finite."""
        times, given = np.asarray(times, float), np.asarray(positions, float)
        if not np.all(np.isfinite(given)):
            return given
        positions = given
        if self.lower is not None:  # targets a little beyond the joint range: into it (the first is commanded)
            positions = np.vstack([given[:1], np.clip(given[1:], self.lower, self.upper)])
        q = positions[0].copy()
        v = np.zeros_like(q) if start_velocity is None else np.asarray(start_velocity, float)
        last = q if previous is None else np.asarray(previous, float)
        shaped = [q]
        for k in range(1, len(positions)):
            dt = times[k] - times[k - 1]
            wanted = (positions[k] - last) / dt + (last - q) / (self.settle_steps * dt)
            # the gate's spacing of the velocity change into segment k (twinloop_execution.safety.derivatives)
            step = self.acceleration * (times[k] - times[max(k - 2, 0)]) / 2
            v = np.clip(np.clip(wanted, v - step, v + step), -self.velocity, self.velocity)
            q = q + v * dt
            last = positions[k]
            shaped.append(q)
        shaped = np.array(shaped)
        return shaped if np.max(np.abs(shaped - given)) <= self.tolerance else given


def joint_targets(actions, state, action_space):
    """(C, >= 7) policy actions -> (C, 7) arm joint targets; state: the observed (>= 7,) joints.
    Dimensions after the seventh (the gripper) are not arm targets and are dropped here."""
    actions = np.asarray(actions, float)
    if actions.ndim != 2 or actions.shape[1] < ARM_DOF or len(actions) < 1:
        raise ValueError(f'a chunk must be (C, >= {ARM_DOF}) actions, got shape {actions.shape}')
    arm = actions[:, :ARM_DOF]
    return arm + np.asarray(state, float)[:ARM_DOF] if action_space == 'joint_delta' else arm


def gripper_commands(actions, first, points, enabled=True, running=()):
    """The gripper opening [m] to command at each of a chunk's `points` (the splice point first): at
    point j the entry after the arm joints of the action executed from there (index first + j), open
    or shut as the demonstrations commanded it (a regressed 0.065 m is open: left between the two,
    the hand stops half open and perception takes what lies between the fingers as held; NaN stays
    NaN for the execution node to refuse). So the gripper changes with the arm motion of its step, as
    the stepped simulation and the recordings apply it. -1 (keep) past the chunk's last action, and
    everywhere when disabled or without such an entry. running: the running chunk's openings at the
    chunk's first points, the splice point included (rtc's seam: the opening at point j ramps from
    running[j] to the new chunk's with weight (j + 1) / (len(running) + 1), the weight blend_seam gives
    the arm's target that action moves to, before open or shut is decided, as the stepped evaluation
    blends every action dimension; NaN there: not blended)."""
    openings = gripper_openings(actions, first, points)
    if not enabled or np.asarray(actions).shape[1] <= ARM_DOF:
        return [-1.0] * points
    for j, old in enumerate(running[:points]):
        if np.isfinite(old) and np.isfinite(openings[j]):
            w = (j + 1) / (len(running) + 1)
            openings[j] = (1 - w) * old + w * openings[j]
    past_end = np.arange(points) + first >= len(actions)
    return [-1.0 if beyond else float(open_or_shut(opening)) for opening, beyond in zip(openings, past_end)]


def gripper_openings(actions, first, points):
    """The raw openings [m] of gripper_commands' points: the entry after the arm joints of the action
    executed from point j (index first + j); NaN past the chunk's last action or without such an entry."""
    actions = np.asarray(actions, float)
    openings = np.full(points, np.nan)
    if actions.shape[1] > ARM_DOF:
        count = max(0, min(points, len(actions) - first))
        openings[:count] = actions[first : first + count, ARM_DOF]
    return openings


def anchor(targets, obs_time, dt, splice_time, q_splice, moving=True, q_obs=None, converge_steps=0):
    """Re-anchor a chunk at the splice point: (times from 0, positions) whose first point is q_splice.

    targets (C, 7) at obs_time + (k + 1) dt. moving: the arm runs a commanded motion through the
    splice point (drop past targets, shift by q_splice - chunk(splice), the shift fading to none
    over converge_steps targets when > 0); otherwise it rests there (keep every target, shift by
    q_splice - q_obs). Returns None when no target lies after the splice point (the chunk is
    entirely stale)."""
    targets, q_splice = np.asarray(targets, float), np.asarray(q_splice, float)
    times = obs_time + dt * np.arange(1, len(targets) + 1)
    if not moving:
        offset = q_splice - np.asarray(q_obs, float)
        return np.concatenate([[0.0], times - obs_time]), np.vstack([q_splice, targets + offset])
    later = times > splice_time + 1e-6
    if not later.any():
        return None
    earlier = ~later
    if earlier.any():  # the chunk's position at the splice point, between its last past and first future target
        t0, q0 = times[earlier][-1], targets[earlier][-1]
    else:  # before the first target: between the observed state (or the first target) and it
        t0, q0 = obs_time, targets[0] if q_obs is None else np.asarray(q_obs, float)
    t1, q1 = times[later][0], targets[later][0]
    w = (splice_time - t0) / (t1 - t0) if t1 > t0 else 1.0
    offset = q_splice - ((1 - w) * q0 + w * q1)
    kept = np.ones(int(later.sum()))
    if converge_steps > 0:
        kept = np.clip(1.0 - np.arange(1, len(kept) + 1) / converge_steps, 0.0, 1.0)
    return np.concatenate([[0.0], times[later] - splice_time]), np.vstack(
        [q_splice, targets[later] + kept[:, None] * offset]
    )


class Plan:
    """The client's copy of what it committed to the stream (chunks without braking tails): positions
    and the velocities sent with them, both linear between points as the stream samples them."""

    def __init__(self, times, positions, velocities, openings=None):
        self.times, self.positions = np.asarray(times, float), np.asarray(positions, float)
        self.velocities = np.asarray(velocities, float)
        self.openings = np.full(len(self.times), np.nan) if openings is None else np.asarray(openings, float)

    @property
    def end(self):
        """Stream time where the last sent segment ends."""
        return float(self.times[-1])

    def sample(self, t):
        """Commanded position at stream time t (within the plan; held at its ends)."""
        return np.array([np.interp(t, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])])

    def velocity(self, t):
        """Commanded velocity at stream time t (the stream's: within the plan; held at its ends)."""
        return np.array([np.interp(t, self.times, self.velocities[:, j]) for j in range(self.velocities.shape[1])])

    def opening(self, t):
        """The policy's raw gripper opening [m] commanded at stream time t (NaN past the plan or where none)."""
        if t > self.end + 1e-9:
            return np.nan
        return float(self.openings[max(0, int(np.searchsorted(self.times, t + 1e-9, side='right')) - 1)])

    def splice(self, splice_time, times, positions, velocities, openings=None):
        """Replace what follows splice_time by a segment (times from 0 at splice_time)."""
        keep = self.times < splice_time - 1e-9
        openings = np.full(len(times), np.nan) if openings is None else np.asarray(openings, float)
        self.times = np.concatenate([self.times[keep], splice_time + np.asarray(times, float)])
        self.positions = np.vstack([self.positions[keep], positions])
        self.velocities = np.vstack([self.velocities[keep], velocities])
        self.openings = np.concatenate([self.openings[keep], openings])


def blend_seam(plan, splice_time, times, positions, blend_steps):
    """rtc: over the first blend_steps actions after the splice point, ramp linearly from the
    running plan to the new chunk (the first point, the splice itself, is the plan's)."""
    positions = np.array(positions, float)
    for k in range(1, min(blend_steps, len(times) - 1) + 1):
        t = splice_time + times[k]
        if t > plan.end:
            break  # the running plan holds past its end: nothing to blend with
        w = k / (blend_steps + 1)
        positions[k] = (1 - w) * plan.sample(t) + w * positions[k]
    return positions


class TemporalEnsemble:
    """ACT's temporal ensembling over re-anchored chunks on the stream clock."""

    def __init__(self, decay):
        self.decay = decay
        self.chunks = []  # [(times, positions)] on the stream clock, oldest first

    def add(self, times, positions):
        """Keep one re-anchored chunk (absolute stream times)."""
        self.chunks.append((np.asarray(times, float), np.asarray(positions, float)))

    def forget_before(self, t):
        """Drop chunks that end before stream time t."""
        self.chunks = [c for c in self.chunks if c[0][-1] >= t]

    def segment(self, splice_time, q_splice, dt, steps):
        """(times from 0, positions): q_splice, then the ensembled targets at splice + k dt (k = 1..steps)
        while at least one chunk covers them (None if none does)."""
        times, points = [0.0], [np.asarray(q_splice, float)]
        for k in range(1, steps + 1):
            t = splice_time + k * dt
            covering = [(i, c) for i, c in enumerate(self.chunks) if c[0][0] <= t + 1e-9 <= c[0][-1] + 2e-9]
            if not covering:
                break
            weights = np.array([np.exp(-self.decay * rank) for rank, _ in enumerate(covering)])
            values = np.array([[np.interp(t, c[0], c[1][:, j]) for j in range(c[1].shape[1])] for _, c in covering])
            times.append(k * dt)
            points.append(weights @ values / weights.sum())
        return (np.array(times), np.array(points)) if len(times) > 1 else None
