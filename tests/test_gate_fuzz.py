"""Fuzzing the safety gate against an independent oracle.

The oracle below is written apart from twinloop_execution.safety: it reads the limits from the URDF
and the YAML files itself, computes the derivative estimates from explicit averaging windows, runs
the arm's centre line through its own forward kinematics (Franka's DH table, checked against MuJoCo
below) on a finer sweep, and tests link segments against boxes by minimising their distance. It
holds a trajectory to the gate's documented contract:

- at most max_points points; joint names exactly the arm's; finite, strictly increasing times from
  t >= 0; finite positions; a start velocity, when given, of 7 finite numbers within the velocity limits;
- the joint state's age finite, >= 0 and <= state_timeout; the object poses' age, when given, finite
  and >= 0, and <= perception_timeout when there is a world to collide with;
- a finite measured state of 7 joints; a first point at t = 0 within start_tolerance of it, one at
  t > 0 within max_step;
- positions within the URDF limits, steps of at most max_step;
- velocity, acceleration and jerk within margin * limits, estimated from the start velocity (0 and
  zero acceleration at rest), each segment's mean velocity and rest (zero velocity and acceleration)
  at the end: each estimate is a divided difference over the distance between the centres of the
  averaging windows of the two samples it compares;
- every point of the arm's centre line (shoulder .. grip point) inside the workspace box and no
  segment of it touching a keep-out box, on a sweep at most 2 mm apart (its own reach bound
  per joint from the DH chain): the gate promises the continuous motion, so any sweep is fair;
- no collision deeper than sweep_resolution / 2 (plus 0.5 mm for the contact solver) on that sweep:
  the gate promises no deeper collision can hide between its samples.

An escape is a trajectory the gate accepts and the oracle refuses; a crash is any exception (the
gate turns its own into check 'internal'). Metamorphic properties: faster timing (times scaled by
c < 1, a start velocity by 1 / c), permuted joint names, midpoint-subdivided segments (except for
step_size refusals, which subdividing answers) and reversed time never turn a refusal into an
acceptance. The oracle's numeric slack (1e-7 relative) is wider than the gate's (1e-9), so an
escape is a real violation, not rounding. bench/gate_fuzz.py runs the same cases by the million.
"""

import dataclasses
import math
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinloop_execution import trajectory
from twinloop_execution.kinematics import ArmKinematics
from twinloop_execution.safety import Box, JointLimits, SafetyConfig, SafetyGate
from twinloop_twin import scene

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
JOINTS = tuple(scene.ARM_JOINTS)
HOME = np.array(scene.HOME)
SLACK = 1e-7  # the oracle's relative slack on every limit
SWEEP_STEP = 0.002  # [m] the oracle's sweep: at most 2 mm per sample for any centre-line point
CONTACT_SLACK = 0.0005  # [m] on top of sweep_resolution / 2 for MuJoCo's contact depths
START_SLACK = 0.005  # [m] a link on an object where the motion starts may press this much deeper (the spec)


