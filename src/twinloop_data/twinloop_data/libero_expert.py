"""A scripted expert for LIBERO pick-and-place and drawer-opening tasks, recording demonstrations in the
LeRobot format.

Privileged: it reads the task's goal from its BDDL problem ("On <object> <destination>", "In", or "Open <drawer
region>") and object poses, drawer slides and handles from the simulator. It plans grip-site waypoints (above the
object, down, close, lift, above the destination, down, open), solves them with twinloop's IK, times them with
ruckig (twinloop_execution.trajectory; `--tracked-speed` caps every joint at what the world's controller follows,
libero_world.TRACKED_SPEED, so the labels do not run ahead of the arm) and drives LIBERO's JOINT_POSITION controller
at 20 Hz, recording every control step: both cameras (RGB, depth in mm, the gaze mask: the pixels of the object
until it is lifted, then of the destination, from MuJoCo's segmentation), joint and finger positions, the action
sent (7 joint targets + gripper -1 open / +1 close) and the instruction. Objects wider than the open fingers (bowls,
plates) are taken by the rim (twinloop_core.geometry.grasp_of), everything else across its narrower side at mid
height. A drawer's handle is gripped from the front with the fingers closing vertically and pulled out along the
slide (LiberoWorld.drawer).

    . ./twinloop_env.sh && python -m twinloop_data.libero_expert --suite libero_spatial --tasks 0 1 \\
        --successes 20 --out data/libero_spatial_demos [--repeats 4 --noise 0.02]

Init states: demonstrations come from LIBERO's init states 0..TRAIN_INIT_STATES - 1 only (the VLA evaluation
holds out the rest, twinloop_vla.worlds); --repeats runs each of them more than once with DART noise, and
--first-repeat continues an earlier recording with new noise (merge the folders with
twinloop_data.lerobot_format.merge). --minutes bounds each task's recording time.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from twinloop_execution import trajectory
from twinloop_execution.safety import JointLimits
from twinloop_core.geometry import grasp_of, grasp_orientation, spans_open_fingers
from twinloop_data.lerobot_format import LeRobotWriter, gaze_feature, gaze_image
from twinloop_data.world_sim_expert import PICK_WAYPOINTS, NoisyTargets
from twinloop_execution.kinematics import Arm
from twinloop_twin import libero_twin, scene
from twinloop_twin.libero_world import MAX_STEPS, TRACKED_SPEED, LiberoWorld, matrix_to_quat

STATE_NAMES = [*scene.ARM_JOINTS, *scene.FINGER_JOINTS]
DRAWER_APPROACH = 0.08  # [m] in front of a drawer's handle before gripping it; backed off this far after letting go
DRAWER_GRIP_DEPTH = 0.004  # [m] the grip site behind the handle's centre: LIBERO's middle drawer opened from grasps
# 12 mm deeper to 4 mm short of the centre and slipped off from 6 mm short (a policy's error), so aim inside that window
DRAWER_PULL = 0.17  # [m] the hand pulls this far: the drawer follows ~1.5 cm behind (LIBERO: open beyond 0.14 of 0.16)
GRASP_DESCENT = 1  # the waypoint down onto the object: no DART noise (a can clears the open fingers by 9 mm a side)
TRAIN_INIT_STATES = 20  # demonstrations come from init states 0..19; 20..49 are held out for evaluation
ACTION_NAMES = [f'{j}_target' for j in scene.ARM_JOINTS] + ['gripper_close']


def features(image_size):
    """The dataset's LeRobot features for square images of image_size pixels (RGB, depth in mm, gaze mask,
    state, action)."""
    image = {'dtype': 'image', 'shape': [image_size, image_size, 3], 'names': ['height', 'width', 'channel']}
    gaze = gaze_feature(image_size, image_size)
    depth = {
        'dtype': 'image',
        'shape': [image_size, image_size, 1],
        'names': ['height', 'width', 'channel'],
        'info': {'unit': 'mm', 'encoding': '16-bit PNG, 0 = no return'},
    }
    return {
        'observation.images.agentview': image,
        'observation.images.wrist': image,
        'observation.depth.agentview': depth,
        'observation.depth.wrist': depth,
        'observation.gaze.agentview': gaze,
        'observation.gaze.wrist': gaze,
        'observation.state': {'dtype': 'float32', 'shape': [len(STATE_NAMES)], 'names': STATE_NAMES},
        'action': {'dtype': 'float32', 'shape': [len(ACTION_NAMES)], 'names': ACTION_NAMES},
    }


class ExpertFailed(Exception):
    """The expert could not plan the task (unsupported goal, unreachable pose)."""


def owner_of(region, names):
    """The object or fixture a BDDL region belongs to (basket_1_contain_region -> basket_1), None if none."""
    return max((n for n in names if region.startswith(n + '_')), key=len, default=None)


def goal_of(world):
    """(object, destination) from the task's BDDL goal, e.g. (On akita_black_bowl_1 plate_1)."""
    goal = world.env.env.parsed_problem['goal_state']
    if len(goal) != 1 or goal[0][0].lower() not in ('on', 'in') or len(goal[0]) != 3:
        raise ExpertFailed(f'the expert does one "On/In object destination" goal, not {goal}')
    _, obj, destination = goal[0]
    names = {name for name, *_ in world.objects()}
    if destination not in names:  # a region of an object or fixture, e.g. basket_1_contain_region
        destination = owner_of(destination, names) or destination
    if obj not in names or destination not in names:
        raise ExpertFailed(f'goal {goal[0]} names things not in the scene {sorted(names)}')
    return obj, destination


