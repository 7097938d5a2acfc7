"""`twinloop demo`: the simulated loop, end to end, in separate ROS 2 processes.

world_sim (the stand-in arm and cameras) runs as its own process; this client perceives the
scene, grounds the instruction, plans in a twin model with Panda IK, sends joint trajectories and
gripper commands over DDS, watches /joint_states, and judges the outcome on the world's ground
truth. What this demo does NOT do yet, and says in its output: pose estimation (it reads the
world's ground truth: "privileged perception") and AntiGrounding scoring (the planner is a
scripted pick-and-place).
"""
import json
import os
import time
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from twinloop_interfaces.msg import DetectedObjectArray

from twinloop_bringup import instructions, processes, ros_env
from twinloop_execution.kinematics import PandaIk
from twinloop_twin import scene, world
from twinloop_twin.ros_conversions import image_array
from twinloop_twin.world_sim_node import GROUND_TRUTH_TOPIC, camera_topic

PERCEPTION = 'privileged (world_sim ground truth; pose estimation not built yet)'
PLANNER = 'scripted pick-and-place with Panda IK (not AntiGrounding: no candidates are scored)'
JOINT_SPEED = 0.6        # [rad/s] for timing segments
GRIPPER_OPEN, GRIPPER_CLOSED = 0.08, 0.0


class DemoFailure(RuntimeError):
    pass


class DemoClient:
    def __init__(self, context, world_process, log):
        self.node = rclpy.create_node('twinloop_demo', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.world_process, self.log = world_process, log
        self.truth = self.joints = self.image = None
        self.node.create_subscription(DetectedObjectArray, GROUND_TRUTH_TOPIC, lambda m: setattr(self, 'truth', m), 10)
        self.node.create_subscription(JointState, '/joint_states', lambda m: setattr(self, 'joints', m), 10)
        self.node.create_subscription(Image, camera_topic('front', 'color'), lambda m: setattr(self, 'image', m), qos_profile_sensor_data)
        self.trajectory_pub = self.node.create_publisher(JointTrajectory, '/panda_arm_controller/joint_trajectory', 10)
        self.gripper_pub = self.node.create_publisher(Float64, '/panda_gripper/width_command', 10)

    def spin_until(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.world_process.poll() is not None:
                raise DemoFailure(f'node world_sim died (exit code {self.world_process.returncode}) while waiting for {what}')
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return
        raise DemoFailure(f'timed out after {timeout:.0f} s waiting for {what}')

    def arm_positions(self):
        return np.array(self.joints.position[:7])

    def objects(self):
        return {o.id: o for o in self.truth.objects}

    def move(self, target, label, timeout=20.0):
        start = self.arm_positions()
        duration = max(1.0, float(np.abs(target - start).max()) / JOINT_SPEED)
        point = JointTrajectoryPoint(positions=[float(v) for v in target],
                                     time_from_start=Duration(sec=int(duration), nanosec=int((duration % 1) * 1e9)))
        self.trajectory_pub.publish(JointTrajectory(joint_names=list(scene.ARM_JOINTS), points=[point]))
        self.log(f'execute  {label} ({duration:.1f} s)')
        self.spin_until(lambda: np.abs(self.arm_positions() - target).max() < 0.01, duration + timeout, f'the arm to reach "{label}"')

    def gripper(self, width, label, settle=1.0):
        self.gripper_pub.publish(Float64(data=width))
        self.log(f'gripper  {label}')
        end = time.monotonic() + settle
        self.spin_until(lambda: time.monotonic() > end, settle + 5, 'the gripper')


def plan_waypoints(model, q_full, goal, objects):
    """Grasp and place poses for the goal, solved by IK in a model of the scene."""
    ik = PandaIk(model)
    obj = objects[goal.object_id]
    p = np.array([obj.pose.position.x, obj.pose.position.y, obj.pose.position.z])
    q = obj.pose.orientation
    yaw = np.arctan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z)) % (np.pi / 2)
    if yaw > np.pi / 4:
        yaw -= np.pi / 2
    grasp_quat = _quat_multiply((np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)), (0.0, 0.7071068, 0.7071068, 0.0))
    grasp_z = p[2] + min(obj.size.z / 2, 0.03)
    steps = [('above the object', p + (0, 0, 0.15), grasp_quat), ('down to grasp', (p[0], p[1], grasp_z), grasp_quat),
             ('lift', p + (0, 0, 0.2), grasp_quat)]
    if goal.destination_id:
        dest = objects[goal.destination_id]
        d = np.array([dest.pose.position.x, dest.pose.position.y, dest.pose.position.z + dest.size.z])
        steps += [('above the destination', d + (0, 0, 0.12 + obj.size.z), grasp_quat),
                  ('lower into the destination', d + (0, 0, 0.03 + obj.size.z / 2), grasp_quat)]
    plan, q = [], np.array(q_full, float)
    for label, position, quat in steps:
        result = ik.solve(q, position, quat)
        if not result.converged:
            raise DemoFailure(f'target "{label}" is unreachable (IK error {result.position_error * 1000:.0f} mm)')
        plan.append((label, result.positions))
        q[ik.arm_qpos] = result.positions
    return plan


