"""The scripted pick-and-place engine: grasp from above across the object's narrower side, lift,
place above the destination and release. NOT AntiGrounding - no candidate is scored; it is the
baseline the MPC planner replaces, and it says so in its results. Each target pose is solved
by IK here and executed as a joint motion through the executor (the safety gate on ROS)."""

import time
from dataclasses import dataclass

import numpy as np

from twinloop_core.engine import DecisionEngine, EngineResult, register_engine
from twinloop_core.geometry import grasp_orientation, grip_height
from twinloop_core.gripper import CLOSED_WIDTH, KEEP, OPEN_WIDTH
from twinloop_core.outcomes import GoalEnded, Outcome
from twinloop_core.ports import JointSegment
from twinloop_core.task import SubTask
from twinloop_execution.kinematics import Arm

OPEN, CLOSED = OPEN_WIDTH, CLOSED_WIDTH


@dataclass
class ScriptedConfig:
    """Heights of the scripted approach [m]."""

    approach_height: float = 0.15  # above the object before coming down
    lift_height: float = 0.2  # above the object's base after grasping


def motions(subtask: SubTask, objects, config=ScriptedConfig()):
    """[(label, position, quat wxyz or None, gripper_before, gripper_after)] for one sub-task.

    objects: {id: (position, quat wxyz, size xyz)} as perceived."""
    if subtask.action not in ('pick', 'place'):
        raise ValueError(f'the scripted strategy does {subtask.action!r} not: only pick and place')
    position, quat, size = objects[subtask.object_id]
    p = np.asarray(position, float)
    grasp = grasp_orientation(quat, size)
    grasp_z = p[2] + grip_height(size)
    steps = [
        ('above the object', p + (0, 0, config.approach_height), grasp, OPEN, KEEP),
        ('down to grasp, close', np.array([p[0], p[1], grasp_z]), grasp, KEEP, CLOSED),
        ('lift', p + (0, 0, config.lift_height), grasp, KEEP, KEEP),
    ]
    if subtask.action == 'place':
        d_pos, _, d_size = objects[subtask.destination_id]
        top = np.asarray(d_pos, float) + (0, 0, d_size[2])
        steps += [
            ('above the destination', top + (0, 0, 0.12 + size[2]), grasp, KEEP, KEEP),
            ('lower into the destination, release', top + (0, 0, 0.03 + size[2] / 2), grasp, KEEP, OPEN),
            ('retreat', top + (0, 0, 0.12 + size[2]), grasp, KEEP, KEEP),
        ]
    return steps


@register_engine('scripted_pick_place')
class ScriptedEngine(DecisionEngine):
    """A fixed sequence of target poses per pick or place sub-task."""

    label = 'scripted_pick_place (not AntiGrounding: no candidates are scored)'
    config_class = ScriptedConfig
    needs = ('perception', 'executor')

    def __init__(self, config=None, config_dir=None):
        super().__init__(config, config_dir)
        self.arm = Arm.panda()

    def check(self, task, limits):
        """Only pick and place."""
        for subtask in task.subtasks:
            if subtask.action not in ('pick', 'place'):
                raise GoalEnded(
                    Outcome.REJECTED, f'the scripted strategy does {subtask.action!r} not: only pick and place'
                )

    def run(self, task, ports, limits):
        """Each sub-task's motions in order; stops at max_steps or the deadline."""
        steps = 0
        for index, subtask in enumerate(task.subtasks):
            state = ports.perception.state()
            q = state.arm
            for label, position, quat, before, after in motions(subtask, state.objects, self.config):
                ports.cancel.check()
                if limits.max_steps and steps >= limits.max_steps:
                    return EngineResult(False, f'max_steps {limits.max_steps} reached', steps, self.label)
                if limits.deadline is not None and time.monotonic() > limits.deadline:
                    return EngineResult(False, 'timeout reached', steps, self.label)
                ports.progress.feedback('execute', steps, index, label, chosen_candidate=label, backend=self.label)
                q = self._solve(q, position, quat, label)
                if not limits.dry_run:
                    ports.executor.execute([JointSegment(q[None, :], before, after, label)])
                ports.progress.log(f'subtask {index} {subtask.action} {subtask.object_id}: {label}')
                steps += 1
        return EngineResult(True, 'dry run' if limits.dry_run else 'every scripted motion ran', steps, self.label)

    def _solve(self, q, position, quat, label):
        result = self.arm.ik.solve(self.arm.q_full(q), np.asarray(position, float), np.asarray(quat, float))
        if not result.converged:
            raise GoalEnded(Outcome.FAILED, f'"{label}": no IK solution for {np.round(position, 3).tolist()}')
        return np.asarray(result.positions, float)
