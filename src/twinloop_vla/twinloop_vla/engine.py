"""The `vla` engine behind ExecuteInstruction: the instruction goes to a learned policy on the
policy server (RunPolicy through the `policy` port), which runs it closed loop on the arm.

The engine forwards the instruction text as it came (a VLA reads language itself; the parsed
sub-tasks are not used), maps the goal's max_steps to max_chunks and its deadline to the policy's
timeout. Its result names the policy (the server's reason names it too, with its checkpoint or
'UNTRAINED' label); success is the server's (every chunk executed, no refusal).
"""

import time
from dataclasses import dataclass

from twinloop_core.engine import DecisionEngine, EngineResult, register_engine


@dataclass
class VlaConfig:
    """Which policy the engine asks for, and its limits when the goal sets none."""

    policy: str = ''  # a policy name of the server's registry; '': the server's default_policy
    max_chunks: int = 0  # 0: the server's default
    timeout: float = 0.0  # [s]; 0: the goal's deadline, else the server's default


@register_engine('vla')
class VlaEngine(DecisionEngine):
    """Runs a learned VLA policy on the policy server with the instruction."""

    label = 'vla (a learned policy on the policy server, RunPolicy)'
    config_class = VlaConfig
    needs = ('policy',)

    def run(self, task, ports, limits):
        """One RunPolicy goal with the instruction; raises Canceled when the goal is canceled."""
        c = self.config
        timeout = c.timeout
        if limits.deadline is not None:
            left = max(0.1, limits.deadline - time.monotonic())
            timeout = min(timeout, left) if timeout else left
        name = c.policy or 'the server default'
        ports.progress.feedback('policy', 0, detail=f'running policy {name} on "{task.instruction}"')
        outcome = ports.policy.run_policy(c.policy, task.instruction, limits.max_steps or c.max_chunks, timeout)
        ports.progress.log(
            f'policy {name}: {outcome.reason} ({outcome.chunks_executed} chunks, '
            f'{outcome.actions_executed} actions, {outcome.elapsed:.1f} s)'
        )
        return EngineResult(outcome.success, outcome.reason, outcome.chunks_executed, f'policy {name}')
