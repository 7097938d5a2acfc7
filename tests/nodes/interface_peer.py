"""A peer node for the interface tests: serves ExecuteInstruction and ScoreTrajectories.

The action runs `max_steps` steps of 0.1 s, one feedback each, and can be cancelled; the
service scores each candidate by its number of trajectory points (a checkable function of the
request). It exists only to exercise the interfaces across processes over DDS.
"""

import sys
import time

from twinloop_interfaces.action import ExecuteInstruction
from twinloop_interfaces.msg import CandidateScore
from twinloop_interfaces.srv import ScoreTrajectories

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


class InterfacePeer(Node):
    def __init__(self):
        super().__init__('interface_peer')
        group = ReentrantCallbackGroup()
        self._action = ActionServer(
            self,
            ExecuteInstruction,
            'execute_instruction',
            self._execute,
            goal_callback=self._on_goal,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=group,
        )
        self._service = self.create_service(ScoreTrajectories, 'score_trajectories', self._score, callback_group=group)
        self.get_logger().info('interface peer ready')

    def _on_goal(self, goal):
        return GoalResponse.REJECT if not goal.instruction else GoalResponse.ACCEPT

    def _execute(self, handle):
        feedback = ExecuteInstruction.Feedback()
        started = time.monotonic()
        for step in range(handle.request.max_steps):
            if handle.is_cancel_requested:
                handle.canceled()
                return ExecuteInstruction.Result(
                    success=False, outcome=ExecuteInstruction.Result.OUTCOME_CANCELED, reason='canceled', steps=step
                )
            feedback.stage = ExecuteInstruction.Feedback.STAGE_SCORE
            feedback.step = step
            feedback.best_score = step / max(1, handle.request.max_steps)
            handle.publish_feedback(feedback)
            time.sleep(0.1)
        handle.succeed()
        return ExecuteInstruction.Result(
            success=True,
            outcome=ExecuteInstruction.Result.OUTCOME_SUCCEEDED,
            reason='done',
            summary=handle.request.instruction.upper(),
            steps=handle.request.max_steps,
            elapsed=time.monotonic() - started,
        )

    def _score(self, request, response):
        response.success = True
        response.backend = 'interface_peer (test peer, not a scorer)'
        response.scores = [
            CandidateScore(candidate_id=c.id, total=float(len(c.trajectory.points)), backend=response.backend)
            for c in request.candidates
        ]
        response.requests = len(request.candidates)
        return response


def main(args=None):
    try:
        with rclpy.init(args=args):
            executor = MultiThreadedExecutor(num_threads=2)
            executor.add_node(InterfacePeer())
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == '__main__':
    sys.exit(main())
