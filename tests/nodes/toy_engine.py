"""A toy decision engine registered from a test module (not from any twinloop package): it proves
that an engine plugs into ExecuteInstruction without touching an orchestrator file. It nudges
joint 1 out and back through the executor (the safety gate) and says which ports it was given."""

from dataclasses import dataclass

import numpy as np

from twinloop_core.engine import DecisionEngine, EngineResult, register_engine
from twinloop_core.ports import JointSegment


@dataclass
class ToyConfig:
    """How far joint 1 swings [rad]."""

    swing: float = 0.1


@register_engine('toy_swing')
class ToySwing(DecisionEngine):
    """Swing joint 1 out and back."""

    label = 'toy_swing (a test engine: no planning at all)'
    config_class = ToyConfig
    needs = ('perception', 'executor')

    def run(self, task, ports, limits):
        """One swing per sub-task."""
        given = sorted(n for n in ('perception', 'twin', 'scorer', 'executor') if getattr(ports, n) is not None)
        for index, subtask in enumerate(task.subtasks):
            q = ports.perception.state().arm
            out = q + np.eye(7)[0] * self.config.swing
            ports.progress.feedback('execute', index, index, f'swing for {subtask.object_id}', backend=self.label)
            ports.executor.execute([JointSegment(np.array([out, q]), label='swing')])
        return EngineResult(True, f'swung; ports given: {given}', len(task.subtasks), self.label)
