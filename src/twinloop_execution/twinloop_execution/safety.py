"""The safety gate: nothing moves the arm unless every check here passes.

Checks, in order, each refusal with a reason (Verdict.check names it):

size             at most max_points points, looked at before anything else (and the sweep at most
                 max_sweep_samples configurations);
structure        joint names, finite numbers, increasing times, the start velocity's shape;
watchdog         the joint state's and the object poses' ages: finite, not negative, fresh;
start            a finite measured state of 7 joints; a first point at t = 0 IS the start and lies
                 within start_tolerance of it; a first point at t > 0 is reached from it in one
                 step of at most max_step;
position_limits  every point inside the URDF's joint limits;
step_size        at most max_step between consecutive points;
velocity_limits, acceleration_limits, jerk_limits
                 finite differences (see below) within margin * the robot description's limits
                 (URDF + joint_limits.yaml);
workspace, keep_out
                 every point of the arm's centre line (the link_points function: shoulder to grip
                 point) inside the workspace box and out of the keep-out zones along the whole
                 continuous motion;
collision        no collision in the twin along the same sweep.

The motion. The arm starts at `current` (the measured joints, or the commanded state a streamed
chunk splices into) at t = 0 with `start_velocity` (default: at rest) and passes through the
points in order, linearly between them (the sweep); it must end at rest. When times[0] > 0 the
segment from `current` to the first point is part of the motion (timed from t = 0); when
times[0] == 0 the first point is the start (within start_tolerance of `current`), the dynamics
start there, and the short way from `current` to it is still swept.

Dynamics. The velocity samples are the start velocity (at t = 0), the mean velocity of each
segment and zero at the end. Acceleration and jerk are divided differences of these samples over
the spacing of their averaging kernels (B-spline knots: the start and end times repeated), and a
trajectory that starts from rest also starts and ends with zero acceleration. Each estimate is a
weighted average (non-negative weights summing to one) of the true derivative of any smooth motion
through the points with those end conditions, so it never exceeds that motion's peak: a sampled
jerk-limited (ruckig) profile passes at margin 1.0, while jumps in speed at either end and
bang-bang accelerations show up in full.

The sweep. Moving joint j by dq moves no point of the arm more than reach[j] * |dq| (PANDA_REACH,
a bound checked against the model by the tests). Each segment is cut into a power of two of equal
pieces so that no arm point moves more than sweep_resolution between samples; the workspace box
is shrunk and the keep-out boxes grown by sweep_resolution / 2, so the continuous motion of the
centre line is covered, not just the samples, and any collision deeper than sweep_resolution / 2
is found. Plain Python and numpy: every executor backend calls it.
"""

import math
import numbers
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from twinloop_core.robot import ARM_JOINTS