# --- the oracle ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Spec:
    """What the oracle holds a trajectory to (its own reading of the robot description and config)."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    workspace: tuple  # (min, max)
    keep_out: list  # [(name, min, max)]
    max_step: float
    start_tolerance: float
    state_timeout: float
    perception_timeout: float
    max_points: int
    margins: tuple  # velocity, acceleration, jerk
    resolution: float
    spheres: list = None  # [(centre, radius)]: the cheap world, or None
    twin: object = None  # OracleTwin, or None

    @classmethod
    def read(cls, root=ROOT):
        """From urdf/panda.urdf, config/panda_joint_limits.yaml and config/safety.yaml, parsed here."""
        limits = {}
        for joint in ET.parse(root / 'urdf' / 'panda.urdf').getroot().iter('joint'):
            tag = joint.find('limit')
            if tag is not None:
                limits[joint.get('name')] = {k: float(tag.get(k)) for k in ('lower', 'upper', 'velocity')}
        extra = yaml.safe_load(open(root / 'config' / 'panda_joint_limits.yaml'))['joint_limits']
        safety = yaml.safe_load(open(root / 'config' / 'safety.yaml'))['safety']
        col = lambda key: np.array([limits[j][key] for j in JOINTS])  # noqa: E731
        return cls(
            lower=col('lower'),
            upper=col('upper'),
            velocity=col('velocity'),
            acceleration=np.array([extra[j]['max_acceleration'] for j in JOINTS], float),
            jerk=np.array([extra[j]['max_jerk'] for j in JOINTS], float),
            workspace=(np.array(safety['workspace']['min'], float), np.array(safety['workspace']['max'], float)),
            keep_out=[(z['name'], np.array(z['min'], float), np.array(z['max'], float)) for z in safety['keep_out']],
            max_step=safety['max_step'],
            start_tolerance=safety['start_tolerance'],
            state_timeout=safety['state_timeout'],
            perception_timeout=safety['perception_timeout'],
            max_points=safety['max_points'],
            margins=(safety['velocity_margin'], safety['acceleration_margin'], safety['jerk_margin']),
            resolution=safety['sweep_resolution'],
        )


# Franka's DH table (Craig's convention): a_{i-1}, alpha_{i-1}, d_i; frame i sits at link i's origin.
DH = (
    (0.0, 0.0, 0.333),
    (0.0, -math.pi / 2, 0.0),
    (0.0, math.pi / 2, 0.316),
    (0.0825, math.pi / 2, 0.0),
    (-0.0825, -math.pi / 2, 0.384),
    (0.0, math.pi / 2, 0.0),
    (0.088, math.pi / 2, 0.0),
)
HAND, GRIP = 0.1065, 0.1065 + 0.097  # robosuite's hand and grip site along link 7's z axis [m]


def centre_line(qs):
    """(N, 9, 3): link1..link7 origins, the hand and the grip point, by the DH table."""
    qs = np.asarray(qs, float)
    n = len(qs)
    rot, pos = np.empty((n, 3, 3)), np.zeros((n, 3))
    rot[:] = np.eye(3)
    out = np.empty((n, 9, 3))
    for i, (a, alpha, d) in enumerate(DH):
        ca, sa = math.cos(alpha), math.sin(alpha)
        x, y, z = rot[:, :, 0], ca * rot[:, :, 1] + sa * rot[:, :, 2], ca * rot[:, :, 2] - sa * rot[:, :, 1]
        c, s = np.cos(qs[:, i])[:, None], np.sin(qs[:, i])[:, None]
        pos = pos + a * x + d * z
        rot = np.empty((n, 3, 3))
        rot[:, :, 0], rot[:, :, 1], rot[:, :, 2] = c * x + s * y, c * y - s * x, z
        out[:, i] = pos
    out[:, 7] = pos + HAND * rot[:, :, 2]
    out[:, 8] = pos + GRIP * rot[:, :, 2]
    return out


# [m] per joint, from the DH table: the centre line's farthest point from each joint's axis (chain sums)
ORACLE_REACH = np.array([1.16, 1.16, 0.84, 0.76, 0.3, 0.3, 0.0]) + 0.01


def oracle_sweep(path, step=SWEEP_STEP):
    """Configurations along the straight joint-space segments of path, no point moving > step between them."""
    path = np.asarray(path, float)
    counts = np.maximum(1, np.ceil(np.abs(np.diff(path, axis=0)) @ ORACLE_REACH / step)).astype(int)
    which = np.repeat(np.arange(len(counts)), counts)
    within = np.concatenate([np.arange(1, n + 1) / n for n in counts]) if len(counts) else np.zeros(0)
    a = path[which]
    return np.vstack([path[:1], a + within[:, None] * (path[which + 1] - a)])


def segment_box_distance(a, b, low, high, iterations=70):
    """Smallest distance between segments a->b (..., 3) and a box, by golden-section search over the
    convex function s -> distance(a + s (b - a), box)."""

    def dist(s):
        p = a + s[..., None] * (b - a)
        return np.linalg.norm(p - np.clip(p, low, high), axis=-1)

    lo, hi = np.zeros(a.shape[:-1]), np.ones(a.shape[:-1])
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = dist(x1), dist(x2)
    for _ in range(iterations):
        left = f1 < f2
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        f1, f2 = dist(x1), dist(x2)
    return np.minimum.reduce([dist(np.zeros_like(lo)), dist(np.ones_like(lo)), f1, f2])


def segment_point_distance(a, b, c):
    """Distance from point c (3,) to segments a->b (..., 3)."""
    d = b - a
    s = np.clip(np.einsum('...i,...i', c - a, d) / np.maximum(np.einsum('...i,...i', d, d), 1e-300), 0, 1)
    return np.linalg.norm(a + s[..., None] * d - c, axis=-1)


class OracleTwin:
    """Collisions in a MuJoCo scene by the oracle's own rule, deeper than `depth` only: a robot link
    (fingers aside) touching anything, fingers touching the table or floor, robot links touching each
    other (finger pairs aside); but a link on anything not the robot that it already touches at the
    first configuration counts only where it presses more than START_SLACK deeper than there.
    Nothing is held in the fuzz cases (fingers open, away from objects)."""

    def __init__(self, model, qpos, depth):
        self.model, self.data, self.depth = model, mujoco.MjData(model), depth
        self.data.qpos[:] = qpos
        self.arm = [model.joint(j).qposadr[0] for j in JOINTS]
        body = [model.body(model.geom_bodyid[g]).name for g in range(model.ngeom)]
        self.robot = np.array([b.startswith('panda_') for b in body])
        self.finger = np.array(['finger' in b for b in body])
        self.ground = np.array([model.geom(g).name in ('table', 'floor') for g in range(model.ngeom)])
        # what a contact is between: the body, or the geom itself on the world body (the table)
        self.part = np.array([b if b else -1 - g for g, b in enumerate(model.geom_bodyid)])

    def deepest(self, qs):
        """Largest penetration [m] that counts, over the configurations (beyond the allowance of a
        contact the motion starts in)."""
        worst, start = 0.0, None
        for q in qs:
            self.data.qpos[self.arm] = q
            mujoco.mj_fwdPosition(self.model, self.data)
            n = self.data.ncon
            g1, g2 = self.data.contact.geom1[:n], self.data.contact.geom2[:n]
            depth = -self.data.contact.dist[:n]
            r1, r2 = self.robot[g1], self.robot[g2]
            both = r1 & r2 & ~(self.finger[g1] & self.finger[g2])
            one = r1 ^ r2
            link, other = np.where(r1, g1, g2), np.where(r1, g2, g1)
            pairs = list(zip(self.part[link], self.part[other]))
            if start is None:
                start = {}
                for pair, on, d in zip(pairs, one, depth):
                    if on and d >= 0:
                        start[pair] = max(start.get(pair, 0.0), float(d))
            allowance = np.array([start[p] + START_SLACK if on and p in start else 0.0 for p, on in zip(pairs, one)])
            counts = both | (one & (~self.finger[link] | self.ground[other]))
            if counts.any():
                worst = max(worst, float((depth - allowance)[counts].max()))
        return worst


def _number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def oracle_derivatives(times, points, v0):
    """(velocity, acceleration, jerk) estimates (rows: samples, columns: joints) of the motion from
    (times[0], points[0]) with start velocity v0 (None: at rest) to rest at the end. Each sample has an
    averaging window; a derivative is the difference of two samples over the distance between their
    windows' centres: a velocity window is an interval [t_a, t_b] (a point at either end), an
    acceleration window the triangle over (t_a, t_b, t_c), centred at their mean."""
    t = [float(x) for x in times]
    p = np.asarray(points, float)
    joints = p.shape[1]
    vel = [(np.zeros(joints) if v0 is None else np.asarray(v0, float), (t[0], t[0]))]
    for k in range(len(t) - 1):
        vel.append(((p[k + 1] - p[k]) / (t[k + 1] - t[k]), (t[k], t[k + 1])))
    vel.append((np.zeros(joints), (t[-1], t[-1])))
    acc = []
    for (va, (a0, a1)), (vb, (b0, b1)) in zip(vel, vel[1:]):
        acc.append(((vb - va) / ((b0 + b1) / 2 - (a0 + a1) / 2), (a0, a1, b1)))
    estimates = list(acc)
    if v0 is None:
        acc.insert(0, (np.zeros(joints), (t[0],) * 3))
    acc.append((np.zeros(joints), (t[-1],) * 3))
    jerk = [(jb - ja) / (sum(wb) / 3 - sum(wa) / 3) for (ja, wa), (jb, wb) in zip(acc, acc[1:])]
    return (
        np.array([v for v, _ in vel[1:-1]]).reshape(-1, joints),
        np.array([a for a, _ in estimates]).reshape(-1, joints),
        np.array(jerk).reshape(-1, joints),
    )


def oracle(spec, case):
    """(ok, reason) by the contract in the module docstring."""
    try:
        n = len(case.times)
    except TypeError:
        n = None
    try:
        m = len(case.positions)
    except TypeError:
        m = None
    if (n is not None and n > spec.max_points) or (m is not None and m > spec.max_points):
        return False, 'size'
    names = case.names
    if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) for x in names):
        return False, 'structure: names'
    if sorted(names) != sorted(JOINTS) or len(names) != 7:
        return False, 'structure: names'
    try:
        t = np.array(case.times, dtype=float)
        q = np.array(case.positions, dtype=float)
    except (TypeError, ValueError):
        return False, 'structure: not numbers'
    if t.ndim != 1 or len(t) == 0 or q.shape != (len(t), 7):
        return False, 'structure: shapes'
    if not (np.isfinite(t).all() and np.isfinite(q).all()):
        return False, 'structure: not finite'
    if t[0] < 0 or any(t[k + 1] <= t[k] for k in range(len(t) - 1)):
        return False, 'structure: times'
    q = q[:, [list(names).index(j) for j in JOINTS]]
    v0 = case.start_velocity
    if v0 is not None:
        if isinstance(v0, (str, bytes)):
            return False, 'structure: start velocity'
        try:
            v0 = np.array(v0, dtype=float)
        except (TypeError, ValueError):
            return False, 'structure: start velocity'
        if v0.shape != (7,) or not np.isfinite(v0).all():
            return False, 'structure: start velocity'
    age = case.state_age
    if not _number(age) or not math.isfinite(age) or age < 0 or age > spec.state_timeout:
        return False, 'watchdog: state'
    age = case.perception_age
    if age is not None and (not _number(age) or not math.isfinite(age) or age < 0):
        return False, 'watchdog: perception'
    if (spec.spheres is not None or spec.twin is not None) and (age is None or age > spec.perception_timeout):
        return False, 'watchdog: perception'
    if case.current is None or isinstance(case.current, (str, bytes)):
        return False, 'start: none'
    try:
        c = np.array(case.current, dtype=float)
    except (TypeError, ValueError):
        return False, 'start: not numbers'
    if c.shape != (7,) or not np.isfinite(c).all():
        return False, 'start: not finite'
    gap = max(abs(q[0, j] - c[j]) for j in range(7))
    if gap > (spec.start_tolerance if t[0] == 0 else spec.max_step) * (1 + SLACK):
        return False, 'start: gap'
    if (q < spec.lower - 1e-7).any() or (q > spec.upper + 1e-7).any():
        return False, 'position'
    for k in range(len(q) - 1):
        if np.abs(q[k + 1] - q[k]).max() > spec.max_step * (1 + SLACK):
            return False, 'step'
    if v0 is not None and (np.abs(v0) > spec.velocity * spec.margins[0] * (1 + SLACK)).any():
        return False, 'velocity: start'
    motion_t, motion_q = (t, q) if t[0] == 0 else (np.concatenate([[0.0], t]), np.vstack([c, q]))
    if len(motion_t) == 1:
        if v0 is not None and np.any(v0):
            return False, 'acceleration: no time to stop'
    else:
        estimates = oracle_derivatives(motion_t, motion_q, v0)
        limits = (spec.velocity, spec.acceleration, spec.jerk)
        for what, values, limit, margin in zip(('velocity', 'acceleration', 'jerk'), estimates, limits, spec.margins):
            if len(values) and (np.abs(values) > limit * margin * (1 + SLACK)).any():
                return False, what
    return sweep_verdict(spec, np.vstack([c, q]))


def sweep_verdict(spec, path):
    """(ok, reason) for the arm's centre line along path (K, 7) and the world's collisions."""
    qs = oracle_sweep(path)
    for chunk in range(0, len(qs), 4000):
        pts = centre_line(qs[chunk : chunk + 4000])
        low, high = spec.workspace
        if ((pts < low) | (pts > high)).any():
            return False, 'workspace'
        a, b = pts[:, :-1], pts[:, 1:]
        for name, zmin, zmax in spec.keep_out:
            near = np.all((np.minimum(a, b) <= zmax) & (np.maximum(a, b) >= zmin), axis=-1)
            if near.any() and (segment_box_distance(a[near], b[near], zmin, zmax) <= 1e-12).any():
                return False, f'keep_out {name}'
        for centre, radius in spec.spheres or ():
            if (segment_point_distance(a, b, centre) < radius - spec.resolution / 2 - 1e-9).any():
                return False, 'collision (sphere)'
    if spec.twin is not None and spec.twin.deepest(qs) > spec.twin.depth:
        return False, 'collision (twin)'
    return True, ''


# --- the cheap world: small spheres around the arm's centre line -------------------------------------------------


class Spheres:
    """collisions(qs) for the gate: names of centre-line segments closer to a sphere's centre than its radius."""

    def __init__(self, link_points, spheres):
        self.link_points, self.spheres = link_points, spheres

    def __call__(self, qs):
        pts = self.link_points(qs)
        a, b = pts[:, :-1], pts[:, 1:]
        hits = []
        for i, (centre, radius) in enumerate(self.spheres):
            if (segment_point_distance(a, b, centre) < radius).any():
                hits.append(f'arm|sphere{i}')
        return hits


