"""task_orchestrator: the ExecuteInstruction action server.

validate -> ground the instruction into the structured task -> ENGINES[strategy] with only the
ports that engine needs -> judge on the perceived state -> report. Engines register themselves
(twinloop_core.engine.register_engine) in the modules named by the `engines` parameter; each is
built once at start with its config/<engine>.yaml (a bad file fails the start). An invalid or
ungroundable goal is accepted and at once ended with outcome REJECTED and the reason (ROS 2 goal
rejections carry no reason). One goal at a time per arm: a goal arriving while another runs is
rejected (not preempting). Every motion goes through the execution node (ExecuteMotion, safety
gate); cancel cancels the running motion, which holds the arm. Each run writes
runs/<time>/report.html and report.json.
"""

import functools
import json
import threading
import time
from pathlib import Path

from twinloop_interfaces.action import ExecuteInstruction, ExecuteMotion, RunPolicy
from twinloop_interfaces.msg import DetectedObjectArray
from twinloop_interfaces.srv import RenderViews, RolloutTrajectories, ScoreTrajectories, StreamChunk, SyncTwin

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter_client import AsyncParameterClient
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from visualization_msgs.msg import Marker, MarkerArray

from twinloop_core import engine as engines
from twinloop_core.judging import judge
from twinloop_core.outcomes import GoalEnded, Outcome
from twinloop_core.ports import CancelToken, Ports
from twinloop_core.task import Constraints
from twinloop_planning import report
from twinloop_language.parsers import make_parser
from twinloop_language.scene import Rejected, Scene
from twinloop_planning.ports.ros import LatestState, RosClients, RosPorts, RosProgress
from twinloop_ros import node_runner, topics
from twinloop_ros.conversions import object_states, rgb_array

Goal, Result, Feedback = ExecuteInstruction.Goal, ExecuteInstruction.Result, ExecuteInstruction.Feedback


