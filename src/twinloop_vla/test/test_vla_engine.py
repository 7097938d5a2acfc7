"""The `vla` engine: registered, needs only the policy port, forwards the instruction and limits,
and its result names the policy (no ROS: a recording PolicyRunner stands in for RunPolicy)."""

import time

import pytest

from twinloop_core.engine import Limits, build_engine, engine_class
from twinloop_core.outcomes import Canceled
from twinloop_core.ports import PolicyOutcome, Ports
from twinloop_core.task import TaskSpec
from twinloop_vla import engine  # noqa: F401  (registers 'vla')


class Runner:
    """Records the RunPolicy goals it is given and answers with a fixed outcome (or raises)."""

    def __init__(self, outcome=None, error=None):
        self.calls, self.outcome, self.error = [], outcome, error

    def run_policy(self, policy, instruction, max_chunks=0, timeout=0.0):
        self.calls.append((policy, instruction, max_chunks, timeout))
        if self.error is not None:
            raise self.error
        return self.outcome


def test_the_engine_forwards_the_instruction_and_names_the_policy(tmp_path):
    (tmp_path / 'vla.yaml').write_text('policy: vga\nmax_chunks: 30\n')
    vla = build_engine('vla', tmp_path)
    assert engine_class('vla').needs == ('policy',)
    runner = Runner(PolicyOutcome(True, "policy 'vga' (checkpoint x): executed 12 chunks", 12, 96, 4.0))
    task = TaskSpec('pick up the blue cube', [])
    result = vla.run(task, Ports(policy=runner), Limits(deadline=time.monotonic() + 20.0))
    policy, instruction, max_chunks, timeout = runner.calls[0]
    assert (policy, instruction, max_chunks) == ('vga', 'pick up the blue cube', 30)
    assert 0 < timeout <= 20.0  # the goal's deadline becomes the policy's timeout
    assert result.success and result.steps == 12 and result.backend == 'policy vga'
    result = vla.run(task, Ports(policy=Runner(PolicyOutcome(False, 'refused', 1))), Limits(max_steps=5))
    assert not result.success and result.detail == 'refused'


def test_a_cancel_propagates():
    with pytest.raises(Canceled):
        build_engine('vla').run(TaskSpec('x', []), Ports(policy=Runner(error=Canceled())), Limits())