# --- cases -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One call of SafetyGate.check, and the world it is judged in."""

    kind: str
    names: object
    times: object
    positions: object
    current: object
    state_age: object = 0.01
    perception_age: object = 0.1
    start_velocity: object = None
    workspace: tuple = None  # (min, max) instead of the configured box
    keep_out: list = None  # [(name, min, max)] instead of the configured zones
    spheres: list = None  # the cheap world, or None: no collision check (unless twin)
    twin: bool = False

    def arrays(self):
        """A copy with array-valued fields copied (metamorphic transforms build on it)."""
        return dataclasses.replace(self, times=np.array(self.times, float), positions=np.array(self.positions, float))


class Harness:
    """The gate and the oracle side by side, plus the case generator."""

    def __init__(self, twin=False):
        self.spec = Spec.read()
        self.limits = JointLimits.from_description(
            ROOT / 'urdf' / 'panda.urdf', ROOT / 'config' / 'panda_joint_limits.yaml', list(JOINTS)
        )
        self.config = SafetyConfig.from_yaml(ROOT / 'config' / 'safety.yaml')
        self.kin = ArmKinematics(scene.build_spec(scene.SceneConfig([], [])).compile())
        self.plain = SafetyGate(self.limits, self.config, self.kin.link_points)
        self.twin_kin = self.twin_spec = None
        if twin:
            config = scene.SceneConfig.from_yaml(ROOT / 'config' / 'scenes' / 'tabletop.yaml')
            speck = scene.ObjectConfig(id='speck', kind='cube', params={'size': 0.01}, pos=(0.45, 0.05, 0.3))
            model = scene.build_spec(dataclasses.replace(config, objects=[*config.objects, speck])).compile()
            data = mujoco.MjData(model)
            data.qpos[[model.joint(j).qposadr[0] for j in JOINTS]] = HOME
            data.qpos[[model.joint(j).qposadr[0] for j in scene.FINGER_JOINTS]] = (0.04, -0.04)  # open
            self.twin_kin = ArmKinematics(model, data)
            self.twin_gate = SafetyGate(self.limits, self.config, self.twin_kin.link_points, self.twin_kin.collisions)
            depth = self.config.sweep_resolution / 2 + CONTACT_SLACK
            self.oracle_twin = OracleTwin(model, data.qpos.copy(), depth)
        self.counts = {}

    # gate and oracle for a case
    def gate_for(self, case):
        """The SafetyGate that judges case (its world and any boxes it brings)."""
        if case.twin:
            gate = self.twin_gate
        elif case.spheres is not None:
            gate = SafetyGate(
                self.limits, self.config, self.kin.link_points, Spheres(self.kin.link_points, case.spheres)
            )
        else:
            gate = self.plain
        if case.workspace is not None or case.keep_out is not None:
            changes = {}
            if case.workspace is not None:
                changes['workspace'] = Box('workspace', *case.workspace)
            if case.keep_out is not None:
                changes['keep_out'] = [Box(*zone) for zone in case.keep_out]
            gate = SafetyGate(
                gate.limits, dataclasses.replace(gate.config, **changes), gate.link_points, gate.collisions
            )
        return gate

    def spec_for(self, case):
        """The oracle's Spec for case."""
        spec = self.spec
        changes = {}
        if case.workspace is not None:
            changes['workspace'] = case.workspace
        if case.keep_out is not None:
            changes['keep_out'] = case.keep_out
        if case.spheres is not None:
            changes['spheres'] = case.spheres
        if case.twin:
            changes['twin'] = self.oracle_twin
        return dataclasses.replace(spec, **changes) if changes else spec

    def gate(self, case):
        """The gate's verdict (an exception is recorded as check 'crash')."""
        try:
            verdict = self.gate_for(case).check(
                case.names,
                case.times,
                case.positions,
                current=case.current,
                state_age=case.state_age,
                perception_age=case.perception_age,
                start_velocity=case.start_velocity,
            )
        except Exception as exc:  # a crash: the gate must never raise
            return False, 'crash', f'{type(exc).__name__}: {exc}'
        if verdict.check == 'internal':
            return False, 'crash', verdict.reason
        return verdict.ok, verdict.check, verdict.reason

    def judge(self, case, rng=None, metamorphic=True):
        """Run one case: returns a list of findings [(what, case, detail)] (escape, crash, metamorphic)."""
        findings = []
        ok, check, reason = self.gate(case)
        self.counts['cases'] = self.counts.get('cases', 0) + 1
        key = 'accepted' if ok else check
        self.counts[key] = self.counts.get(key, 0) + 1
        if check == 'crash':
            return [('crash', case, reason)]
        if ok:
            truth, why = oracle(self.spec_for(case), case)
            if not truth:
                findings.append(('escape', case, f'oracle: {why}'))
        elif metamorphic and rng is not None and check not in ('structure', 'size', 'watchdog'):
            for name, other in transforms(case, check, rng):
                self.counts['metamorphic'] = self.counts.get('metamorphic', 0) + 1
                ok2, check2, reason2 = self.gate(other)
                if check2 == 'crash':
                    findings.append(('crash', other, reason2))
                elif ok2:
                    findings.append(('metamorphic', other, f'{name}: {check} ({reason}) became an acceptance'))
        return findings