class LiberoExpert:
    """Privileged pick-and-place expert: IK waypoints timed by ruckig, driven through LiberoWorld."""

    def __init__(self, world, twin, urdf, limits_yaml, velocity_scale=0.4, max_speed=None):
        """max_speed: [rad/s] cap on every joint's speed (None: velocity_scale of the limits alone, as the
        datasets of record were made; TRACKED_SPEED: no faster than LIBERO's controller follows)."""
        self.world, self.twin, self.velocity_scale = world, twin, velocity_scale
        self.limits = JointLimits.from_description(urdf, limits_yaml, list(scene.ARM_JOINTS))
        self.velocity = (
            self.limits.velocity if max_speed is None else np.minimum(self.limits.velocity, max_speed / velocity_scale)
        )
        self.jerk = trajectory.jerk_limits(limits_yaml, list(scene.ARM_JOINTS))
        self.arm = Arm(twin.model)

    def plan(self):
        """[(grip position, quat wxyz, gripper closed after, object the gaze is on, DART noise on the way)]
        for the task's goal: a pick-and-place (On / In) or opening a drawer (Open). The noise dies out on the
        way down onto the object (with it on, 1 of 5 noisy runs grasped LIBERO-Object's can, the others knocked it)."""
        goal = self.world.env.env.parsed_problem['goal_state']
        if len(goal) == 1 and len(goal[0]) == 2 and goal[0][0].lower() == 'open':
            return self.drawer_waypoints(goal[0][1])
        obj, destination = goal_of(self.world)
        return [
            (*waypoint, obj if index < PICK_WAYPOINTS else destination, index != GRASP_DESCENT)
            for index, waypoint in enumerate(self.waypoints(obj, destination))
        ]

    def drawer_waypoints(self, region):
        """Open the drawer of a region: in front of its handle, onto it from the front with the fingers
        closing vertically, close, pull it out DRAWER_PULL, let go and back off. The gaze is on the fixture; DART
        noise only before the hand comes onto the handle (a centimetre off there and the fingers slip off it)."""
        try:
            drawer = self.world.drawer(region)
        except ValueError as exc:  # a door or a microwave: hinged, not a drawer
            raise ExpertFailed(str(exc)) from exc
        fixture = owner_of(region, [name for name, *_ in self.world.objects()])
        if fixture is None:
            raise ExpertFailed(f'no fixture of region {region}')
        o = drawer.opening
        h = drawer.handle - DRAWER_GRIP_DEPTH * o
        quat = self.front_grip(h + DRAWER_APPROACH * o, o)
        return [
            (h + DRAWER_APPROACH * o, quat, False, fixture, True),
            (h, quat, True, fixture, False),
            (h + DRAWER_PULL * o, quat, True, fixture, False),
            (h + (DRAWER_PULL + DRAWER_APPROACH) * o, quat, False, fixture, True),
        ]

    def front_grip(self, position, opening):
        """The orientation (w x y z) that approaches position against the horizontal direction `opening` with
        the fingers closing vertically: of the two (fingers' axis up or down), the one IK reaches with the smaller
        joint motion from where the arm is."""
        approach = -np.asarray(opening, float)
        q, best = self.world.arm_positions(), None
        for up in (1.0, -1.0):
            closing = np.array([0.0, 0.0, up])  # the grip site's x axis: the fingers' closing axis
            rotation = np.column_stack([closing, np.cross(approach, closing), approach])
            quat = matrix_to_quat(rotation)
            result = self.arm.ik.solve(self.arm.q_full(q), position, quat)
            motion = np.abs(result.positions - q).sum()
            if result.converged and (best is None or motion < best[0]):
                best = (motion, quat)
        if best is None:
            raise ExpertFailed(f'no IK solution in front of the handle at {np.round(position, 3)}')
        return best[1]

    def waypoints(self, obj, destination):
        """[(grip position, quat wxyz, gripper closed after)] for the pick-and-place."""
        objects = self.twin.planner_objects(self.world.objects())
        (p, q, size), (d, _, d_size) = objects[obj], objects[destination]
        if spans_open_fingers(size):  # bowls, plates, ramekins: by the rim, fingers across the wall
            grip, quat, _, _ = grasp_of(objects[obj], [box[0] for n, box in objects.items() if n != obj])
        else:
            grip = p + (0, 0, min(size[2] / 2, 0.04))
            quat = grasp_orientation(q, size)
        hold = grip - p  # the grip relative to the object's bottom centre
        top = d + (0, 0, d_size[2])
        place = top + hold + (0, 0, 0.02)
        return [
            (grip + (0, 0, 0.12), quat, False),
            (grip, quat, True),
            (grip + (0, 0, 0.18), quat, True),
            (place + (0, 0, 0.12), quat, True),
            (place, quat, False),
            (place + (0, 0, 0.10), quat, False),
        ]

    def run(self, record, perturb=None):
        """Drive the world through the task; record(frame) gets every control step. True on LIBERO success.
        perturb: a NoisyTargets applied to the executed arm targets while the arm moves (DART; the recorded
        actions stay the expert's)."""
        perturb = perturb or NoisyTargets(0.0, None)
        q = self.world.arm_positions()
        limit = MAX_STEPS[self.world.suite]
        for target, quat, close, gaze, noisy in self.plan():
            result = self.arm.ik.solve(self.arm.q_full(q), target, quat)
            if not result.converged:
                raise ExpertFailed(f'no IK solution for {np.round(target, 3)}')
            path = trajectory.parametrize(
                np.vstack([q, result.positions]),
                self.velocity,
                self.limits.acceleration,
                self.jerk,
                self.velocity_scale,
                period=1.0 / self.world.control_freq,
            )
            times = (
                np.arange(1, int(np.ceil((path.duration + 0.2) * self.world.control_freq)) + 1)
                / self.world.control_freq
            )
            commands = [(path.sample(t), self.world.gripper_closed) for t in times]
            if close != self.world.gripper_closed:
                commands += [(result.positions, close)] * int(0.6 * self.world.control_freq)
            for k, (arm_target, closed) in enumerate(commands):
                record(self._frame(arm_target, closed, gaze))
                perturb.active = noisy and k < len(times)
                self.world.step(perturb(arm_target), closed)
                if self.world.success():
                    return True
                if self.world.steps >= limit:
                    return False
            q = result.positions
        return self.world.success()

    def _frame(self, arm_target, closed, gaze):
        frame = {
            'observation.state': np.concatenate([self.world.arm_positions(), self.world.finger_positions()]),
            'action': np.append(arm_target, 1.0 if closed else -1.0),
        }
        for name in ('agentview', 'wrist'):
            camera = self.world.camera(name)
            frame[f'observation.images.{name}'] = camera.rgb
            frame[f'observation.depth.{name}'] = np.clip(np.nan_to_num(camera.depth) * 1000, 0, 65535).astype(np.uint16)
            frame[f'observation.gaze.{name}'] = gaze_image(self.world.segmentation(name, gaze))
        return frame


