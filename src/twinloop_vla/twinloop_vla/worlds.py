"""The worlds a policy checkpoint is evaluated in (twinloop_vla.eval), behind one interface.

  SimSuiteWorld    a sim-suite task ('pick up the blue cube') in world_sim's core on a layout seed (the
                   recording expert's environment: twinloop_data.world_sim_expert), judged on ground truth
  LiberoTaskWorld  a LIBERO task ('libero_spatial:0') in LIBERO's own scene at one of its init states,
                   judged by its BDDL predicate within its suite's step limit (twinloop_twin.libero_world)

Each has: `instruction`, `cameras` and `fps` (what its recordings hold), `max_steps` (its step limit),
`limits` (the arm's JointLimits), reset(episode), views() {camera: RGB}, state() (the recorded policy
state), arm_positions(), act(arm target, gripper entry), shut(gripper entry), judge() -> (done, detail),
grip_offset() [m] (grip site to the task's object) and close().

Episodes: sim-suite layouts are bench/tasks.yaml's seed ranges; LIBERO's 50 init states per task are
split: the first LIBERO_TRAIN_INIT_STATES for recording demonstrations
(twinloop_data.libero_expert), the rest held out for evaluation.
"""

import re
from pathlib import Path

import numpy as np

from twinloop_core.gripper import CLOSED_WIDTH, open_or_shut
from twinloop_core.judging import judge
from twinloop_data.libero_expert import TRAIN_INIT_STATES as LIBERO_TRAIN_INIT_STATES
from twinloop_data.world_sim_expert import CAMERAS, FPS, IMAGE_SIZE, TASKS, WorldSimExpert, object_states
from twinloop_twin import scene

LIBERO_TASK = re.compile(r'^(libero_[a-z0-9_]+):(\d+)$')  # suite:task id
LIBERO_INIT_STATES = 50


def world_kind(task):
    """'libero' for 'suite:id', 'sim' for a sim-suite task; ValueError otherwise."""
    if LIBERO_TASK.match(task):
        return 'libero'
    if task in TASKS:
        return 'sim'
    raise ValueError(f'unknown task {task!r}: a sim-suite task ({sorted(TASKS)}) or a LIBERO one as suite:id')


class SimSuiteWorld:
    """A sim-suite task in world_sim's core (see the module docstring)."""

    cameras, fps, max_steps = CAMERAS, FPS, 150

    def __init__(self, task, root, cameras=CAMERAS, size=IMAGE_SIZE, fps=FPS, scene_path=''):
        root = Path(root)
        config = scene.SceneConfig.from_yaml(scene_path or root / 'config' / 'scenes' / 'tabletop.yaml')
        self.env = WorldSimExpert(config, root, fps, cameras, size)
        self.task = self.instruction = task
        self.limits, self.sim, self.before = self.env.planner.limits, None, None

    def reset(self, seed):
        """The seed's layout (world_sim ~/reset's)."""
        self.sim = self.env.reset(seed)
        self.before = object_states(self.sim)

    def views(self):
        """{camera: RGB (h, w, 3)} rendered now."""
        return {name: view[0] for name, view in self.env.observation().items()}

    def state(self):
        """7 joints, gripper width, 7 joint velocities (world_sim_expert.policy_state)."""
        return self.env.state()

    def arm_positions(self):
        """Measured arm joints [rad]."""
        return self.sim.arm_positions()

    def act(self, arm_target, gripper):
        """One control step to arm_target, the gripper open or shut by the width entry [m] (as vla_policy does)."""
        self.env.act(arm_target, open_or_shut(float(gripper)))

    @staticmethod
    def shut(gripper):
        """Whether a gripper entry (a width [m]) commands the hand shut."""
        return open_or_shut(gripper) == CLOSED_WIDTH

    def judge(self):
        """(done, detail) on ground truth (twinloop_core.judging)."""
        return judge(TASKS[self.task], self.before, object_states(self.sim))

    def grip_offset(self):
        """Grip site to the task's object [m]."""
        tcp = self.env.planner.arm.ee_position(self.sim.arm_positions())
        return float(np.linalg.norm(tcp - self.sim.object_pose(TASKS[self.task][0].object_id)[0]))

    def close(self):
        """Release the renderers."""
        self.env.close()