def transforms(case, check, rng):
    """(name, case) variants that must be refused as well: faster, permuted, subdivided, reversed."""
    c = case.arrays()
    t, q = c.times, c.positions
    out = []
    factor = float(rng.uniform(0.3, 0.999))
    v0 = None if c.start_velocity is None else np.asarray(c.start_velocity, float) / factor
    out.append(('faster', dataclasses.replace(c, times=t * factor, start_velocity=v0)))
    order = rng.permutation(7)
    out.append(('permuted', dataclasses.replace(c, names=[c.names[i] for i in order], positions=q[:, order])))
    if check != 'step_size' and len(t) >= 2:
        cut = rng.random(len(t) - 1) < 0.5
        cut[rng.integers(len(cut))] = True
        times, points = [t[0]], [q[0]]
        for k in range(len(t) - 1):
            if cut[k]:
                times.append((t[k] + t[k + 1]) / 2)
                points.append((q[k] + q[k + 1]) / 2)
            times.append(t[k + 1])
            points.append(q[k + 1])
        out.append(('subdivided', dataclasses.replace(c, times=np.array(times), positions=np.array(points))))
    try:
        current = np.asarray(c.current, float)
    except (TypeError, ValueError):
        return out
    if current.shape != (7,) or not np.isfinite(current).all():
        return out
    order = [list(c.names).index(j) for j in JOINTS]
    if c.start_velocity is None and (t[0] > 0 or np.array_equal(q[0, order], current)):
        full_t = t if t[0] == 0 else np.concatenate([[0.0], t])
        full_q = q if t[0] == 0 else np.vstack([current[np.argsort(order)], q])  # current in the columns' order
        back_t = full_t[-1] - full_t[::-1]
        out.append(
            (
                'reversed',
                dataclasses.replace(c, times=back_t, positions=full_q[::-1].copy(), current=full_q[-1][order].copy()),
            )
        )
    return out