# [m] per joint: how far any point of the Panda (collision and visual geoms, fingers open) can be
# from each joint's axis, plus 0.1 m for a held object. ArmKinematics.joint_reach() computes the
# bound from the model (1.18, 1.18, 0.87, 0.78, 0.39, 0.39, 0.30 m); tests check this table covers it.
PANDA_REACH = np.array([1.3, 1.3, 1.0, 0.9, 0.5, 0.5, 0.45])
_REL = 1e-9  # relative slack on the limits for floating-point rounding


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits in the order of `names`."""

    names: tuple
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray  # [rad/s]
    acceleration: np.ndarray  # [rad/s^2]
    jerk: np.ndarray  # [rad/s^3]

    @classmethod
    def from_description(cls, urdf_path, limits_yaml, joints):
        """Position and velocity limits from the URDF, accelerations and jerks from MoveIt's joint_limits.yaml."""
        root = ET.parse(urdf_path).getroot()
        by_name = {j.get('name'): j.find('limit') for j in root.findall('joint')}
        with open(limits_yaml) as f:
            extra = (yaml.safe_load(f) or {}).get('joint_limits', {})
        lower, upper, velocity, acceleration, jerk = [], [], [], [], []
        for name in joints:
            limit = by_name.get(name)
            entry = extra.get(name) or {}
            if limit is None or 'max_acceleration' not in entry or 'max_jerk' not in entry:
                raise ValueError(f'joint {name}: limits missing in {urdf_path} or {limits_yaml}')
            lower.append(float(limit.get('lower')))
            upper.append(float(limit.get('upper')))
            velocity.append(float(limit.get('velocity')))
            acceleration.append(float(entry['max_acceleration']))
            jerk.append(float(entry['max_jerk']))
        return cls(tuple(joints), *(np.array(v) for v in (lower, upper, velocity, acceleration, jerk)))

    @classmethod
    def panda(cls, root):
        """The Panda's limits under a repository (or install) root: urdf/panda.urdf, config/panda_joint_limits.yaml."""
        root = Path(root)
        return cls.from_description(
            root / 'urdf' / 'panda.urdf', root / 'config' / 'panda_joint_limits.yaml', ARM_JOINTS
        )


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in the world frame [m]."""

    name: str
    min: np.ndarray
    max: np.ndarray

    def contains(self, points):
        """Whether each point (..., 3) is inside (boundary included)."""
        return np.all((points >= self.min) & (points <= self.max), axis=-1)


@dataclass
class SafetyConfig:
    """The gate's settings (config/safety.yaml)."""

    workspace: Box
    keep_out: list = field(default_factory=list)
    max_step: float = 0.25
    velocity_margin: float = 1.0
    acceleration_margin: float = 1.0
    jerk_margin: float = 1.0
    state_timeout: float = 0.5
    perception_timeout: float = 5.0
    start_tolerance: float = 0.05
    max_points: int = 5000
    sweep_resolution: float = 0.005
    max_sweep_samples: int = 100000

    def __post_init__(self):
        for name in ('max_step', 'velocity_margin', 'acceleration_margin', 'jerk_margin', 'sweep_resolution'):
            if not getattr(self, name) > 0:
                raise ValueError(f'safety config: {name} must be positive, not {getattr(self, name)}')
        for name in ('max_points', 'max_sweep_samples'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'safety config: {name} must be at least 1')

    @classmethod
    def from_yaml(cls, path):
        """The `safety` section of a YAML file."""
        with open(path) as f:
            data = (yaml.safe_load(f) or {})['safety']
        box = lambda d, name: Box(name, np.array(d['min'], float), np.array(d['max'], float))  # noqa: E731
        floats = (
            'max_step',
            'velocity_margin',
            'acceleration_margin',
            'jerk_margin',
            'state_timeout',
            'perception_timeout',
            'start_tolerance',
            'sweep_resolution',
        )
        return cls(
            workspace=box(data['workspace'], 'workspace'),
            keep_out=[box(z, z['name']) for z in data.get('keep_out', [])],
            **{k: float(data[k]) for k in floats if k in data},
            **{k: int(data[k]) for k in ('max_points', 'max_sweep_samples') if k in data},
        )


@dataclass
class Verdict:
    """ok, or which check refused and why."""

    ok: bool
    reason: str = ''
    check: str = ''  # which check refused

    def __bool__(self):
        return self.ok


def _refuse(check, reason):
    return Verdict(False, reason, check)


