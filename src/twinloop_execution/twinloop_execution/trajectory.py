"""Time parametrisation of joint waypoints with ruckig: jerk-limited, rest to rest at every
waypoint (the safest smoothing for a short manipulation motion), sampled at a fixed period."""

from dataclasses import dataclass

import numpy as np
import yaml
from ruckig import InputParameter, Result, Ruckig, Trajectory


@dataclass
class TimedPath:
    """A timed joint path as sent to the controller."""

    times: np.ndarray  # (N,) [s] from start, strictly increasing, times[0] > 0
    positions: np.ndarray  # (N, dof) [rad]
    velocities: np.ndarray  # (N, dof) [rad/s]

    @property
    def duration(self):
        """Time of the last sample [s]."""
        return float(self.times[-1])

    def sample(self, t):
        """Position at time t (linear between samples; the start is the first waypoint)."""
        return np.array([np.interp(t, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])])


def jerk_limits(limits_yaml, joints):
    """max_jerk per joint [rad/s^3] from a MoveIt-style joint_limits.yaml."""
    with open(limits_yaml) as f:
        entries = (yaml.safe_load(f) or {})['joint_limits']
    return np.array([float(entries[j]['max_jerk']) for j in joints])


def parametrize(waypoints, velocity, acceleration, jerk, scale=0.5, period=0.05):
    """waypoints (K, dof), the first being the current state -> a TimedPath within scale * limits."""
    waypoints = np.asarray(waypoints, float)
    if len(waypoints) < 2:
        raise ValueError('need the start and at least one waypoint')
    if not 0 < scale <= 1:
        raise ValueError(f'velocity scale must be in (0, 1], not {scale}')
    dof = waypoints.shape[1]
    generator = Ruckig(dof)
    times, positions, velocities = [], [], []
    offset = 0.0
    for a, b in zip(waypoints[:-1], waypoints[1:]):
        if np.abs(b - a).max() < 1e-6:
            continue
        inp = InputParameter(dof)
        inp.current_position, inp.target_position = list(a), list(b)
        inp.current_velocity = inp.current_acceleration = inp.target_velocity = inp.target_acceleration = [0.0] * dof
        inp.max_velocity = list(np.asarray(velocity) * scale)
        inp.max_acceleration = list(np.asarray(acceleration) * scale)
        inp.max_jerk = list(np.asarray(jerk) * scale)
        segment = Trajectory(dof)
        if generator.calculate(inp, segment) not in (Result.Working, Result.Finished):
            raise ValueError('ruckig could not time the segment')
        n = max(1, int(np.ceil(segment.duration / period)))
        for k in range(1, n + 1):
            p, v, _ = segment.at_time(segment.duration * k / n)
            times.append(offset + segment.duration * k / n)
            positions.append(p)
            velocities.append(v)
        offset += segment.duration
    if not times:
        raise ValueError('every waypoint equals the start: nothing to do')
    return TimedPath(np.array(times), np.array(positions), np.array(velocities))