class LiberoTaskWorld:
    """A LIBERO task at one of its init states (see the module docstring)."""

    cameras, fps = ('agentview', 'wrist'), 20
    image_size = 128  # the LIBERO expert's recording size

    def __init__(self, task, root, cameras=None, fps=20):
        """cameras: the policy's views (a subset of `cameras`); fps: 20, the rate LIBERO's step limits count in."""
        from twinloop_data.libero_expert import ExpertFailed, goal_of
        from twinloop_execution.safety import JointLimits
        from twinloop_twin.libero_world import MAX_STEPS, LiberoWorld

        unknown = [c for c in cameras or () if c not in self.cameras]
        if unknown or fps != self.fps:
            raise ValueError(
                f'LIBERO tasks have cameras {list(self.cameras)} at {self.fps} Hz, not {unknown} / {fps} Hz'
            )
        suite, task_id = LIBERO_TASK.match(task).groups()
        self.world = LiberoWorld(suite, int(task_id), image_size=self.image_size, control_freq=fps)
        self.instruction, self.max_steps = self.world.instruction, MAX_STEPS[suite]
        try:
            self.object = goal_of(self.world)[0]  # the object of a single On / In goal, for the grip offset
        except ExpertFailed:  # other goals (open the drawer, two-part goals): no grip offset
            self.object = None
        self.limits = JointLimits.panda(root)

    def reset(self, init_state):
        """LIBERO's init state number init_state; refused where demonstrations may be recorded."""
        if not LIBERO_TRAIN_INIT_STATES <= init_state < LIBERO_INIT_STATES:
            raise ValueError(
                f'init state {init_state}: evaluation uses {LIBERO_TRAIN_INIT_STATES}..{LIBERO_INIT_STATES - 1} '
                f'(0..{LIBERO_TRAIN_INIT_STATES - 1} may be in the training data)'
            )
        self.world.reset(init_state)

    def views(self):
        """{camera: RGB (s, s, 3)} rendered now."""
        return {name: self.world.camera(name).rgb for name in self.cameras}

    def state(self):
        """7 joints and the 2 finger positions (the LIBERO expert's recorded state)."""
        return np.concatenate([self.world.arm_positions(), self.world.finger_positions()]).astype(np.float32)

    def arm_positions(self):
        """Measured arm joints [rad]."""
        return self.world.arm_positions()

    def act(self, arm_target, gripper):
        """One control step to arm_target; the gripper closes where the entry is positive (LIBERO's +1)."""
        self.world.step(arm_target, self.shut(gripper))

    @staticmethod
    def shut(gripper):
        """Whether a gripper entry (-1 open, +1 close) commands the hand shut."""
        return gripper > 0

    def judge(self):
        """(done, detail) by the task's BDDL predicate."""
        done = self.world.success()
        return done, f'LIBERO goal {"reached" if done else "not reached"} after {self.world.steps} steps'

    def grip_offset(self):
        """Grip site to the goal's object [m] (both in LIBERO's world frame); NaN for goals without one."""
        if self.object is None:
            return float('nan')
        data = self.world.sim.data
        body = self.world.env.env.obj_body_id[self.object]
        return float(np.linalg.norm(data.get_site_xpos('gripper0_grip_site') - data.body_xpos[body]))

    def close(self):
        """Release the environment."""
        self.world.close()


def make_world(task, root, settings):
    """The world of a task with the evaluation settings' cameras, image size, rate and scene."""
    if world_kind(task) == 'libero':
        return LiberoTaskWorld(task, root, settings.cameras, settings.fps)
    return SimSuiteWorld(task, root, settings.cameras, settings.size, settings.fps, settings.scene)
