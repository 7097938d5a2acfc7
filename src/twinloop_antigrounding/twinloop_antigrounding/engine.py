"""The AntiGrounding engine: the MPC loop behind ExecuteInstruction (strategy 'anti_grounding')."""

from dataclasses import replace
from pathlib import Path

import yaml

from twinloop_antigrounding.config import MpcConfig
from twinloop_antigrounding.mpc import AntiGroundingMpc
from twinloop_antigrounding.stages import stages_for
from twinloop_core.engine import DecisionEngine, EngineResult, register_engine
from twinloop_core.outcomes import GoalEnded, Outcome
from twinloop_execution.kinematics import Arm
from twinloop_scoring import agents


@register_engine('anti_grounding')
class AntiGroundingEngine(DecisionEngine):
    """Candidates sampled around the gripper, rolled out and rendered in the twin, scored, the best executed."""

    label = 'anti_grounding (AntiGrounding MPC: twin rollouts scored by the scoring node)'
    config_class = MpcConfig
    needs = ('perception', 'twin', 'scorer', 'executor')
    goal_fields = ('num_candidates', 'scorer_backend')

    def __init__(self, config=None, config_dir=None):
        super().__init__(config, config_dir)
        self.arm = Arm.panda()
        self.rotation_backend = None
        if self.config.rotation_agent:
            self.rotation_backend = agents.load(self._agents_file(), [self.config.rotation_agent])[0].backend

    def _agents_file(self):
        return str(Path(self.config_dir or '.') / self.config.agents_file)

    def check(self, task, limits):
        """Reject tasks with actions the stages do not cover and candidate counts out of range."""
        try:
            stages_for(task.subtasks)
        except ValueError as exc:
            raise GoalEnded(Outcome.REJECTED, str(exc)) from None
        names = [n.strip() for n in limits.scorer_backend.split(',') if n.strip()]
        if names:
            with open(self._agents_file()) as f:
                known = sorted((yaml.safe_load(f) or {}).get('agents', {}))
            unknown = sorted(set(names) - set(known))
            if unknown:
                raise GoalEnded(Outcome.REJECTED, f'unknown scorer_backend {unknown}; the agents are {known}')
        if limits.num_candidates > self.config.max_candidates:
            raise GoalEnded(
                Outcome.REJECTED, f'num_candidates {limits.num_candidates} above the limit {self.config.max_candidates}'
            )

    def run(self, task, ports, limits):
        """The MPC until the sub-tasks hold on the perceived state or a limit is hit."""
        config = self.config
        if limits.num_candidates:
            config = replace(config, num_candidates=int(limits.num_candidates))
        if task.constraints.speed == 'slow':  # candidate motions at half the end-effector speed
            config = replace(config, speed=config.speed / 2)
        mpc = AntiGroundingMpc(ports, self.arm, config, self.rotation_backend)
        success, detail = mpc.run(
            task.instruction,
            task.subtasks,
            limits.max_steps,
            limits.deadline,
            limits.dry_run,
            task.constraints.do_not_move,
        )
        return EngineResult(
            success, detail, len(mpc.records), ', '.join(sorted({r.backend for r in mpc.records if r.backend}))
        )
