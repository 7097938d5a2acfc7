"""The world-facing ports an engine is given, as typing.Protocols. The orchestrator builds them
on ROS (twinloop_planning.ports.ros); benchmarks and tests build them on in-process parts
(twinloop_planning.ports.in_process). An engine declares which it needs (DecisionEngine.needs)
and receives only those."""

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from twinloop_core.gripper import KEEP
from twinloop_core.outcomes import Canceled


@dataclass
class PerceivedState:
    """What the cameras and joint encoders say now."""

    objects: dict  # id -> ObjectState
    arm: np.ndarray  # 7 arm joint positions [rad]
    gripper_width: float  # [m]
    unseen: frozenset = frozenset()  # ids not seen in the latest frames (their pose is a prediction)
    labels: dict = field(default_factory=dict)  # id -> human-readable label
    age: float = 0.0  # [s] how much older the object poses are than the joints (the frames' latency)


@dataclass
class TimedPath:
    """A motion to try in the twin: timed arm waypoints and gripper width commands."""

    id: str
    times: list  # [s] from the start, increasing
    positions: np.ndarray  # [n x 7] arm joints per waypoint [rad]
    gripper: list = field(default_factory=list)  # [(time [s], width [m])]
    description: str = ''


@dataclass
class JointSegment:
    """One motion for the executor: joint waypoints from where the arm is, gripper commands around it."""

    waypoints: np.ndarray  # [n x 7] arm joints [rad]
    gripper_before: float = KEEP  # [m] width commanded before moving (KEEP: unchanged)
    gripper_after: float = KEEP  # [m] width commanded after arriving
    label: str = ''


class Score(dict):
    """One candidate's score: total in [0, 1], failed, backend (what produced it), dimensions
    {name: score}, rationale. A dict so that reports serialise it as it is."""


@dataclass
class CameraImage:
    """A camera's colour image and its pinhole model: what a vision-language model is shown."""

    name: str
    rgb: np.ndarray  # (h, w, 3) uint8
    K: np.ndarray  # (3, 3) intrinsics [px]
    position: np.ndarray  # the optical frame's origin in the world [m]
    rotation: np.ndarray  # the optical frame's axes in the world (3x3 columns: x right, y down, z ahead)


class Perception(Protocol):
    """The perceived scene."""

    def state(self) -> PerceivedState:
        """The state from frames captured after the last motion ended."""

    def newest(self) -> PerceivedState:
        """The newest state without waiting for frames after a motion (a loop that perceives while the arm
        moves); its age says how old the object poses are."""

    def camera_image(self) -> CameraImage | None:
        """The newest colour image of the camera code writers are shown (None: there is none)."""


class Twin(Protocol):
    """The simulated twin of the scene."""

    def sync(self, believed: dict) -> None:
        """Rebuild the twin from the latest perceived state.

        believed: {id: (position, quat)} that replace the perceived poses of those objects.
        """

    def rollout(self, paths: Sequence[TimedPath]) -> list:
        """Simulate each path from the synced state: the facts of each (twinloop_scoring.facts keys)."""

    def render_for_scoring(self, ids: Sequence[str]) -> list:
        """Views of the last rollouts in batches the scorer tells apart: [(ids, views)], views opaque."""

    def render_report(self, ids: Sequence[str], scores: Sequence[float]) -> Callable[[], list]:
        """Start drawing the last rollouts coloured by score (reports); the returned function waits
        for [(view name, rgb)]. A twin in another process draws while the arm moves."""

    def render_axes(self, object_id: str) -> np.ndarray:
        """An rgb view with the object's axes drawn (the rotation module's question)."""


class Scorer(Protocol):
    """Scores candidates from their views and twin facts."""

    def score(self, instruction: str, task: dict, ids: Sequence[str], facts: Sequence[dict], batches: list) -> list:
        """A Score per id, in order."""


class Executor(Protocol):
    """Moves the arm, every motion through the safety gate where there is one."""

    def execute(self, segments: Sequence[JointSegment]) -> None:
        """Run the segments in order; raises ExecutionFailed, or Canceled when the cancel token fires."""


@dataclass
class StreamReply:
    """The execution node's answer to one streamed chunk (StreamChunk.srv, ROS-free)."""

    accepted: bool
    reason: str = ''  # why refused ('' when accepted)
    check: str = ''  # the rule that refused (structure, late, continuity, busy, watchdog, a gate check)
    stream_time: float = 0.0  # [s] the stream's clock now
    committed_until: float = 0.0  # [s] stream time where the accepted chunk ends
    commanded_positions: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [rad] at committed_until
    commanded_velocities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [rad/s] there


