"""twinloop_interfaces messages <-> the ROS-free types of twinloop_core: the one encoding of
candidates, rollout facts and scores. In-process ports use the types directly; the ROS ports
and the nodes that serve them convert with these functions, so both paths see the same values."""

import json

from twinloop_interfaces.msg import CandidateScore, CandidateTrajectory, DimensionScore
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

import numpy as np

from twinloop_core.gripper import EVENT_CLOSE, EVENT_NONE, EVENT_OPEN, EVENT_WIDTH, OPEN_WIDTH
from twinloop_core.ports import Score, TimedPath
from twinloop_core.robot import ARM_JOINTS
from twinloop_ros.conversions import duration, seconds


def candidate_msg(path: TimedPath):
    """CandidateTrajectory of a TimedPath; each gripper command must fall on one of its points' times."""
    events = [EVENT_NONE] * len(path.times)
    for t, width in path.gripper:
        index = int(np.argmin(np.abs(np.subtract(path.times, t))))
        if abs(path.times[index] - t) > 1e-6:
            raise ValueError(f'candidate {path.id}: gripper command at {t:.3f} s is not at a waypoint time')
        events[index] = EVENT_OPEN if width >= OPEN_WIDTH - 1e-6 else EVENT_CLOSE
    points = [
        JointTrajectoryPoint(positions=[float(v) for v in q], time_from_start=duration(t))
        for q, t in zip(path.positions, path.times)
    ]
    return CandidateTrajectory(
        id=path.id,
        description=path.description,
        trajectory=JointTrajectory(joint_names=list(ARM_JOINTS), points=points),
        gripper_events=events,
    )


def timed_path(msg):
    """The TimedPath of a CandidateTrajectory (arm joints mapped by name); ValueError says what is wrong."""
    traj = msg.trajectory
    if not traj.points:
        raise ValueError(f'candidate {msg.id!r} has no trajectory points')
    names = list(traj.joint_names)
    missing = [j for j in ARM_JOINTS if j not in names]
    if missing:
        raise ValueError(f'candidate {msg.id!r}: joint_names lack {missing}')
    order = [names.index(j) for j in ARM_JOINTS]
    if any(len(p.positions) != len(names) for p in traj.points):
        raise ValueError(f'candidate {msg.id!r}: every point needs {len(names)} positions')
    if msg.gripper_events and len(msg.gripper_events) != len(traj.points):
        raise ValueError(f'candidate {msg.id!r}: gripper_events must be empty or one per point')
    times = [seconds(p.time_from_start) for p in traj.points]
    positions = np.array([[p.positions[i] for i in order] for p in traj.points], float)
    if not np.all(np.isfinite(positions)) or np.any(np.diff(times) <= 0):
        raise ValueError(f'candidate {msg.id!r}: positions must be finite and times increasing')
    gripper = [(t, EVENT_WIDTH[e]) for t, e in zip(times, msg.gripper_events) if e in EVENT_WIDTH]
    return TimedPath(msg.id, times, positions, gripper, msg.description)


def score_msg(candidate_id, score: Score):
    """CandidateScore of a Score (views are added by the scoring node)."""
    msg = CandidateScore(
        candidate_id=candidate_id,
        total=float(score['total']),
        backend=score['backend'],
        model=score.get('model', ''),
        failed=bool(score['failed']),
    )
    if score['failed']:
        msg.failure_reason = score.get('rationale', '')
    else:
        msg.rationale = score.get('rationale', '')
    msg.dimensions = [
        DimensionScore(dimension=name, score=float(value), weight=float(score.get('weights', {}).get(name, 0.0)))
        for name, value in score['dimensions'].items()
    ]
    return msg


def score_from_msg(msg):
    """The Score of a CandidateScore."""
    return Score(
        total=float(msg.total),
        failed=bool(msg.failed),
        backend=msg.backend,
        model=msg.model,
        dimensions={d.dimension: round(float(d.score), 2) for d in msg.dimensions},
        weights={d.dimension: float(d.weight) for d in msg.dimensions},
        rationale=msg.failure_reason if msg.failed else msg.rationale,
    )


def facts_json(facts):
    """Rollout facts as sent in RolloutResult.facts_json and CandidateTrajectory.rollout_json."""
    return json.dumps(facts)