def main():
    """Record scripted demonstrations of LIBERO tasks into a LeRobot dataset folder."""
    parser = argparse.ArgumentParser(description='Scripted LIBERO demonstrations in the LeRobot format')
    parser.add_argument('--suite', default='libero_spatial')
    parser.add_argument('--tasks', type=int, nargs='+', default=[0, 1])
    parser.add_argument('--successes', type=int, default=20, help='successful demonstrations wanted per task')
    parser.add_argument(
        '--repeats', type=int, default=1, help=f'runs per init state 0..{TRAIN_INIT_STATES - 1} (needs --noise > 0)'
    )
    parser.add_argument(
        '--first-repeat',
        type=int,
        default=0,
        help='number of the first run (a later recording continues an earlier one)',
    )
    parser.add_argument('--noise', type=float, default=0.0, help='DART: spread [rad] of the executed targets offset')
    parser.add_argument(
        '--tracked-speed',
        action='store_true',
        help=f"no joint faster than LIBERO's controller follows ({TRACKED_SPEED} rad/s; the labels then stay within "
        '0.1 rad of the arm, without it up to 0.5 rad ahead)',
    )
    parser.add_argument('--minutes', type=float, default=None, help='stop a task after this long (default: no limit)')
    parser.add_argument('--image-size', type=int, default=128)
    parser.add_argument('--out', required=True, help='dataset folder (must not hold a dataset yet)')
    args = parser.parse_args()
    if (args.repeats > 1 or args.first_repeat > 0) and args.noise <= 0:
        parser.error('more than one run per init state needs --noise > 0 (the runs would be identical)')
    root = Path(os.environ.get('TWINLOOP_ROOT', '.'))
    writer = LeRobotWriter(args.out, fps=20, features=features(args.image_size))
    repeats = range(args.first_repeat, args.first_repeat + args.repeats)
    report = {
        'suite': args.suite,
        'tracked_speed': args.tracked_speed,
        'init_states': [0, TRAIN_INIT_STATES],
        'repeats': [repeats.start, repeats.stop],
        'noise': args.noise,
        'tasks': {},
    }
    runs = [(i, r) for r in repeats for i in range(TRAIN_INIT_STATES)]  # every init state, then again
    for task_id in args.tasks:
        world = LiberoWorld(args.suite, task_id, image_size=args.image_size)
        twin = libero_twin.LiberoTwin(world.sim.model.get_xml(), world.base_position, [o[0] for o in world.objects()])
        expert = LiberoExpert(
            world,
            twin,
            root / 'urdf' / 'panda.urdf',
            root / 'config' / 'panda_joint_limits.yaml',
            max_speed=TRACKED_SPEED if args.tracked_speed else None,
        )
        successes, attempts, started = 0, 0, time.monotonic()
        for init_state, repeat in runs:
            if successes >= args.successes or (args.minutes and time.monotonic() - started > 60 * args.minutes):
                break
            world.reset(init_state)
            attempts += 1
            try:
                ok = expert.run(writer.add_frame, NoisyTargets(args.noise, np.random.default_rng([init_state, repeat])))
            except ExpertFailed as exc:
                ok = False
                print(f'  init state {init_state}: {exc}', flush=True)
            if ok:
                writer.save_episode(world.instruction)
                successes += 1
            else:
                writer.discard_episode()
            print(
                f'{args.suite} task {task_id} init state {init_state} run {repeat}: {"success" if ok else "failure"} '
                f'({world.steps} steps); {successes}/{attempts} so far',
                flush=True,
            )
        if successes < args.successes:
            print(f'WARNING: {args.suite} task {task_id}: {successes} of {args.successes} demonstrations', flush=True)
        report['tasks'][task_id] = {
            'instruction': world.instruction,
            'successes': successes,
            'attempts': attempts,
            'success_rate': successes / max(attempts, 1),
            'wall_s': round(time.monotonic() - started),
        }
        world.close()
    print(json.dumps(report, indent=2))
    (Path(args.out) / 'meta' / 'expert_report.json').write_text(json.dumps(report, indent=2))


if __name__ == '__main__':
    main()