def _smooth(start, goal, duration, dt, t0=None):
    """Cosine (rest to rest) profile from start to goal sampled every dt; first time dt, or t0."""
    first = dt if t0 is None else t0
    t = np.arange(first, duration + 1e-12, dt) if duration > first else np.array([max(first, duration)])
    if t[-1] < duration - 1e-12:
        t = np.append(t, duration)
    s = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / duration, 0, 1))
    return t, start + s[:, None] * (goal - start)


class Generator:
    """Seeded cases: random, adversarial (near every limit and boundary), malformed, huge, the review's."""

    KINDS = (
        ('ruckig', 14),
        ('smooth', 12),
        ('walk', 8),
        ('coarse', 6),
        ('bang_bang', 4),
        ('chunk', 8),
        ('t0_start', 6),
        ('near_dynamics', 12),
        ('near_position', 5),
        ('near_box', 10),
        ('spheres', 8),
        ('malformed', 8),
        ('ages', 3),
        ('huge', 1),
        ('review', 1),
    )

    def __init__(self, harness, seed):
        self.h, self.rng = harness, np.random.default_rng(seed)
        names, weights = zip(*self.KINDS)
        self.kinds, self.p = names, np.array(weights, float) / sum(weights)
        self._reviewed = None

    def config(self, spread=0.4):
        """A random arm configuration near home, inside the joint limits."""
        lo, hi = self.h.spec.lower + 0.02, self.h.spec.upper - 0.02
        return np.clip(HOME + self.rng.normal(0, spread, 7), lo, hi)

    def case(self, kind=None):
        """One random case of the given (or a random) kind."""
        kind = kind or self.rng.choice(self.kinds, p=self.p)
        return getattr(self, f'_{kind}')()

    def _case(self, kind, t, q, current, **kw):
        return Case(kind, list(JOINTS), t, q, current, **kw)

    def _ruckig(self):
        r = self.rng
        start = self.config(0.3)
        spread = float(r.choice([0.1, 0.2, 0.4]))
        waypoints = [start] + [start + r.normal(0, spread, 7) for _ in range(int(r.integers(1, 3)))]
        waypoints = list(np.clip(waypoints, self.h.spec.lower + 0.01, self.h.spec.upper - 0.01))
        scale = float(r.choice([1.0, 0.5, r.uniform(0.05, 1.0)]))
        period = float(r.choice([0.05, 0.02, 0.01, r.uniform(0.002, 0.1)]))
        s = self.h.spec
        path = trajectory.parametrize(np.array(waypoints), s.velocity, s.acceleration, s.jerk, scale, period)
        return self._case('ruckig', path.times, path.positions, start)

    def _smooth(self):
        r = self.rng
        start = self.config(0.3)
        goal = start + r.normal(0, r.choice([0.05, 0.3, 0.8]), 7)
        dt = float(r.choice([0.05, 0.1, 0.01, r.uniform(0.001, 0.3)]))
        duration = float(r.uniform(0.05, 4.0))
        t, q = _smooth(start, goal, duration, dt, t0=0.0 if r.random() < 0.3 else None)
        return self._case('smooth', t, q, start)

    def _walk(self):
        r = self.rng
        start = self.config(0.3)
        n = int(r.integers(1, 40))
        t = np.cumsum(r.uniform(0.001, 0.5, n))
        if r.random() < 0.3:
            t -= t[0]
        q = start + r.normal(0, r.choice([0.005, 0.03, 0.1, 0.3]), (n, 7)).cumsum(axis=0)
        return self._case('walk', t, q, start)

    def _coarse(self):
        """A few big steps (up to max_step on some joint), slowly timed: 10-25 cm between points."""
        r = self.rng
        start = self.config(0.3)
        n = int(r.integers(1, 6))
        steps = r.uniform(-1, 1, (n, 7))
        steps *= r.uniform(0.1, 1.0, (n, 1)) * self.h.spec.max_step / np.abs(steps).max(axis=1, keepdims=True)
        t = np.cumsum(r.uniform(0.5, 1.5, n))
        return self._case('coarse', t, start + np.cumsum(steps, axis=0), start)

    def _on_path(self, case):
        """A random point on the arm's centre line somewhere along the continuous motion (between points)."""
        r = self.rng
        path = np.vstack([case.current, np.asarray(case.positions, float)])
        k = int(r.integers(len(path) - 1)) if len(path) > 1 else 0
        b = path[min(k + 1, len(path) - 1)]
        q = path[k] + float(r.random()) * (b - path[k])
        pts = centre_line(q[None])[0]
        m = int(r.integers(4, len(pts) - 1)) if r.random() < 0.7 else int(r.integers(len(pts) - 1))  # mostly distal
        return pts[m] + float(r.random()) * (pts[m + 1] - pts[m])

    def _bang_bang(self):
        r = self.rng
        start = self.config(0.2)
        joint = int(r.integers(7))
        accel = float(r.uniform(0.5, 1.1) * self.h.spec.acceleration[joint])
        dt = float(r.choice([0.001, 0.002, 0.005, 0.05, r.uniform(0.0005, 0.1)]))
        phase = float(r.uniform(0.02, 0.3))
        t = np.arange(dt, 2 * phase + 1e-12, dt)
        t = t if len(t) else np.array([2 * phase])
        x = np.where(t <= phase, 0.5 * accel * t**2, accel * phase**2 - 0.5 * accel * (2 * phase - t) ** 2)
        q = np.repeat(start[None], len(t), axis=0)
        q[:, joint] += x
        return self._case('bang_bang', t, q, start)

    def _chunk(self):
        """A streamed chunk: cruise at the start velocity (or not), then brake (or not)."""
        r = self.rng
        start = self.config(0.3)
        v = r.normal(0, 0.5, 7) * (r.random(7) < 0.6)
        dt = float(r.choice([0.05, 0.1, 0.02]))
        cruise = np.arange(1, int(r.integers(1, 10)) + 1) * dt
        brake = float(r.uniform(0.1, 1.0))
        tb = np.arange(dt, brake + 1e-12, dt)
        # velocity along the chunk: v, then cosine down to 0
        times = np.concatenate([cruise, cruise[-1] + tb])
        speeds = np.concatenate([np.ones(len(cruise)), 0.5 + 0.5 * np.cos(np.pi * tb / brake)])
        if r.random() < 0.2:  # no brake
            times, speeds = cruise, np.ones(len(cruise))
        mid = np.concatenate([[1.0], speeds])
        steps = (mid[:-1] + mid[1:]) / 2 * np.diff(np.concatenate([[0.0], times]))
        q = start + np.cumsum(steps)[:, None] * v
        declared = v * float(r.choice([1.0, 1.0, 0.0, -1.0, r.uniform(0.5, 1.5)]))
        if r.random() < 0.3:
            times, q = np.concatenate([[0.0], times]), np.vstack([start, q])
        return self._case('chunk', times, q, start, start_velocity=declared if r.random() < 0.85 else None)

    def _t0_start(self):
        r = self.rng
        start = self.config(0.3)
        tol = self.h.spec.start_tolerance
        gap = r.choice([-1, 1], 7) * tol * r.choice([0.5, 1 - 1e-9, 1 + 1e-6, 1.5, 4.0], 7) * (r.random(7) < 0.5)
        first = start + gap
        t, q = _smooth(first, first + r.normal(0, 0.3, 7), float(r.uniform(0.5, 3)), 0.05, t0=0.0)
        return self._case('t0_start', t, q, start)

    def _near_dynamics(self):
        """Times scaled so that the largest velocity, acceleration or jerk estimate is 1 +- eps of its limit."""
        r = self.rng
        base = self.case(str(r.choice(['ruckig', 'smooth', 'bang_bang', 'chunk'])))
        s = self.h.spec
        t, q = np.asarray(base.times, float), np.asarray(base.positions, float)
        c = np.asarray(base.current, float)
        if len(t) == 0:
            return base
        mt, mq = (t, q) if t[0] == 0 else (np.concatenate([[0.0], t]), np.vstack([c, q]))
        if len(mt) < 2:
            return base
        v, a, j = oracle_derivatives(mt, mq, base.start_velocity)
        rv = (np.abs(v) / (s.velocity * s.margins[0])).max(initial=0)
        ra = (np.abs(a) / (s.acceleration * s.margins[1])).max(initial=0)
        rj = (np.abs(j) / (s.jerk * s.margins[2])).max(initial=0)
        eps = float(r.choice([1e-10, 1e-8, 1e-6, 1e-3])) * float(r.choice([-1, 1]))
        target = 1 + eps
        factor = max(rv / target, math.sqrt(ra / target), (rj / target) ** (1 / 3))
        if not factor > 0:
            return base
        v0 = None if base.start_velocity is None else np.asarray(base.start_velocity, float) / factor
        return dataclasses.replace(base, kind='near_dynamics', times=t * factor, start_velocity=v0)

    def _near_position(self):
        r = self.rng
        base = self.case(str(r.choice(['ruckig', 'smooth'])))
        q = np.asarray(base.positions, float)
        j = int(r.integers(7))
        eps = float(r.choice([1e-12, 1e-9, 1e-7, 1e-4])) * float(r.choice([-1, 1]))
        if r.random() < 0.5:
            shift = self.h.spec.upper[j] + eps - q[:, j].max()
        else:
            shift = self.h.spec.lower[j] - eps - q[:, j].min()
        q = q.copy()
        q[:, j] += shift
        current = np.asarray(base.current, float).copy()
        current[j] += shift
        return dataclasses.replace(base, kind='near_position', positions=q, current=current)

    def _near_box(self):
        """A workspace box hugging the motion, or a small keep-out box at the arm along it, +- eps."""
        r = self.rng
        base = self.case(str(r.choice(['ruckig', 'smooth', 'coarse', 'coarse'])))
        eps = float(r.choice([1e-6, 1e-5, 1e-4, 1e-3, 2.4e-3, 2.6e-3, 1e-2])) * float(r.choice([-1, 1]))
        if r.random() < 0.4:
            pts = centre_line(oracle_sweep(np.vstack([base.current, np.asarray(base.positions, float)])))
            low, high = pts.min(axis=(0, 1)), pts.max(axis=(0, 1))
            loose = r.random(6) < 0.7
            low = low - np.where(loose[:3], 1.0, eps)
            high = high + np.where(loose[3:], 1.0, eps)
            return dataclasses.replace(base, kind='near_box', workspace=(low, high))
        p = self._on_path(base)
        size = float(r.choice([0.002, 0.005, 0.01, 0.05]))
        offset = r.normal(0, 1, 3)
        offset *= (size / 2 + abs(eps)) / np.abs(offset).max()
        centre = p + offset * float(r.choice([0.0, 1.0]))
        zone = ('zone', centre - size / 2, centre + size / 2)
        return dataclasses.replace(base, kind='near_box', keep_out=[zone, *base_zones(self.h.spec)])

    def _spheres(self):
        r = self.rng
        base = self.case(str(r.choice(['ruckig', 'smooth', 'coarse', 'coarse'])))
        spheres = []
        for _ in range(int(r.integers(1, 4))):
            radius = float(r.choice([0.003, 0.005, 0.01, 0.03]))
            away = r.normal(0, 1, 3)
            away *= float(r.uniform(0, 2.5)) * radius / np.linalg.norm(away)
            spheres.append((self._on_path(base) + away, radius))
        return dataclasses.replace(base, kind='spheres', spheres=spheres)

    def _malformed(self):
        r = self.rng
        c = self.case(str(r.choice(['ruckig', 'smooth', 'walk']))).arrays()
        t, q = c.times, c.positions
        choice = int(r.integers(14))
        bad = r.choice([np.nan, np.inf, -np.inf])
        if choice == 0:
            q[int(r.integers(len(q))), int(r.integers(7))] = bad
        elif choice == 1:
            t[int(r.integers(len(t)))] = bad
        elif choice == 2:
            return dataclasses.replace(c, kind='malformed', times=t[::-1].copy())
        elif choice == 3:
            return dataclasses.replace(c, kind='malformed', times=t - t[-1] / 2)
        elif choice == 4:
            names = list(c.names)
            names[int(r.integers(7))] = str(r.choice(['panda_joint8', '', 'panda_finger_joint1', names[0]]))
            return dataclasses.replace(c, kind='malformed', names=names)
        elif choice == 5:
            return dataclasses.replace(c, kind='malformed', positions=q[:, : int(r.integers(0, 7))])
        elif choice == 6:
            return dataclasses.replace(c, kind='malformed', positions=q[: max(0, len(q) - 1)])
        elif choice == 7:
            current = np.array(c.current, float)
            current[int(r.integers(7))] = bad
            return dataclasses.replace(c, kind='malformed', current=current)
        elif choice == 8:
            current = (None, 'home', 0.0, HOME[:6], [HOME])[int(r.integers(5))]
            return dataclasses.replace(c, kind='malformed', current=current)
        elif choice == 9:
            v0 = ('fast', 0.5, [np.nan] * 7, np.zeros(6), [[0.0] * 7])[int(r.integers(5))]
            return dataclasses.replace(c, kind='malformed', start_velocity=v0)
        elif choice == 10:
            return dataclasses.replace(c, kind='malformed', times=[], positions=[])
        elif choice == 11:
            return dataclasses.replace(c, kind='malformed', names=None)
        elif choice == 12:
            t[min(1, len(t) - 1)] = t[0]
        else:
            return dataclasses.replace(c, kind='malformed', times=t.astype(str), positions=q.tolist())
        return dataclasses.replace(c, kind='malformed', times=t, positions=q)

    def _ages(self):
        r = self.rng
        c = self.case(str(r.choice(['ruckig', 'smooth'])))
        values = [np.nan, -1e-9, -1.0, np.inf, -np.inf, None, 'old', True, 0.5, 0.5000001, 5.0, 5.0001, 0.0]
        state, perception = r.choice(len(values), 2)
        sphere = [(np.array([2.0, 2.0, 2.0]), 0.01)] if r.random() < 0.5 else None  # a world: perception matters
        return dataclasses.replace(
            c, kind='ages', state_age=values[state], perception_age=values[perception], spheres=sphere
        )

    def _huge(self):
        r = self.rng
        n = int(r.choice([self.h.spec.max_points + 1, 20000, 10**6 if r.random() < 0.05 else 50000]))
        t = np.arange(1, n + 1) * 0.01
        q = np.repeat(HOME[None], n, axis=0)
        if r.random() < 0.5:
            q = q + np.linspace(0, 0.1, n)[:, None]
        return self._case('huge', t, q, HOME.copy())

    def _review(self):
        if self._reviewed is None:
            self._reviewed = review_cases(self.h)
        return self._reviewed[int(self.rng.integers(len(self._reviewed)))]

    def twin_case(self):
        """A ruckig motion in the tabletop twin (objects, a 1 cm speck floating in the air)."""
        r = self.rng
        start = HOME + r.normal(0, 0.1, 7)
        goal = start + r.normal(0, 0.5, 7)
        waypoints = np.clip(np.array([start, goal]), self.h.spec.lower + 0.02, self.h.spec.upper - 0.02)
        s = self.h.spec
        path = trajectory.parametrize(waypoints, s.velocity, s.acceleration, s.jerk, float(r.uniform(0.2, 1.0)), 0.05)
        return Case('twin', list(JOINTS), path.times, path.positions, waypoints[0], twin=True)


