"""task_orchestrator: the ExecuteInstruction action server.

Goals are validated (empty or over-long instruction, unknown strategy, limits out of range) and
grounded against the perceived objects; an invalid or ungroundable goal is accepted and at once
ended with outcome REJECTED and the reason (ROS 2 goal rejections carry no reason). One goal at
a time per arm: a goal arriving while another runs is rejected (not preempting). Strategies are
plug-ins (STRATEGIES): `anti_grounding` (the MPC over the twin and the scoring node) and the
`scripted_pick_place` baseline. Every motion goes through the execution node (ExecuteMotion,
safety gate); cancel cancels the running motion, which holds the arm. Each run writes
runs/<time>/report.html and report.json.
"""
import json
import threading
import time
from pathlib import Path

from twinloop_interfaces.action import ExecuteInstruction, ExecuteMotion
from twinloop_interfaces.msg import DetectedObjectArray
from twinloop_interfaces.srv import RenderViews, RolloutTrajectories, ScoreTrajectories, SyncTwin

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from visualization_msgs.msg import Marker, MarkerArray

import yaml

from twinloop_planning import anti_grounding, report, scripted
from twinloop_planning.judging import judge, object_states
from twinloop_planning.grounding import Grounder, GroundingError
from twinloop_planning.ros_ports import PortError, RosPorts
from twinloop_scoring import agents as agent_registry
from twinloop_twin import node_runner, scene

Goal, Result, Feedback = ExecuteInstruction.Goal, ExecuteInstruction.Result, ExecuteInstruction.Feedback
STRATEGIES = {'anti_grounding': anti_grounding, 'scripted_pick_place': scripted}   # name -> module with LABEL
PLANNED = ('iker', 'vla')        # accepted names of the action, not served here yet


class Ended(Exception):
    def __init__(self, outcome, reason):
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