def _quat_multiply(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def judge(goal, before, after):
    """Success on ground truth: lifted (pick), or resting inside/on the destination (place)."""
    obj_before, obj_after = before[goal.object_id].pose.position, after[goal.object_id].pose.position
    if not goal.destination_id:
        lifted = obj_after.z - obj_before.z
        return lifted > 0.05, f'object raised {lifted * 100:.1f} cm'
    dest = after[goal.destination_id]
    horizontal = np.hypot(obj_after.x - dest.pose.position.x, obj_after.y - dest.pose.position.y)
    inside = horizontal < max(dest.size.x, dest.size.y) / 2 and obj_after.z < dest.pose.position.z + dest.size.z + 0.05
    return bool(inside), f'object {horizontal * 100:.1f} cm from the destination centre, at z {obj_after.z * 100:.1f} cm'


def run(instruction, scene_path, runs_dir, timeout=240.0):
    started = time.monotonic()
    run_dir = Path(runs_dir) / time.strftime('%Y%m%d-%H%M%S')
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = []

    def log(message):
        line = f'[{time.monotonic() - started:6.1f} s] {message}'
        print(line, flush=True)
        steps.append(line)

    domain = ros_env.allocate_domain_id()
    env = ros_env.dds_environment(domain)
    os.environ.update(env)
    params = ros_env.config_dir() / 'world_sim.yaml'
    world_process = processes.start_python(['-m', 'twinloop_twin.world_sim_node', '--ros-args', '--params-file', str(params),
                                            '-p', f'scene:={scene_path}'], env)
    log(f'started world_sim (pid {world_process.pid}, ROS_DOMAIN_ID={domain}, DDS on loopback)')
    log(f'perception: {PERCEPTION}')
    log(f'planner:    {PLANNER}')
    context = rclpy.context.Context()
    rclpy.init(context=context)
    outcome = {'instruction': instruction, 'perception': PERCEPTION, 'planner': PLANNER, 'success': False}
    try:
        client = DemoClient(context, world_process, log)
        client.spin_until(lambda: client.truth is not None and client.joints is not None and client.image is not None,
                          60, 'world_sim topics')
        before = client.objects()
        log('perceive ' + ', '.join(f'{o.label} at ({o.pose.position.x:.2f}, {o.pose.position.y:.2f})' for o in before.values()))
        goal = instructions.ground(instruction, {oid: o.label for oid, o in before.items()})
        log(f'grounded object={goal.object_id} destination={goal.destination_id or "(lift)"}')
        _save_png(client.image, run_dir / 'front_before.png')

        twin = world.SimWorld(scene.SceneConfig.from_yaml(scene_path))
        q_full = twin.data.qpos.copy()
        q_full[twin.arm_qpos] = client.arm_positions()
        plan = plan_waypoints(twin.model, q_full, goal, before)
        twin.close()
        log(f'plan     {len(plan)} waypoints, all reachable')

        client.gripper(GRIPPER_OPEN, 'open')
        for index, (label, target) in enumerate(plan):
            client.move(target, label)
            if label == 'down to grasp':
                client.gripper(GRIPPER_CLOSED, 'close')
            if time.monotonic() - started > timeout:
                raise DemoFailure(f'timeout of {timeout:.0f} s reached')
        if goal.destination_id:
            client.gripper(GRIPPER_OPEN, 'release')
            client.move(plan[-2][1], 'retreat')
        client.spin_until(lambda: True, 1, 'a fresh state')
        time.sleep(1.0)
        client.spin_until(lambda: client.truth is not None, 5, 'ground truth')
        success, detail = judge(goal, before, client.objects())
        _save_png(client.image, run_dir / 'front_after.png')
        outcome.update(success=success, reason=detail)
    except (DemoFailure, instructions.GroundingError) as exc:
        outcome['reason'] = str(exc)
    finally:
        rclpy.shutdown(context=context)
        code = processes.stop(world_process)
        log(f'stopped world_sim (exit code {code})')
    outcome['elapsed_s'] = round(time.monotonic() - started, 1)
    outcome['log'] = steps
    (run_dir / 'report.json').write_text(json.dumps(outcome, indent=2))
    verdict = 'SUCCESS' if outcome['success'] else 'FAILURE'
    print(f'\n{verdict}: {outcome["reason"]}\n  time {outcome["elapsed_s"]} s\n  report {run_dir / "report.json"}')
    return 0 if outcome['success'] else 1


def _save_png(msg, path):
    from PIL import Image as PILImage
    PILImage.fromarray(image_array(msg)).save(path)