def base_zones(spec):
    """The configured keep-out zones, as (name, min, max)."""
    return list(spec.keep_out)


def review_cases(h):
    """The review's findings, as cases the gate must refuse."""
    s = h.spec
    start = HOME.copy()
    out = []
    t, q = _smooth(start + 0.2, start + 0.2 + np.array([0.3, 0, 0, 0.2, 0, 0, 0]), 2.0, 0.05, t0=0.0)
    out.append(Case('review: t0 gap 0.2 rad', list(JOINTS), t, q, start))
    t = np.arange(1, 11) * 0.05
    q = np.repeat(start[None], 10, axis=0)
    q[:, 0] += 2.0 * t  # full speed from rest, and stopping dead
    out.append(Case('review: full speed from rest', list(JOINTS), t, q, start))
    out.append(Case('review: full speed from rest, t0', list(JOINTS), t - t[0], q - q[0] + start, start))
    dt = 0.001
    t = np.arange(dt, 0.2 + 1e-12, dt)
    x = np.where(t <= 0.1, 3.5 * t**2, 7.0 * 0.01 - 3.5 * (0.2 - t) ** 2)
    q = np.repeat(start[None], len(t), axis=0)
    q[:, 1] += x
    out.append(Case('review: bang-bang jerk', list(JOINTS), t, q, start))
    t, q = _smooth(start, start + 0.3, 2.0, 0.05)
    out.append(Case('review: NaN state', list(JOINTS), t, q, np.full(7, np.nan)))
    out.append(Case('review: NaN state age', list(JOINTS), t, q, start, state_age=float('nan')))
    out.append(Case('review: negative state age', list(JOINTS), t, q, start, state_age=-1.0))
    sphere = [(np.array([2.0, 2.0, 2.0]), 0.01)]
    out.append(Case('review: NaN perception age', list(JOINTS), t, q, start, perception_age=np.nan, spheres=sphere))
    t, q = _smooth(start, start + np.array([0, 0, 0, 0, 0, 0, 0.5]), 2.0, 0.05)
    ceiling = (np.array([-0.2, -0.75, 0.0]), np.array([0.95, 0.75, 0.6]))
    out.append(Case('review: elbow above the ceiling', list(JOINTS), t, q, start, workspace=ceiling))
    forearm = [('forearm', np.array([0.16, -0.02, 0.6]), np.array([0.2, 0.02, 0.67]))]
    out.append(Case('review: forearm through a zone', list(JOINTS), t, q, start, keep_out=forearm))
    n = s.max_points + 1
    out.append(
        Case('review: too many points', list(JOINTS), np.arange(1, n + 1) * 0.01, np.repeat(start[None], n, 0), start)
    )
    return out