class OrchestratorNode(Node):
    """The ExecuteInstruction server over the registered engines."""

    def __init__(self):
        super().__init__('task_orchestrator')
        p = lambda name, default, doc: self.declare_parameter(name, default, ParameterDescriptor(description=doc)).value  # noqa: E731
        self.default_strategy = p('default_strategy', 'anti_grounding', 'engine for goals that name none')
        modules = p(
            'engines',
            ['twinloop_antigrounding.engine', 'twinloop_scripted.engine'],
            'modules whose import registers the engines served',
        )
        config_dir = p('engine_config_dir', '', "folder of the engines' <name>.yaml files (config/)")
        self.max_length = p('max_instruction_length', 512, 'longest accepted instruction [characters]')
        self.max_steps = p('max_steps_limit', 200, 'largest accepted max_steps')
        self.default_timeout = p('default_timeout', 300.0, 'timeout for goals that set none [s]')
        self.max_timeout = p('max_timeout', 3600.0, 'largest accepted timeout [s]')
        self.runs_dir = Path(p('runs_dir', 'runs', 'where run reports are written'))
        self.perception_wait = p('perception_wait', 5.0, 'how long a goal waits for the first perceived objects [s]')
        objects_topic = p('objects_topic', topics.OBJECTS, 'DetectedObjectArray the instruction is grounded in')
        categories = p('categories_file', '', 'waste categories for sorting (config/waste_categories.yaml)')
        twin = p('twin_node', 'sim_twin', 'name of the twin node whose ~/sync, ~/rollout, ~/render are used')
        language = p('language_config', '', 'instruction parser settings (default: <engine_config_dir>/language.yaml)')
        parser = p('parser', '', "'' as language_config says, embedded, or an agent of vlm_agents.yaml (an LLM)")
        view = p(
            'parser_camera', 'front', "camera whose colour view goes with the instruction to an LLM parser ('': none)"
        )
        query_camera = p(
            'query_camera',
            'front',
            "camera whose colour image code writers are shown, keypoints drawn on it ('': a schematic view)",
        )
        engines.load_engines(modules)
        self.engines = {name: engines.build_engine(name, config_dir or None) for name in sorted(engines.ENGINES)}
        language = language or str(Path(config_dir) / 'language.yaml')
        self.parser = make_parser(language, categories or None, parser=parser or None)
        self.latest = LatestState(query_camera)
        self.view = None  # the newest colour image for the parser (only subscribed when it takes images)
        self.busy, self.lock = False, threading.Lock()
        self.cancel_tokens = {}  # goal id -> CancelToken of the running goal
        state_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(
            DetectedObjectArray, objects_topic, self.latest.on_objects, topics.STATE_QOS, callback_group=state_group
        )
        self.create_subscription(
            JointState, topics.JOINT_STATES, self.latest.on_joints, topics.STATE_QOS, callback_group=state_group
        )
        if query_camera:
            for part, kind, qos in (
                ('color', Image, topics.SENSOR_QOS),
                ('color_info', CameraInfo, topics.SENSOR_QOS),
                ('pose', PoseStamped, topics.EXTRINSICS_QOS),
            ):
                topic = topics.camera_topic(query_camera, part)
                callback = functools.partial(self.latest.on_camera, part)
                self.create_subscription(kind, topic, callback, qos, callback_group=state_group)
        self.view_wanted = bool(view and self.parser.takes_image)
        if self.view_wanted:
            self.create_subscription(
                Image, topics.camera_topic(view, 'color'), self.on_view, topics.SENSOR_QOS, callback_group=state_group
            )
        group = ReentrantCallbackGroup()
        self.ports_clients = RosClients(
            self.latest,
            self.create_client(SyncTwin, topics.twin_service(twin, 'sync'), callback_group=group),
            self.create_client(RolloutTrajectories, topics.twin_service(twin, 'rollout'), callback_group=group),
            self.create_client(RenderViews, topics.twin_service(twin, 'render'), callback_group=group),
            self.create_client(ScoreTrajectories, topics.SCORE_TRAJECTORIES, callback_group=group),
            ActionClient(self, ExecuteMotion, topics.EXECUTE_MOTION, callback_group=group),
            self.create_client(StreamChunk, topics.EXECUTION_STREAM, callback_group=group),
            ActionClient(self, RunPolicy, topics.RUN_POLICY, callback_group=group),
            AsyncParameterClient(self, topics.SCORING_NODE, callback_group=group),
        )
        self.candidates_pub = self.create_publisher(MarkerArray, topics.PLANNER_CANDIDATES, topics.STATE_QOS)
        self.chosen_pub = self.create_publisher(Marker, topics.PLANNER_CHOSEN, topics.STATE_QOS)
        self.keypoints_pub = self.create_publisher(MarkerArray, topics.IKER_KEYPOINTS, topics.STATE_QOS)
        self.server = ActionServer(
            self,
            ExecuteInstruction,
            topics.EXECUTE_INSTRUCTION,
            self.execute,
            goal_callback=self.on_goal,
            cancel_callback=self.on_cancel,
            callback_group=group,
        )
        self.get_logger().info(
            f'task_orchestrator ready: engines {sorted(self.engines)}, default {self.default_strategy}'
        )

    def on_view(self, msg):
        """Subscription callback: keep the newest view for the parser."""
        self.view = msg

    def on_goal(self, _goal):
        """Accept one goal at a time."""
        with self.lock:
            if self.busy:
                self.get_logger().warning('goal rejected: another instruction is running (one goal at a time)')
                return GoalResponse.REJECT
            self.busy = True
        return GoalResponse.ACCEPT

    def on_cancel(self, handle):
        """Accept every cancel; the running goal's token fires at once."""
        token = self.cancel_tokens.get(bytes(handle.goal_id.uuid))
        if token is not None:
            token.cancel()
        return CancelResponse.ACCEPT

    def validate(self, goal):
        """The engine for the goal, or GoalEnded(REJECTED) with the reason."""
        text = goal.instruction.strip()
        if not text:
            raise GoalEnded(Outcome.REJECTED, 'empty instruction')
        if len(text) > self.max_length:
            raise GoalEnded(Outcome.REJECTED, f'instruction longer than {self.max_length} characters')
        try:
            engines.engine_class(goal.strategy or self.default_strategy)
        except engines.UnknownEngine as exc:
            raise GoalEnded(Outcome.REJECTED, str(exc)) from None
        if goal.max_steps > self.max_steps:
            raise GoalEnded(Outcome.REJECTED, f'max_steps {goal.max_steps} above the limit {self.max_steps}')
        if not np.isfinite(goal.timeout) or goal.timeout < 0 or goal.timeout > self.max_timeout:
            raise GoalEnded(Outcome.REJECTED, f'timeout must be in [0, {self.max_timeout}] s, got {goal.timeout}')
        return self.engines[goal.strategy or self.default_strategy]

    def ground(self, goal, cancel):
        """The structured task, parsed from the instruction over the perceived objects (and the camera
        view, for a parser that takes one)."""
        waited = time.monotonic() + self.perception_wait
        while (self.latest.objects is None or self.view_wanted and self.view is None) and time.monotonic() < waited:
            cancel.check()
            time.sleep(0.05)
        if self.latest.objects is None:
            raise GoalEnded(Outcome.ERROR, f'no perceived objects within {self.perception_wait:.0f} s')
        scene = Scene({o.id: o.label for o in self.latest.objects.objects}, object_states(self.latest.objects))
        try:
            return self.parser.parse(goal.instruction, scene, self.view_image())
        except Rejected as exc:
            raise GoalEnded(Outcome.REJECTED, f'cannot do the instruction ({self.parser.label}): {exc}') from None

    def view_image(self):
        """The newest camera view as an RGB array for the parser, None when there is none or it is unreadable."""
        if self.view is None:
            if self.view_wanted:
                self.get_logger().warning('no camera view for the parser yet: sending the object list only')
            return None
        try:
            return rgb_array(self.view)
        except ValueError as exc:
            self.get_logger().warning(f'camera view for the parser unreadable ({exc}): sending the object list only')
            return None

    def execute(self, handle):
        """Run one goal to its end; never raises (a bug ends the goal with OUTCOME_ERROR)."""
        started, goal = time.monotonic(), handle.request
        cancel = self.cancel_tokens[bytes(handle.goal_id.uuid)] = CancelToken()
        if handle.is_cancel_requested:
            cancel.cancel()
        progress = RosProgress(
            handle.publish_feedback,
            Feedback,
            {'candidates': self.candidates_pub, 'chosen': self.chosen_pub, 'keypoints': self.keypoints_pub},
            self.get_clock,
            self.get_logger(),
        )
        strategy, engine, task, steps, backend = goal.strategy or self.default_strategy, None, None, 0, ''
        try:
            engine = self.validate(goal)
            limits = engines.Limits(
                goal.max_steps,
                started + (goal.timeout or self.default_timeout),
                goal.dry_run,
                goal.num_candidates,
                goal.scorer_backend,
            )
            task = self.ground(goal, cancel)
            progress.log(f'task by {task.parser}: {json.dumps(task.to_dict()["subtasks"])}')
            if task.constraints != Constraints():
                progress.log(f'constraints: {json.dumps(task.to_dict()["constraints"])}')
            engine.check(task, limits)
            before = object_states(self.latest.objects)
            ports = RosPorts(self.ports_clients, cancel, goal.scorer_backend, limits.deadline)
            result = engine.run(
                task, Ports(ports, ports, ports, ports, ports, ports, progress, cancel).only(engine.needs), limits
            )
            success, detail, steps, backend = result.success, result.detail, result.steps, result.backend
            if not goal.dry_run:  # the perceived outcome decides; an engine's reason for stopping is kept
                after = object_states(self.latest.objects)
                judged, verdict = judge(task.subtasks, before, after, task.constraints.do_not_move)
                detail = verdict if judged else f'{detail}; {verdict}'
                success = judged
            outcome, reason = (Outcome.SUCCEEDED if success else Outcome.FAILED), detail
        except GoalEnded as end:
            outcome, reason = end.outcome, end.reason
        except Exception as exc:  # a bug ends the goal with a reason, never wedges the server
            outcome, reason = Outcome.ERROR, f'internal error: {exc!r}'
        finally:
            self.cancel_tokens.pop(bytes(handle.goal_id.uuid), None)
            with self.lock:
                self.busy = False
        steps = steps or len(progress.records)
        meta = {
            'instruction': goal.instruction,
            'strategy': strategy,
            'strategy_label': engine.label if engine else '',
            'scorer': backend,
            'outcome': outcome.name.lower(),
            'reason': reason,
            'parser': task.parser if task else self.parser.label,
            'subtasks': task.to_dict()['subtasks'] if task else [],
            'constraints': task.to_dict()['constraints'] if task else {},
            'log': progress.lines,
            'elapsed_s': round(time.monotonic() - started, 2),
        }
        try:
            path = report.write(report.run_folder(self.runs_dir), meta, progress.records)
        except Exception as exc:  # the goal still ends, with why its report is missing
            self.get_logger().error(f'report not written: {exc!r}')
            path, reason = '', f'{reason} (the report could not be written: {exc!r})'
        result = Result(
            success=outcome == Outcome.SUCCEEDED,
            outcome=int(outcome),
            reason=reason,
            summary='\n'.join(progress.lines),
            report_path=str(path),
            steps=steps,
            elapsed=time.monotonic() - started,
        )
        if outcome == Outcome.CANCELED:
            handle.canceled()
        elif result.success:
            handle.succeed()
        else:
            handle.abort()
        self.get_logger().info(f'instruction ended: {reason}')
        return result


def main(args=None):
    """Run the node."""
    node_runner.run(OrchestratorNode, args, threads=4)


if __name__ == '__main__':
    main()
