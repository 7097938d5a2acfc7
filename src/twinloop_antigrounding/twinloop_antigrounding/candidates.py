"""AntiGrounding's candidates (no rclpy): straight grip-site moves to sampled goals, with an
optional gripper event at the end (close then lift a little, or open then back off), turned into
joint paths by IK and dropped when unreachable; and their one encoding for the ports (a twin
TimedPath, executor JointSegments), shared by in-process and ROS runs."""

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from twinloop_antigrounding.sampler import GRIPPER_CLOSE, GRIPPER_NONE, GRIPPER_OPEN, Sample
from twinloop_core.geometry import quat_angle, quat_multiply
from twinloop_core.gripper import CLOSED_WIDTH, KEEP, OPEN_WIDTH
from twinloop_core.ports import JointSegment, TimedPath

OPEN_FIRST_AT = 0.01  # [s] an opening before moving is commanded at a point at the start configuration
TURN_POINTS = 6  # extra IK points per radian the grip turns along a candidate
TURN_SPEED = 0.5  # [rad/s] how fast a candidate turns the grip (slow enough for a pour)


def _xyzw(wxyz):
    return [wxyz[1], wxyz[2], wxyz[3], wxyz[0]]


def _wxyz(xyzw):
    return np.array([xyzw[3], xyzw[0], xyzw[1], xyzw[2]])


def turned_about_fingers(quat, angle):
    """The grip orientation (w x y z) turned by angle [rad] about the axis its fingers close along (a pour)."""
    return quat_multiply(quat, (np.cos(angle / 2), np.sin(angle / 2), 0.0, 0.0))


@dataclass
class Proposal:
    """A candidate: segments of arm joint waypoints, each ending with a gripper width (None: unchanged)."""

    id: str
    sample: Sample  # the sampled goal and gripper event it was built from
    segments: list  # [(waypoints [n x 7], end positions [n x 3], gripper width or None)]
    open_first: bool = False  # open the gripper before moving (at time 0, for grip_pause)
    times: list = field(default_factory=list)  # per flattened waypoint [s]
    events: list = field(default_factory=list)  # per flattened waypoint GRIPPER_*
    description: str = ''
    turn: float = 0.0  # [rad] how far the first segment turns the grip

    def waypoints(self):
        """Arm joint waypoints of all segments, flattened [n x 7, rad]."""
        return np.vstack([w for w, _, _ in self.segments])

    def positions(self):
        """Grip-site positions along the candidate [n x 3]."""
        return np.vstack([p for _, p, _ in self.segments])

    @property
    def end(self):
        """Where the grip site should be at the end [m]."""
        return self.segments[-1][1][-1]