# --- tests -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def harness():
    return Harness(twin=True)


def test_oracle_kinematics_match_mujoco(harness):
    rng = np.random.default_rng(0)
    qs = rng.uniform(harness.spec.lower, harness.spec.upper, (100, 7))
    assert np.allclose(centre_line(qs), harness.kin.link_points(qs), atol=1e-9)
    data = mujoco.MjData(harness.kin.model)
    data.qpos[harness.kin.arm_qpos] = qs[0]
    mujoco.mj_kinematics(harness.kin.model, data)
    assert np.allclose(centre_line(qs[:1])[0, -1], data.site('panda_grip_site').xpos, atol=1e-9)


def test_oracle_and_gate_refuse_the_review_findings(harness):
    for case in review_cases(harness):
        ok, check, reason = harness.gate(case)
        truth, why = oracle(harness.spec_for(case), case)
        assert not ok and check != 'crash', (case.kind, check, reason)
        assert not truth, (case.kind, why)


def test_oracle_accepts_what_the_execution_node_sends(harness):
    """The oracle is not trivially strict: ruckig paths at the node's scale pass it and the gate."""
    gen = Generator(harness, 7)
    accepted = 0
    for _ in range(30):
        case = dataclasses.replace(gen._ruckig(), workspace=None)
        ok, _, _ = harness.gate(case)
        truth, why = oracle(harness.spec_for(case), case)
        accepted += ok and truth
        assert not ok or truth, why
    assert accepted >= 10