class OrchestratorNode(Node):
    def __init__(self):
        super().__init__('task_orchestrator')
        p = lambda name, default, doc: self.declare_parameter(name, default, ParameterDescriptor(description=doc)).value  # noqa: E731
        self.default_strategy = p('default_strategy', 'anti_grounding', 'strategy for goals that name none')
        self.max_length = p('max_instruction_length', 512, 'longest accepted instruction [characters]')
        self.max_steps = p('max_steps_limit', 200, 'largest accepted max_steps')
        self.default_timeout = p('default_timeout', 300.0, 'timeout for goals that set none [s]')
        self.max_timeout = p('max_timeout', 3600.0, 'largest accepted timeout [s]')
        self.runs_dir = Path(p('runs_dir', 'runs', 'where run reports are written'))
        self.perception_wait = p('perception_wait', 5.0, 'how long a goal waits for the first perceived objects [s]')
        objects_topic = p('objects_topic', '/perception/objects', 'DetectedObjectArray the instruction is grounded in')
        categories = p('categories_file', '', 'waste categories for sorting (config/waste_categories.yaml)')
        mpc_file = p('mpc_file', '', 'AntiGrounding MPC parameters (config/anti_grounding.yaml)')
        twin = p('twin_node', 'sim_twin', 'name of the twin node whose ~/sync, ~/rollout, ~/render are used')
        agents_file = p('agents_file', '', 'scorer agents (config/vlm_agents.yaml), for the rotation module')
        rotation_agent = p('rotation_agent', '', 'agent answering the rotation module (a VLM); empty: the module is off')
        self.rotation_backend = agent_registry.load(agents_file, [rotation_agent])[0].backend if rotation_agent else None
        with open(mpc_file) if mpc_file else open('/dev/null') as f:
            self.mpc_config = yaml.safe_load(f) or {}
        anti_grounding.MpcConfig.from_dict(self.mpc_config)   # a bad file fails here, at start
        self.arm = anti_grounding.Arm(scene.build_spec(scene.SceneConfig([], [])).compile())
        self.grounder = Grounder(categories or None)
        self.objects = self.joints = None
        self.objects_at = self.joints_at = 0.0
        self.busy, self.lock = False, threading.Lock()
        state_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(DetectedObjectArray, objects_topic, self._on_objects, 10, callback_group=state_group)
        self.create_subscription(JointState, '/joint_states', self._on_joints, 10, callback_group=state_group)
        group = ReentrantCallbackGroup()
        self.twin_sync = self.create_client(SyncTwin, f'/{twin}/sync', callback_group=group)
        self.twin_rollout = self.create_client(RolloutTrajectories, f'/{twin}/rollout', callback_group=group)
        self.twin_render = self.create_client(RenderViews, f'/{twin}/render', callback_group=group)
        self.scorer = self.create_client(ScoreTrajectories, '/score_trajectories', callback_group=group)
        self.motion = ActionClient(self, ExecuteMotion, 'execute_motion', callback_group=group)
        self.candidates_pub = self.create_publisher(MarkerArray, '/planner/candidates', 10)
        self.chosen_pub = self.create_publisher(Marker, '/planner/chosen', 10)
        self.server = ActionServer(self, ExecuteInstruction, 'execute_instruction', self.execute, goal_callback=self.on_goal,
                                   cancel_callback=lambda _: CancelResponse.ACCEPT, callback_group=group)
        self.get_logger().info(f'task_orchestrator ready: strategies {sorted(STRATEGIES)}, default {self.default_strategy}')

    def _on_objects(self, msg):
        self.objects, self.objects_at = msg, time.monotonic()

    def _on_joints(self, msg):
        self.joints, self.joints_at = msg, time.monotonic()

    def publish_feedback(self, handle, **fields):
        handle.publish_feedback(Feedback(**fields))

    def on_goal(self, _goal):
        with self.lock:
            if self.busy:
                self.get_logger().warning('goal rejected: another instruction is running (one goal at a time)')
                return GoalResponse.REJECT
            self.busy = True
        return GoalResponse.ACCEPT

    def validate(self, goal):
        text = goal.instruction.strip()
        if not text:
            raise Ended(Result.OUTCOME_REJECTED, 'empty instruction')
        if len(text) > self.max_length:
            raise Ended(Result.OUTCOME_REJECTED, f'instruction longer than {self.max_length} characters')
        strategy = goal.strategy or self.default_strategy
        if strategy in PLANNED and strategy not in STRATEGIES:
            raise Ended(Result.OUTCOME_REJECTED, f'strategy {strategy!r} is not available on this server yet; use one of {sorted(STRATEGIES)}')
        if strategy not in STRATEGIES:
            raise Ended(Result.OUTCOME_REJECTED, f'unknown strategy {strategy!r}; known: {sorted(STRATEGIES)}')
        if goal.max_steps > self.max_steps:
            raise Ended(Result.OUTCOME_REJECTED, f'max_steps {goal.max_steps} above the limit {self.max_steps}')
        if not np.isfinite(goal.timeout) or goal.timeout < 0 or goal.timeout > self.max_timeout:
            raise Ended(Result.OUTCOME_REJECTED, f'timeout must be in [0, {self.max_timeout}] s, got {goal.timeout}')
        return strategy

    def perceived(self):
        if self.objects is None:
            raise Ended(Result.OUTCOME_ERROR, 'no perceived objects yet')
        return object_states(self.objects)

    def execute(self, handle):
        started = time.monotonic()
        goal, self.steps, log, records = handle.request, 0, [], []
        self.grounded, strategy = [], goal.strategy or self.default_strategy
        try:
            strategy = self.validate(goal)
            deadline = started + (goal.timeout or self.default_timeout)
            waited = time.monotonic() + self.perception_wait
            while self.objects is None and time.monotonic() < waited:
                time.sleep(0.05)
            if self.objects is None:
                raise Ended(Result.OUTCOME_ERROR, f'no perceived objects within {self.perception_wait:.0f} s')
            labels = {o.id: o.label for o in self.objects.objects}
            try:
                spec = self.grounder.ground(goal.instruction, labels)
            except GroundingError as exc:
                raise Ended(Result.OUTCOME_REJECTED, f'cannot ground the instruction: {exc}') from None
            self.grounded = spec.to_dict()['subtasks']
            log.append(f'grounded: {json.dumps(self.grounded)}')
            before = self.perceived()
            if strategy == 'anti_grounding':
                success, detail = self.run_mpc(handle, goal, spec, deadline, log, records)
            else:
                self.run_scripted(handle, goal, spec, deadline, log)
                success, detail = True, 'dry run'
            if not goal.dry_run:   # the perceived outcome decides; a planner's reason for stopping is kept
                judged, verdict = judge(spec.subtasks, before, self.perceived())
                detail = verdict if success or judged else f'{detail}; {verdict}'
                success = judged
            outcome = Result.OUTCOME_SUCCEEDED if success else Result.OUTCOME_FAILED
            reason = detail
        except (Ended, PortError) as end:
            outcome, reason = end.outcome, end.reason
        except Exception as exc:  # a bug ends the goal with a reason, never wedges the server
            outcome, reason = Result.OUTCOME_ERROR, f'internal error: {exc!r}'
        finally:
            with self.lock:
                self.busy = False
        path = self.write_report(goal, strategy, outcome, reason, log, records, time.monotonic() - started)
        result = Result(success=outcome == Result.OUTCOME_SUCCEEDED, outcome=outcome, reason=reason, summary='\n'.join(log),
                        report_path=str(path), steps=self.steps, elapsed=time.monotonic() - started)
        if outcome == Result.OUTCOME_CANCELED:
            handle.canceled()
        elif result.success:
            handle.succeed()
        else:
            handle.abort()
        self.get_logger().info(f'instruction ended: {reason}')
        return result

    def run_mpc(self, handle, goal, spec, deadline, log, records):
        """The AntiGrounding MPC until the sub-tasks hold on the perceived state or a limit is hit."""
        config = anti_grounding.MpcConfig.from_dict(self.mpc_config)
        if goal.num_candidates:
            config.num_candidates = int(goal.num_candidates)
        ports = RosPorts(self, handle, Result, goal.scorer_backend, config.settle)

        def note(text):
            log.append(text)
            self.get_logger().info(text)
        mpc = anti_grounding.AntiGroundingMpc(ports, self.arm, config, log=note)
        try:
            success, detail = mpc.run(goal.instruction, spec.subtasks, goal.max_steps, deadline, goal.dry_run)
        except ValueError as exc:
            raise Ended(Result.OUTCOME_REJECTED, str(exc)) from None
        finally:
            records.extend(mpc.records)
            self.steps = len(mpc.records)
            self.scorer_label = ', '.join(sorted({r.backend for r in mpc.records}))
        return success, detail

    def run_scripted(self, handle, goal, spec, deadline, log):
        for index, subtask in enumerate(spec.subtasks):
            try:
                plan = scripted.motions(subtask, self.perceived())
            except ValueError as exc:
                raise Ended(Result.OUTCOME_REJECTED, str(exc)) from None
            for label, position, quat, before_width, after_width in plan:
                if goal.max_steps and self.steps >= goal.max_steps:
                    raise Ended(Result.OUTCOME_FAILED, f'max_steps {goal.max_steps} reached')
                if time.monotonic() > deadline:
                    raise Ended(Result.OUTCOME_FAILED, 'timeout reached')
                handle.publish_feedback(Feedback(stage=Feedback.STAGE_EXECUTE, step=self.steps, subtask=index,
                                                 chosen_candidate=label, backend=scripted.LABEL))
                if not goal.dry_run:
                    self.move(handle, position, quat, before_width, after_width, label)
                log.append(f'subtask {index} {subtask.action} {subtask.object_id}: {label}')
                self.steps += 1

    def move(self, handle, position, quat, gripper_before, gripper_after, label):
        """A target-pose motion through the execution node."""
        pose = PoseStamped()
        pose.header.frame_id = 'world'
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in position)
        pose.pose.orientation.w, pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z = (float(v) for v in quat)
        self.execute_motion(handle, ExecuteMotion.Goal(mode=ExecuteMotion.Goal.MODE_TARGET_POSE, target_pose=pose,
                                                       gripper_before=gripper_before, gripper_after=gripper_after), label)

    def execute_motion(self, handle, goal, label, raise_on_failure=True):
        """One ExecuteMotion goal, waited for while watching for cancel (which cancels the motion);
        its result (a failed motion raises Ended unless raise_on_failure is false)."""
        if not self.motion.wait_for_server(timeout_sec=10.0):
            raise Ended(Result.OUTCOME_ERROR, 'the execution node (execute_motion) is not available')
        motion = self._wait(handle, self.motion.send_goal_async(goal), None)
        if not motion.accepted:
            raise Ended(Result.OUTCOME_ERROR, f'"{label}": the execution node is busy')
        outcome = self._wait(handle, motion.get_result_async(), motion).result
        if not outcome.success and raise_on_failure:
            raise Ended(Result.OUTCOME_ERROR, f'"{label}" failed in execution: {outcome.reason}')
        return outcome

    def _wait(self, handle, future, motion):
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not done.wait(0.02):
            if handle.is_cancel_requested:
                if motion is not None:
                    motion.cancel_goal_async()
                    done.wait(5.0)
                raise Ended(Result.OUTCOME_CANCELED, 'canceled: the arm holds its position')
        return future.result()

    def write_report(self, goal, strategy, outcome, reason, log, records, elapsed):
        folder = self.runs_dir / time.strftime('%Y%m%d-%H%M%S')
        folder = folder.with_name(f'{folder.name}-{int(time.time() * 1000) % 1000:03d}')
        meta = {'instruction': goal.instruction, 'strategy': strategy,
                'strategy_label': STRATEGIES[strategy].LABEL if strategy in STRATEGIES else '',
                'scorer': getattr(self, 'scorer_label', ''), 'outcome': OUTCOME_NAMES.get(int(outcome), str(outcome)),
                'reason': reason, 'subtasks': self.grounded, 'log': log, 'elapsed_s': round(elapsed, 2)}
        self.scorer_label = ''
        return report.write(folder, meta, records)


OUTCOME_NAMES = {Result.OUTCOME_SUCCEEDED: 'succeeded', Result.OUTCOME_REJECTED: 'rejected', Result.OUTCOME_FAILED: 'failed',
                 Result.OUTCOME_CANCELED: 'canceled', Result.OUTCOME_ERROR: 'error'}


def main(args=None):
    node_runner.run(OrchestratorNode, args, threads=4)


if __name__ == '__main__':
    main()
