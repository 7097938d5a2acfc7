"""The safety gate: nothing moves the arm unless every check here passes.

Checks, in order, each rejection with a reason: structure (joint names, finite numbers,
increasing times), freshness of the joint state and of perception, start near the measured
state, joint position limits, step size between points, velocity and acceleration limits (from
the robot description: URDF + joint_limits.yaml), workspace box and keep-out zones for the grip
point (densely interpolated), and collisions of the exact trajectory in the twin. Plain Python:
every executor backend calls it.
"""

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
import yaml


@dataclass(frozen=True)
class JointLimits:
    names: tuple
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray  # [rad/s]
    acceleration: np.ndarray  # [rad/s^2]

    @classmethod
    def from_description(cls, urdf_path, limits_yaml, joints):
        """Position and velocity limits from the URDF, accelerations from MoveIt's joint_limits.yaml."""
        root = ET.parse(urdf_path).getroot()
        by_name = {j.get('name'): j.find('limit') for j in root.findall('joint')}
        with open(limits_yaml) as f:
            extra = (yaml.safe_load(f) or {}).get('joint_limits', {})
        lower, upper, velocity, acceleration = [], [], [], []
        for name in joints:
            limit = by_name.get(name)
            if limit is None or name not in extra or 'max_acceleration' not in extra[name]:
                raise ValueError(f'joint {name}: limits missing in {urdf_path} or {limits_yaml}')
            lower.append(float(limit.get('lower')))
            upper.append(float(limit.get('upper')))
            velocity.append(float(limit.get('velocity')))
            acceleration.append(float(extra[name]['max_acceleration']))
        return cls(tuple(joints), *(np.array(v) for v in (lower, upper, velocity, acceleration)))


@dataclass(frozen=True)
class Box:
    name: str
    min: np.ndarray
    max: np.ndarray

    def contains(self, points):
        return np.all((points >= self.min) & (points <= self.max), axis=-1)


@dataclass
class SafetyConfig:
    workspace: Box
    keep_out: list = field(default_factory=list)
    max_step: float = 0.25
    velocity_margin: float = 1.0
    acceleration_margin: float = 1.0
    state_timeout: float = 0.5
    perception_timeout: float = 5.0
    start_tolerance: float = 0.05

    @classmethod
    def from_yaml(cls, path):
        with open(path) as f:
            data = (yaml.safe_load(f) or {})['safety']
        box = lambda d, name: Box(name, np.array(d['min'], float), np.array(d['max'], float))  # noqa: E731
        return cls(
            workspace=box(data['workspace'], 'workspace'),
            keep_out=[box(z, z['name']) for z in data.get('keep_out', [])],
            **{
                k: float(data[k])
                for k in (
                    'max_step',
                    'velocity_margin',
                    'acceleration_margin',
                    'state_timeout',
                    'perception_timeout',
                    'start_tolerance',
                )
                if k in data
            },
        )


@dataclass
class Verdict:
    ok: bool
    reason: str = ''
    check: str = ''  # which check refused

    def __bool__(self):
        return self.ok


def _refuse(check, reason):
    return Verdict(False, reason, check)