class SafetyGate:
    """The checks above for one robot (limits), configuration and world.

    link_points(q: (N, 7)) -> (N, M, 3): points along the arm's centre line, consecutive ones on one
    rigid link (ArmKinematics.link_points), or (N, 3): one point per configuration.
    collisions(q: (N, 7)) -> list of 'a|b' strings (None: no twin, no collision check).
    reach: per joint [m], see PANDA_REACH.
    """

    def __init__(self, limits: JointLimits, config: SafetyConfig, link_points, collisions=None, reach=PANDA_REACH):
        self.limits, self.config = limits, config
        self.link_points, self.collisions = link_points, collisions
        self.point_names = getattr(getattr(link_points, '__self__', None), 'link_point_names', None)
        self.reach = np.asarray(reach, float)
        if self.reach.shape != (len(limits.names),) or not np.all(self.reach > 0):
            raise ValueError(f'reach must hold one positive distance per joint, not {reach}')

    def check(
        self,
        joint_names,
        times,
        positions,
        current=None,
        state_age=None,
        perception_age=None,
        start_velocity=None,
    ):
        """Verdict on a trajectory.

        joint_names: the columns of positions (any order of exactly the gate's joints); times [s] (N,)
        from the start, strictly increasing, times[0] >= 0; positions (N, len(joint_names)) [rad];
        current: (7,) [rad] in the gate's joint order (limits.names): the measured joints, or the
        commanded state a streamed chunk continues from; state_age, perception_age [s]: how old the
        joint state and the object poses are; start_velocity: (7,) [rad/s] in the gate's joint order,
        the velocity at `current` for a chunk that continues a motion (None: starts at rest). The
        motion must end at rest. Never raises: anything unexpected is a refusal (check 'internal')."""
        try:
            return self._check(joint_names, times, positions, current, state_age, perception_age, start_velocity)
        except Exception as exc:  # fail closed
            return _refuse('internal', f'the safety gate failed: {type(exc).__name__}: {exc}')

    def _check(self, joint_names, times, positions, current, state_age, perception_age, start_velocity):
        verdict = self._size(times, positions)
        if not verdict:
            return verdict
        try:
            verdict, q, t, v0 = self._structure(joint_names, times, positions, start_velocity)
        except (TypeError, ValueError) as exc:
            return _refuse('structure', f'malformed trajectory: {exc}')
        if not verdict:
            return verdict
        verdict = self._freshness(state_age, perception_age)
        if not verdict:
            return verdict
        verdict, start = self._start(q, t, current)
        if not verdict:
            return verdict
        # the motion: from `start` at t = 0 unless the first point is the start itself
        motion_t = t if t[0] == 0 else np.concatenate([[0.0], t])
        motion_q = q if t[0] == 0 else np.vstack([start, q])
        path = np.vstack([start, q])  # what the sweep covers
        checks = (
            lambda: self._positions(q),
            lambda: self._steps(q),
            lambda: self._dynamics(motion_t, motion_q, v0),
            lambda: self._sweep_size(path),
        )
        for check in checks:  # in order, each only once the ones before passed (later ones assume sane input)
            verdict = check()
            if not verdict:
                return verdict
        dense = self.dense(path)
        verdict = self._workspace(dense)
        return self._collisions(dense) if verdict else verdict

    # --- input ---------------------------------------------------------------------------------
    def _size(self, times, positions):
        limit = self.config.max_points
        for what, value in (('times', times), ('positions', positions)):
            try:
                n = len(value)
            except TypeError:
                continue  # not a sequence: the structure check says so
            if n > limit:
                return _refuse('size', f'{n} {what}: at most {limit} points per trajectory (split it)')
        return Verdict(True)

    def _structure(self, joint_names, times, positions, start_velocity):
        names = list(joint_names)
        refuse = lambda reason: (_refuse('structure', reason), None, None, None)  # noqa: E731
        if not all(isinstance(n, str) for n in names):
            return refuse(f'joint names must be strings: {names}')
        if len(set(names)) != len(names):
            return refuse(f'duplicate joint names {names}')
        if set(names) != set(self.limits.names):
            return refuse(f'joint names {names} must be exactly {list(self.limits.names)}')
        t = np.asarray(times, dtype=float)
        q = np.asarray(positions, dtype=float)
        if t.ndim != 1 or len(t) == 0:
            return refuse('empty trajectory')
        if q.shape != (len(t), len(names)):
            return refuse(f'positions have shape {q.shape}, expected {(len(t), len(names))}')
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            return refuse('NaN or infinite values')
        if t[0] < 0 or np.any(np.diff(t) <= 0):
            return refuse('time_from_start must be non-negative and strictly increasing')
        v0 = None  # at rest
        if start_velocity is not None:
            if isinstance(start_velocity, (str, bytes)):
                return refuse('start_velocity must be 7 numbers [rad/s]')
            v0 = np.asarray(start_velocity, dtype=float)
            if v0.shape != (len(names),) or not np.all(np.isfinite(v0)):
                return refuse(f'start_velocity must be {len(names)} finite numbers [rad/s], got shape {v0.shape}')
        order = [names.index(n) for n in self.limits.names]
        return Verdict(True), q[:, order], t, v0

    def _freshness(self, state_age, perception_age):
        bad = _bad_age(state_age)
        if bad or state_age > self.config.state_timeout:
            return _refuse(
                'watchdog',
                f'joint state is {bad or "stale"} ({_age(state_age)} old, limit {self.config.state_timeout} s)',
            )
        bad = _bad_age(perception_age)
        if perception_age is not None and bad:
            return _refuse('watchdog', f'object poses are {bad} ({_age(perception_age)} old)')
        if self.collisions is not None and (perception_age is None or perception_age > self.config.perception_timeout):
            return _refuse(
                'watchdog',
                f'object poses are stale ({_age(perception_age)} old, limit {self.config.perception_timeout} s)',
            )
        return Verdict(True)

    def _start(self, q, t, current):
        if current is None:
            return _refuse('start', 'no measured joint state to start from'), None
        try:
            start = None if isinstance(current, (str, bytes)) else np.asarray(current, dtype=float)
        except (TypeError, ValueError):
            start = None
        if start is None or start.shape != (q.shape[1],) or not np.all(np.isfinite(start)):
            shown = np.array2string(start, precision=3) if start is not None and start.size <= 7 else type(current)
            return _refuse('start', f'the measured joint state is not {q.shape[1]} finite numbers: {shown}'), None
        gap = np.abs(q[0] - start).max()
        if t[0] == 0 and gap > self.config.start_tolerance * (1 + _REL):
            return _refuse(
                'start',
                f'the first point (t = 0) is {gap:.3f} rad from the measured joints '
                f'(start_tolerance {self.config.start_tolerance} rad)',
            ), None
        if t[0] > 0 and gap > self.config.max_step * (1 + _REL):
            return _refuse(
                'start',
                f'the first point (t = {t[0]:.3f} s) is {gap:.3f} rad from the measured joints '
                f'(max_step {self.config.max_step} rad)',
            ), None
        return Verdict(True), start

    # --- joints --------------------------------------------------------------------------------
    def _positions(self, q):
        low = q < self.limits.lower - 1e-9
        high = q > self.limits.upper + 1e-9
        if low.any() or high.any():
            point, joint = np.argwhere(low | high)[0]
            return _refuse(
                'position_limits',
                f'point {point}: {self.limits.names[joint]} = {q[point, joint]:.3f} rad outside '
                f'[{self.limits.lower[joint]:.3f}, {self.limits.upper[joint]:.3f}]',
            )
        return Verdict(True)

    def _steps(self, q):
        if len(q) < 2:
            return Verdict(True)
        steps = np.abs(np.diff(q, axis=0)).max(axis=1)
        if steps.max() > self.config.max_step * (1 + _REL):
            i = int(steps.argmax())
            return _refuse('step_size', f'points {i}->{i + 1} jump {steps[i]:.3f} rad (limit {self.config.max_step})')
        return Verdict(True)

    @staticmethod
    def derivatives(times, positions, start_velocity=None):
        """Finite-difference estimates of a motion: times (K,) [s] from t[0] = 0, positions (K, 7) in
        the gate's joint order, start_velocity (7,) or None (at rest). Returns (velocity (K+1, 7):
        start, each segment's mean, 0 at the end; acceleration (K, 7): from the start velocity to the
        first segment, between segments, from the last segment to rest; jerk between consecutive
        accelerations, with zero acceleration added at a start from rest and at the end). See the
        module docstring for why each estimate is bounded by the true peak."""
        t, p = np.asarray(times, float), np.asarray(positions, float)
        zero = np.zeros((1, p.shape[1]))
        v0 = zero[0] if start_velocity is None else np.asarray(start_velocity, float)
        velocity = np.vstack([v0[None], np.diff(p, axis=0) / np.diff(t)[:, None], zero])
        knots = np.concatenate([[t[0]], t, [t[-1]]])  # velocity sample k averages over knots[k]..knots[k+1]
        acceleration = np.diff(velocity, axis=0) / ((knots[2:] - knots[:-2]) / 2)[:, None]
        padded = np.vstack([acceleration, zero])
        knots = np.concatenate([knots, [t[-1]]])
        if start_velocity is None:  # at rest: no acceleration yet either
            padded, knots = np.vstack([zero, padded]), np.concatenate([[t[0]], knots])
        jerk = np.diff(padded, axis=0) / ((knots[3:] - knots[:-3]) / 3)[:, None]
        return velocity, acceleration, jerk

    def _dynamics(self, t, q, v0):
        """Velocity, acceleration and jerk of the motion from (t[0] = 0, q[0], v0 or rest) to rest at q[-1]."""
        names, config = self.limits.names, self.config
        v_limit = self.limits.velocity * config.velocity_margin
        start = 'from rest' if v0 is None else 'from the start velocity'
        if v0 is not None:
            over = np.abs(v0) > v_limit * (1 + _REL)
            if over.any():
                j = int(np.argmax(over))
                return _refuse(
                    'velocity_limits', f'start velocity: {names[j]} at {abs(v0[j]):.2f} rad/s (limit {v_limit[j]:.2f})'
                )
        if len(t) < 2:  # no time to move: only a standstill is a motion
            if v0 is not None and np.any(v0):
                return _refuse('acceleration_limits', 'a single point at t = 0 cannot stop a moving arm (not at rest)')
            return Verdict(True)
        velocity, acceleration, jerk = self.derivatives(t, q, v0)

        def segment(k):
            return f'segment {k} (t = {t[k]:.3f}..{t[k + 1]:.3f} s)'

        def sample(k, count, verb):
            if k == 0:
                return f'the start ({start}): {verb}'
            if k == count - 1:
                return f'the end (t = {t[-1]:.3f} s; the last point must be at rest): {verb}'
            return f'near t = {t[min(k, len(t) - 1)]:.3f} s: {verb}'

        checks = (
            ('velocity_limits', 'rad/s', velocity[1:-1], v_limit, segment),
            (
                'acceleration_limits',
                'rad/s^2',
                acceleration,
                self.limits.acceleration * config.acceleration_margin,
                lambda k: sample(k, len(acceleration), 'accelerates'),
            ),
            (
                'jerk_limits',
                'rad/s^3',
                jerk,
                self.limits.jerk * config.jerk_margin,
                lambda k: sample(k, len(jerk), 'jerk'),
            ),
        )
        for check, unit, values, limit, where in checks:
            over = np.abs(values) > limit * (1 + _REL)
            if over.any():
                k, j = np.argwhere(over)[0]
                return _refuse(
                    check, f'{where(k)}: {names[j]} at {abs(values[k, j]):.2f} {unit} (limit {limit[j]:.2f})'
                )
        return Verdict(True)

    # --- the sweep -----------------------------------------------------------------------------
    def _pieces(self, path):
        """Per segment of path (K, 7): how many equal pieces (a power of two) keep every arm point
        within sweep_resolution per piece."""
        moved = np.abs(np.diff(path, axis=0)) @ self.reach  # bound on any point's travel [m]
        ratio = np.clip(moved / self.config.sweep_resolution, 1.0, 2.0**40)
        return np.exp2(np.ceil(np.log2(ratio))).astype(np.int64)

    def dense(self, path):
        """The path (K, 7) resampled: straight in joint space between its points, no arm point moving
        more than sweep_resolution between consecutive samples (first and last points included)."""
        path = np.asarray(path, float)
        if len(path) < 2:
            return path.copy()
        pieces = self._pieces(path)
        segment = np.repeat(np.arange(len(pieces)), pieces)
        first = np.cumsum(pieces) - pieces
        fraction = (np.arange(len(segment)) - np.repeat(first, pieces) + 1) / np.repeat(pieces, pieces)
        a, b = path[segment], path[segment + 1]
        return np.vstack([path[:1], a + (b - a) * fraction[:, None]])

    def _sweep_size(self, path):
        samples = int(self._pieces(path).sum()) + 1 if len(path) > 1 else 1
        if samples > self.config.max_sweep_samples:
            return _refuse(
                'size',
                f'the motion needs {samples} sweep samples at {self.config.sweep_resolution * 1000:.0f} mm '
                f'(limit {self.config.max_sweep_samples}): too long a path for one trajectory',
            )
        return Verdict(True)

    def _points(self, qs):
        points = np.asarray(self.link_points(qs), float)
        return points.reshape(len(qs), -1, 3)

    def _point_name(self, m):
        names = self.point_names
        return names[m] if names is not None and m < len(names) else f'arm point {m}'

    def _workspace(self, dense):
        half = self.config.sweep_resolution / 2
        ws = self.config.workspace
        for chunk in range(0, len(dense), 20000):
            qs = dense[chunk : chunk + 20000]
            points = self._points(qs)
            if not np.all(np.isfinite(points)):
                return _refuse('workspace', 'the arm points are not finite')
            outside = ~np.all((points >= ws.min + half) & (points <= ws.max - half), axis=-1)
            if outside.any():
                i, m = np.argwhere(outside)[0]
                p = points[i, m]
                return _refuse(
                    'workspace',
                    f'{self._point_name(m)} leaves the workspace at ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) m',
                )
            for zone in self.config.keep_out:
                hit = _segments_hit_box(points, zone.min - half, zone.max + half)
                if hit.any():
                    i, m = np.argwhere(hit)[0]
                    a, b = points[i, m], points[i, min(m + 1, points.shape[1] - 1)]
                    p = (a + b) / 2
                    what = (
                        self._point_name(m)
                        if m + 1 >= points.shape[1]
                        else (f'{self._point_name(m)}-{self._point_name(m + 1)}')
                    )
                    return _refuse(
                        'keep_out',
                        f'{what} enters keep-out zone {zone.name} near ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) m',
                    )
        return Verdict(True)

    def _collisions(self, dense):
        if self.collisions is None:
            return Verdict(True)
        hits = self.collisions(dense)
        if hits:
            return _refuse('collision', f'the trajectory collides in the twin: {", ".join(hits[:5])}')
        return Verdict(True)


def _segments_hit_box(points, low, high):
    """(N, M) whether the segment from points[:, m] to points[:, m + 1] (the point itself for the last
    m, or when M == 1) meets the box [low, high] (slab test)."""
    a = points
    b = np.concatenate([points[:, 1:], points[:, -1:]], axis=1)
    d = b - a
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):  # flat axes are handled below
        s1, s2 = (low - a) / d, (high - a) / d
    flat = d == 0
    inside = (a >= low) & (a <= high)
    enter = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(s1, s2)).max(axis=-1)
    leave = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(s1, s2)).min(axis=-1)
    return np.maximum(enter, 0.0) <= np.minimum(leave, 1.0)


def _bad_age(age):
    """Why an age cannot be used ('' if it can): None, not a number, NaN or negative."""
    if age is None:
        return 'missing'
    if isinstance(age, bool) or not isinstance(age, numbers.Real):
        return 'not a number'
    if math.isnan(age) or math.isinf(age):
        return 'not finite'
    if age < 0:
        return 'from the future'
    return ''


def _age(age):
    if age is None:
        return 'never received'
    try:
        return f'{float(age):.2f} s'
    except (TypeError, ValueError):
        return repr(age)