class Streamer(Protocol):
    """Short joint chunks that continue the arm's motion without stopping (closed-loop policies at
    10-20 Hz). Every chunk passes the safety gate with the braking tail that stops the arm if no next
    chunk arrives; a refused chunk brakes the arm to rest and ends the stream."""

    def send_chunk(
        self,
        stream_id: str,
        times: Sequence[float],
        positions: np.ndarray,
        splice_time: float = -1.0,
        velocities: np.ndarray | None = None,
    ) -> StreamReply:
        """Stream one chunk (times from 0 at the splice point; positions and optional velocities [n x 7]);
        the gate's answer."""

    def stop_stream(self, stream_id: str) -> StreamReply:
        """Brake to rest now and end the stream."""

    def clock(self) -> float:
        """The time base the stream runs on [s] (wall time on a robot, simulated time in a simulation)."""

    def wait(self, seconds: float) -> None:
        """Let the streamed motion run for `seconds` of clock() (a cancel ends the wait with Canceled)."""


@dataclass
class PolicyOutcome:
    """What a learned policy did on the policy server (RunPolicy's result, ROS-free)."""

    success: bool
    reason: str
    chunks_executed: int = 0
    actions_executed: int = 0
    elapsed: float = 0.0  # [s]


class PolicyRunner(Protocol):
    """A learned policy run closed loop on the arm by the policy server (RunPolicy)."""

    def run_policy(self, policy: str, instruction: str, max_chunks: int = 0, timeout: float = 0.0) -> PolicyOutcome:
        """Run until the policy's episode ends, a limit, cancel (raises Canceled) or failure."""


class Progress(Protocol):
    """Feedback to whoever sent the goal, and visualisation."""

    def feedback(self, stage: str, step: int, subtask: int = 0, detail: str = '', **extra) -> None:
        """Engine-neutral feedback: a stage name, the step, the sub-task, free-form detail."""

    def show(self, paths: list, scores: Sequence[float], chosen: int) -> None:
        """Candidate grip paths coloured by score, the chosen one highlighted (RViz)."""

    def show_keypoints(self, points: dict, targets: dict) -> None:
        """Numbered keypoints {n: (x, y, z)} and targets {n: (x, y, z)} of the ones to move (RViz)."""

    def log(self, text: str) -> None:
        """One line of the run's log."""

    def record(self, item) -> None:
        """One step's record for the run report (engine-specific: the report draws what it knows)."""


class CancelToken:
    """Set once when the goal is canceled; every port wait and engine loop checks it."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self):
        """Request the cancel."""
        self._event.set()

    def cancelled(self):
        """True once canceled."""
        return self._event.is_set()

    def check(self):
        """Raise Canceled if canceled."""
        if self._event.is_set():
            raise Canceled()


class QuietProgress:
    """Progress that keeps the log lines and records (in-process runs without a listener)."""

    def __init__(self, echo=None):
        self.lines, self.records, self.echo = [], [], echo

    def feedback(self, stage, step, subtask=0, detail='', **extra):
        """Ignored."""

    def show(self, paths, scores, chosen):
        """Ignored."""

    def show_keypoints(self, points, targets):
        """Ignored."""

    def log(self, text):
        """Kept (and echoed when an echo function was given)."""
        self.lines.append(text)
        if self.echo is not None:
            self.echo(text)

    def record(self, item):
        """Kept."""
        self.records.append(item)


PORT_NAMES = ('perception', 'twin', 'scorer', 'executor', 'streamer', 'policy')


@dataclass
class Ports:
    """What an engine is handed for one goal: only the ports it declared, progress and the cancel token."""

    perception: Perception | None = None
    twin: Twin | None = None
    scorer: Scorer | None = None
    executor: Executor | None = None
    streamer: Streamer | None = None
    policy: PolicyRunner | None = None
    progress: Progress = field(default_factory=QuietProgress)
    cancel: CancelToken = field(default_factory=CancelToken)

    def only(self, needs):
        """A copy holding only the named ports (the others None)."""
        unknown = set(needs) - set(PORT_NAMES)
        if unknown:
            raise ValueError(f'unknown ports {sorted(unknown)}; ports are {PORT_NAMES}')
        kept = {name: getattr(self, name) if name in needs else None for name in PORT_NAMES}
        return Ports(**kept, progress=self.progress, cancel=self.cancel)