class SafetyGate:
    """grip_positions(q: (N, 7)) -> (N, 3); collisions(q: (N, 7)) -> list of 'a|b' strings (may be None: no twin)."""

    def __init__(self, limits: JointLimits, config: SafetyConfig, grip_positions, collisions=None):
        self.limits, self.config = limits, config
        self.grip_positions, self.collisions = grip_positions, collisions

    def check(self, joint_names, times, positions, current=None, state_age=None, perception_age=None):
        """Verdict on a trajectory: times [s] (N,), positions (N, len(joint_names)) in any joint order."""
        try:
            verdict, q, t = self._structure(joint_names, times, positions)
        except (TypeError, ValueError) as exc:
            return _refuse('structure', f'malformed trajectory: {exc}')
        if not verdict:
            return verdict
        checks = (
            lambda: self._freshness(state_age, perception_age),
            lambda: self._start(q, current),
            lambda: self._positions(q),
            lambda: self._steps(q),
            lambda: self._dynamics(t, q, current),
            lambda: self._workspace(q),
            lambda: self._collisions(q),
        )
        for check in checks:  # in order, each only once the ones before passed (later ones assume sane input)
            verdict = check()
            if not verdict:
                return verdict
        return Verdict(True)

    def _structure(self, joint_names, times, positions):
        names = list(joint_names)
        if len(set(names)) != len(names):
            return _refuse('structure', f'duplicate joint names {names}'), None, None
        if set(names) != set(self.limits.names):
            return _refuse('structure', f'joint names {names} must be exactly {list(self.limits.names)}'), None, None
        t = np.asarray(times, dtype=float)
        q = np.asarray(positions, dtype=float)
        if t.ndim != 1 or len(t) == 0:
            return _refuse('structure', 'empty trajectory'), None, None
        if q.shape != (len(t), len(names)):
            return _refuse('structure', f'positions have shape {q.shape}, expected {(len(t), len(names))}'), None, None
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            return _refuse('structure', 'NaN or infinite values'), None, None
        if t[0] < 0 or np.any(np.diff(t) <= 0):
            return _refuse('structure', 'time_from_start must be non-negative and strictly increasing'), None, None
        order = [names.index(n) for n in self.limits.names]
        return Verdict(True), q[:, order], t

    def _freshness(self, state_age, perception_age):
        if state_age is None or state_age > self.config.state_timeout:
            return _refuse(
                'watchdog', f'joint state is stale ({_age(state_age)} old, limit {self.config.state_timeout} s)'
            )
        if self.collisions is not None and (perception_age is None or perception_age > self.config.perception_timeout):
            return _refuse(
                'watchdog',
                f'object poses are stale ({_age(perception_age)} old, limit {self.config.perception_timeout} s)',
            )
        return Verdict(True)

    def _start(self, q, current):
        if current is None:
            return _refuse('start', 'no measured joint state to start from')
        gap = np.abs(q[0] - current).max()
        if gap > max(self.config.start_tolerance, self.config.max_step):
            return _refuse('start', f'first point is {gap:.3f} rad from the measured joints')
        return Verdict(True)

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
        if steps.max() > self.config.max_step:
            i = int(steps.argmax())
            return _refuse('step_size', f'points {i}->{i + 1} jump {steps[i]:.3f} rad (limit {self.config.max_step})')
        return Verdict(True)

    def _dynamics(self, t, q, current):
        """Velocity and acceleration by finite differences, starting from rest at the measured state."""
        times = np.concatenate([[0.0], t]) if t[0] > 0 else t
        points = np.vstack([current, q]) if t[0] > 0 else q
        if len(times) < 2:
            return Verdict(True)
        dt = np.diff(times)
        velocity = np.diff(points, axis=0) / dt[:, None]
        limit = self.limits.velocity * self.config.velocity_margin
        over = np.abs(velocity) > limit + 1e-9
        if over.any():
            seg, joint = np.argwhere(over)[0]
            return _refuse(
                'velocity_limits',
                f'segment {seg}: {self.limits.names[joint]} at {abs(velocity[seg, joint]):.2f} rad/s '
                f'(limit {limit[joint]:.2f})',
            )
        if len(velocity) >= 2:
            acceleration = np.diff(velocity, axis=0) / ((dt[:-1] + dt[1:]) / 2)[:, None]
            limit = self.limits.acceleration * self.config.acceleration_margin
            over = np.abs(acceleration) > limit + 1e-9
            if over.any():
                seg, joint = np.argwhere(over)[0]
                return _refuse(
                    'acceleration_limits',
                    f'at point {seg}: {self.limits.names[joint]} accelerates '
                    f'{abs(acceleration[seg, joint]):.1f} rad/s^2 (limit {limit[joint]:.1f})',
                )
        return Verdict(True)

    def dense(self, q, resolution=0.02):
        """The trajectory resampled so consecutive points differ by at most `resolution` rad."""
        out = [q[0]]
        for a, b in zip(q[:-1], q[1:]):
            n = max(1, int(math.ceil(np.abs(b - a).max() / resolution)))
            out.extend(a + (b - a) * (i / n) for i in range(1, n + 1))
        return np.array(out)

    def _workspace(self, q):
        points = self.grip_positions(self.dense(q))
        inside = self.config.workspace.contains(points)
        if not inside.all():
            p = points[int(np.argmin(inside))]
            return _refuse('workspace', f'grip point leaves the workspace at ({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f}) m')
        for zone in self.config.keep_out:
            hit = zone.contains(points)
            if hit.any():
                p = points[int(np.argmax(hit))]
                return _refuse(
                    'keep_out', f'grip point enters keep-out zone {zone.name} at ({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f}) m'
                )
        return Verdict(True)

    def _collisions(self, q):
        if self.collisions is None:
            return Verdict(True)
        hits = self.collisions(self.dense(q))
        if hits:
            return _refuse('collision', f'the trajectory collides in the twin: {", ".join(hits[:5])}')
        return Verdict(True)


def _age(age):
    return 'never received' if age is None else f'{age:.2f} s'