class CandidateBuilder:
    """Samples -> reachable joint-space candidates (IK along straight grip-site lines)."""

    def __init__(self, ik, config):
        self.ik, self.config = ik, config
        self.surface = 0.0  # [m] the height the objects stand on (goals below surface + min_height are dropped)

    def _line(self, q_full, start, goal, quat, start_quat=None):
        """IK along a straight grip-site line to goal; with start_quat, the grip turns from it to quat on the
        way (slerp), through TURN_POINTS per radian more points so that no joint jumps between them."""
        n = self.config.ik_points
        if start_quat is not None:
            n += int(np.ceil(TURN_POINTS * quat_angle(start_quat, quat)))
            turning = Slerp([0.0, 1.0], Rotation.from_quat([_xyzw(start_quat), _xyzw(quat)]))
        points = [start + (goal - start) * (i + 1) / n for i in range(n)]
        quats = [quat] * n if start_quat is None else [_wxyz(turning((i + 1) / n).as_quat()) for i in range(n)]
        q = np.array(q_full, float)
        out = []
        for point, point_quat in zip(points, quats):
            result = self.ik.solve(q, point, point_quat)
            if not result.converged or (out and np.abs(result.positions - out[-1]).max() > 1.0):
                return None
            out.append(result.positions)
            q[self.ik.arm_qpos] = result.positions
        return np.array(out), np.array(points)

    def build(self, candidate_id, sample, q_full, ee_position, quat, open_first=False, start_quat=None, tug=None):
        """The Proposal for one sample, or None when too low, unreachable or discontinuous in IK.
        start_quat: the grip's orientation now, when the candidate turns it to quat (a pour's tilt);
        tug: where a close moves the grip next [m] (default: up by lift_after_grasp; a drawer's handle is
        pulled instead)."""
        c = self.config
        if sample.goal[2] < self.surface + c.min_height:
            return None
        first = self._line(q_full, ee_position, sample.goal, quat, start_quat)
        if first is None:
            return None
        segments = [(first[0], first[1], None)]
        lift = np.array((0.0, 0.0, c.lift_after_grasp)) if tug is None else np.asarray(tug, float)
        after = {GRIPPER_CLOSE: lift, GRIPPER_OPEN: np.array((0.0, 0.0, c.back_off_after_release))}.get(sample.gripper)
        if after is not None:
            q = np.array(q_full, float)
            q[self.ik.arm_qpos] = first[0][-1]
            second = self._line(q, sample.goal, sample.goal + after, quat)
            if second is None:
                return None
            width = CLOSED_WIDTH if sample.gripper == GRIPPER_CLOSE else OPEN_WIDTH
            segments = [(first[0], first[1], width), (second[0], second[1], None)]
        proposal = Proposal(candidate_id, sample, segments, open_first)
        if start_quat is not None:
            proposal.turn = quat_angle(start_quat, quat)
        self._time(proposal, ee_position)
        move = sample.goal - ee_position
        closed = ', close and lift' if tug is None else ', close and pull'
        event = {GRIPPER_CLOSE: closed, GRIPPER_OPEN: ', open and back off'}.get(sample.gripper, '')
        event += f', turn the grip {np.degrees(proposal.turn):.0f} degrees' if proposal.turn > 0.05 else ''
        proposal.description = f'move ({move[0] * 100:+.0f}, {move[1] * 100:+.0f}, {move[2] * 100:+.0f}) cm{event}'
        return proposal

    def _time(self, proposal, ee_position):
        c, previous = self.config, np.asarray(ee_position, float)
        t = c.grip_pause if proposal.open_first else 0.0
        turn = proposal.turn
        for waypoints, positions, width in proposal.segments:
            duration = max(c.min_duration, np.linalg.norm(positions[-1] - previous) / c.speed, turn / TURN_SPEED)
            step, turn = duration / len(waypoints), 0.0
            for i in range(len(waypoints)):
                t += step
                proposal.times.append(t)
                proposal.events.append(GRIPPER_NONE)
            if width is not None:
                proposal.events[-1] = GRIPPER_CLOSE if width == CLOSED_WIDTH else GRIPPER_OPEN
                t += c.grip_pause  # hold the last waypoint while the fingers move
            previous = positions[-1]


def timed_path(proposal, start_q):
    """The proposal as the twin plays it: an opening first adds a point at the start configuration
    just after t = 0 (controllers take t = 0 to be where the arm is) carrying the open command."""
    times, positions = list(proposal.times), np.asarray(proposal.waypoints(), float)
    ends = np.cumsum([len(w) for w, _, _ in proposal.segments]) - 1
    gripper = [(times[end], width) for end, (_, _, width) in zip(ends, proposal.segments) if width is not None]
    if proposal.open_first:
        times, positions = [OPEN_FIRST_AT, *times], np.vstack([start_q, positions])
        gripper.insert(0, (OPEN_FIRST_AT, OPEN_WIDTH))
    return TimedPath(proposal.id, times, positions, gripper, proposal.description)


def segments(proposal):
    """The proposal as the executor runs it: one JointSegment per segment, gripper commands around them."""
    return [
        JointSegment(
            waypoints,
            OPEN_WIDTH if i == 0 and proposal.open_first else KEEP,
            KEEP if width is None else float(width),
            f'{proposal.id} segment {i + 1}',
        )
        for i, (waypoints, _, width) in enumerate(proposal.segments)
    ]