def run(harness, cases, seed, twin_cases=0, metamorphic=0.2):
    """Run the generator's cases (seeded) through gate and oracle: (findings [(what, case, detail, index)],
    counts of the gate's verdicts, counts of case kinds, seconds). Case i of a seed replays exactly."""
    gen = Generator(harness, seed)
    harness.counts = {}
    findings, kinds = [], {}
    started = time.monotonic()
    for i in range(cases + twin_cases):
        gen.rng = np.random.default_rng((seed, i))  # each case replays on its own: replay(harness, seed, i)
        case = gen.twin_case() if i >= cases else gen.case()
        kinds[case.kind] = kinds.get(case.kind, 0) + 1
        findings += [(*f, i) for f in harness.judge(case, gen.rng, metamorphic=gen.rng.random() < metamorphic)]
    return findings, dict(harness.counts), kinds, time.monotonic() - started


def replay(harness, seed, index, twin=False):
    """Case `index` of run(harness, ..., seed): (case, the gate's verdict, the oracle's)."""
    gen = Generator(harness, seed)
    gen.rng = np.random.default_rng((seed, index))
    case = gen.twin_case() if twin else gen.case()
    return case, harness.gate(case), oracle(harness.spec_for(case), case)


def test_seeded_fuzz_ten_thousand_cases(harness):
    """>= 10^4 cases (most with no world or the cheap spheres, some in the twin): no escape, no crash,
    no metamorphic violation."""
    findings, counts, kinds, seconds = run(harness, 10000, seed=20261123, twin_cases=80)
    print(f'fuzz: {counts.get("cases")} cases in {seconds:.1f} s; verdicts {counts}; kinds {kinds}')
    summary = [(what, case.kind, detail, i) for what, case, detail, i in findings[:10]]
    assert not findings, summary
    assert counts['cases'] >= 10000 and counts.get('accepted', 0) > 1000, counts
    for check in ('structure', 'watchdog', 'start', 'position_limits', 'step_size', 'velocity_limits'):
        assert counts.get(check), (check, counts)
    for check in ('acceleration_limits', 'jerk_limits', 'workspace', 'keep_out', 'collision', 'size'):
        assert counts.get(check), (check, counts)


@settings(max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    steps=st.lists(
        st.tuples(st.floats(0.02, 1.0), st.lists(st.floats(-0.08, 0.08), min_size=7, max_size=7)),
        min_size=1,
        max_size=8,
    ),
    t0_zero=st.booleans(),
    gap=st.lists(st.sampled_from([0.0] * 8 + [0.01, -0.03, 0.049, 0.051, -0.2]), min_size=7, max_size=7),
    v0=st.one_of(st.none(), st.none(), st.lists(st.floats(-0.3, 0.3), min_size=7, max_size=7)),
    state_age=st.sampled_from([0.01] * 12 + [0.3, 0.6, None, float('nan'), -0.01, float('inf')]),
    settle=st.integers(0, 3),
    order=st.permutations(range(7)),
)
def test_hypothesis_small_trajectories(harness, steps, t0_zero, gap, v0, state_age, settle, order):
    """Small trajectories drawn (and shrunk to a minimal example on failure) by hypothesis: no escape, no crash."""
    start = HOME.copy()
    t = np.cumsum([s[0] for s in steps])
    q = start + np.array(gap) + np.cumsum([s[1] for s in steps], axis=0)
    if settle:  # a few slow points at the end, towards rest
        t = np.concatenate([t, t[-1] + 0.5 * np.arange(1, settle + 1)])
        q = np.vstack([q, np.repeat(q[-1:], settle, axis=0)])
    if t0_zero:
        t = t - t[0]
    case = Case('hypothesis', [JOINTS[i] for i in order], t, q[:, order], start, state_age=state_age, start_velocity=v0)
    ok, check, reason = harness.gate(case)
    assert check != 'crash', reason
    if ok:
        truth, why = oracle(harness.spec_for(case), case)
        assert truth, why
