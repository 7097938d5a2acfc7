"""Small clients for twinloop's ExecuteInstruction and RunPolicy actions, in the style of nav2's
BasicNavigator.

    client = InstructionClient(node)            # any rclpy node; spun here while waiting
    client.send('put the red cube in the bowl')
    while not client.is_done():
        print(client.feedback())                # latest ExecuteInstruction.Feedback or None
    result = client.result()                    # ExecuteInstruction.Result
    client.cancel()                             # stops the arm where it is

    policies = PolicyClient(node)               # the same for RunPolicy (the vla_policy node)
    policies.send('pick up the blue cube', policy='vga', max_chunks=20)
    result = policies.wait(60.0)                # RunPolicy.Result; feedback() per executed chunk

Everything is bounded by timeouts and raises InstructionError (PolicyError) with the reason on failure.
"""

import time

from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from twinloop_interfaces.action import ExecuteInstruction, RunPolicy

from twinloop_planning.ports.ros import RESEND_AFTER
from twinloop_ros.topics import EXECUTE_INSTRUCTION, RUN_POLICY


def spin_until(executor, condition, timeout, what, check=None, error=TimeoutError):
    """Spin executor until condition() holds; raise error naming `what` after timeout [s].
    check() runs before each spin (e.g. to stop when a supervised process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        executor.spin_once(timeout_sec=0.05)
        if condition():
            return
    raise error(f'timed out after {timeout:.0f} s waiting for {what}')


def call_service(executor, client, request, timeout, what):
    """The answer to an idempotent request, sent once more if unanswered after RESEND_AFTER [s].

    A service answering within ~100 ms of a new client's discovery can lose the response (Fast DDS
    drops it while the client's response reader is still unmatched: "failed to send response
    (timeout)"), so a request seen unanswered is repeated, as RosPorts does. Raises TimeoutError."""
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f'{what} is not available after {timeout:.0f} s')
    deadline = time.monotonic() + timeout
    for attempt_ends in (time.monotonic() + min(RESEND_AFTER, timeout), deadline):
        future = client.call_async(request)
        while not future.done() and time.monotonic() < attempt_ends:
            executor.spin_once(timeout_sec=0.05)
        if future.done():
            return future.result()
        client.remove_pending_request(future)
    raise TimeoutError(f'{what} did not answer within {timeout:.0f} s (asked twice)')


ANSWER_TIMEOUT = 15.0  # [s] for the server's answer to a goal request (accepted or rejected)


class InstructionError(RuntimeError):
    """An ExecuteInstruction goal was rejected, timed out or has no result; the message says why."""


class PolicyError(InstructionError):
    """A RunPolicy goal was rejected, timed out or has no result; the message says why."""


class _ActionClient:
    """The shared part of the clients: a goal, its feedback, waits, cancel (one goal at a time)."""

    action_type = None  # set by subclasses
    error = InstructionError
    what = 'goal'

    def __init__(self, node, action_name, executor=None, check=None):
        """check: optional callable run while waiting (e.g. a process supervisor's check)."""
        self.node, self.action_name = node, action_name
        self.executor = executor or SingleThreadedExecutor(context=node.context)
        if executor is None:
            self.executor.add_node(node)
        self.check = check or (lambda: None)
        self.action = ActionClient(node, self.action_type, action_name)
        self.handle = self._result_future = self._feedback = None

    def spin_until(self, condition, timeout, what):
        """Spin until condition() holds; the client's error naming `what` after timeout [s]."""
        spin_until(self.executor, condition, timeout, what, check=self.check, error=self.error)

    def wait_for_server(self, timeout=60.0):
        """Wait for the action server; the client's error after timeout [s]."""
        self.spin_until(self.action.server_is_ready, timeout, f'the {self.action_name} server')

    def _send(self, goal, on_feedback, refused):
        """Send goal; raise the client's error with `refused` if the server rejects it."""
        self.wait_for_server()

        def feedback(message):
            self._feedback = message.feedback
            if on_feedback is not None:
                on_feedback(message.feedback)

        sent = self.action.send_goal_async(goal, feedback_callback=feedback)
        try:
            self.spin_until(sent.done, ANSWER_TIMEOUT, 'the goal to be answered')
        except self.error:  # a request sent while discovery settles can be lost: send it once more
            self.node.get_logger().warning(f'no answer to the goal after {ANSWER_TIMEOUT:.0f} s; sending it again')
            sent = self.action.send_goal_async(goal, feedback_callback=feedback)
            self.spin_until(sent.done, ANSWER_TIMEOUT, 'the goal to be accepted (sent twice)')
        self.handle = sent.result()
        if not self.handle.accepted:
            raise self.error(refused)
        self._result_future = self.handle.get_result_async()

    def feedback(self):
        """The latest feedback message, or None before the first."""
        return self._feedback

    def is_done(self, spin=0.05):
        """Spin once (up to spin [s]) and say whether the goal has finished; True when none was sent."""
        if self._result_future is None:
            return True
        self.check()
        self.executor.spin_once(timeout_sec=spin)
        return self._result_future.done()

    def wait(self, timeout):
        """Wait for the goal to finish and return its result; timeout in [s]."""
        self.spin_until(lambda: self._result_future.done(), timeout, f'the {self.what} to finish')
        return self.result()

    def result(self):
        """The finished goal's result; the client's error if there is none yet."""
        if self._result_future is None or not self._result_future.done():
            raise self.error(f'no finished {self.what}')
        return self._result_future.result().result

    def cancel(self, timeout=10.0):
        """Cancel the running goal (the arm stops where it is) and wait for the acknowledgement."""
        if self.handle is None:
            return
        future = self.handle.cancel_goal_async()
        self.spin_until(future.done, timeout, 'the cancel to be acknowledged')


class InstructionClient(_ActionClient):
    """Action client for ExecuteInstruction: send a goal, follow its feedback, wait, cancel."""

    action_type = ExecuteInstruction
    what = 'instruction'

    def __init__(self, node, action_name=EXECUTE_INSTRUCTION, executor=None, check=None):
        """check: optional callable run while waiting (e.g. a process supervisor's check)."""
        super().__init__(node, action_name, executor, check)

    def send(
        self,
        instruction,
        strategy='',
        timeout=0.0,
        max_steps=0,
        num_candidates=0,
        scorer_backend='',
        dry_run=False,
        on_feedback=None,
    ):
        """Send a goal; raises InstructionError if the server rejects it (another goal is running)."""
        goal = ExecuteInstruction.Goal(
            instruction=instruction,
            strategy=strategy,
            timeout=float(timeout),
            max_steps=int(max_steps),
            num_candidates=int(num_candidates),
            scorer_backend=scorer_backend,
            dry_run=dry_run,
        )
        self._send(goal, on_feedback, 'the task orchestrator rejected the goal: another instruction is running')


class PolicyClient(_ActionClient):
    """Action client for RunPolicy (the vla_policy node): run a named policy, follow its chunks, cancel."""

    action_type = RunPolicy
    error = PolicyError
    what = 'policy run'

    def __init__(self, node, action_name=RUN_POLICY, executor=None, check=None):
        """check: optional callable run while waiting (e.g. a process supervisor's check)."""
        super().__init__(node, action_name, executor, check)

    def send(self, instruction, policy='', max_chunks=0, timeout=0.0, on_feedback=None):
        """Send a goal (policy '': the server's default); PolicyError if the server rejects it (busy)."""
        goal = RunPolicy.Goal(
            policy=policy, instruction=instruction, max_chunks=int(max_chunks), timeout=float(timeout)
        )
        self._send(goal, on_feedback, 'the policy server rejected the goal: another policy is running')
