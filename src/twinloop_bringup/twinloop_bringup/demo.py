"""`twinloop demo`: the simulated loop, end to end, in separate ROS 2 processes.

world_sim (the stand-in arm and cameras) and execution (IK, ruckig timing, the safety gate)
run as their own processes; this client reads the scene, grounds the instruction, and sends
ExecuteMotion goals (target poses and gripper commands) that the execution node checks and
executes; the outcome is judged on the world's ground truth. What this demo does NOT do yet,
and says in its output: pose estimation (it reads the world's ground truth: "privileged
perception") and AntiGrounding scoring (the planner is a scripted pick-and-place).
"""
import json
import os
import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory
from twinloop_interfaces.action import ExecuteMotion
from twinloop_interfaces.msg import DetectedObjectArray

from twinloop_bringup import graphs, instructions, recording, ros_env
from twinloop_twin.ros_conversions import image_array
from twinloop_twin.world_sim_node import GROUND_TRUTH_TOPIC, camera_topic

PERCEPTION = 'privileged (world_sim ground truth; pose estimation not built yet)'
PLANNER = 'scripted pick-and-place through the execution node (not AntiGrounding: no candidates are scored)'
GRIPPER_OPEN, GRIPPER_CLOSED, KEEP = 0.08, 0.0, -1.0
GRAPH = 'sim_arm'  # config/graphs.yaml
RECORDED = {'/joint_states': JointState, GROUND_TRUTH_TOPIC: DetectedObjectArray, camera_topic('front', 'color'): Image,
            '/panda_arm_controller/joint_trajectory': JointTrajectory, '/panda_gripper/width_command': Float64}
Goal = ExecuteMotion.Goal


class DemoFailure(RuntimeError):
    pass


class DemoClient:
    def __init__(self, context, processes_by_name, log):
        self.node = rclpy.create_node('twinloop_demo', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.processes, self.log = processes_by_name, log
        self.truth = self.image = None
        self.node.create_subscription(DetectedObjectArray, GROUND_TRUTH_TOPIC, lambda m: setattr(self, 'truth', m), 10)
        self.node.create_subscription(Image, camera_topic('front', 'color'), lambda m: setattr(self, 'image', m), qos_profile_sensor_data)
        self.motion = ActionClient(self.node, ExecuteMotion, 'execute_motion')

    def spin_until(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise DemoFailure(f'node {name} died (exit code {process.returncode}) while waiting for {what}')
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return
        raise DemoFailure(f'timed out after {timeout:.0f} s waiting for {what}')

    def objects(self):
        return {o.id: o for o in self.truth.objects}

    def execute(self, label, goal, timeout=60.0):
        self.log(f'execute  {label}')
        future = self.motion.send_goal_async(goal)
        self.spin_until(future.done, 10, f'"{label}" to be accepted')
        if not future.result().accepted:
            raise DemoFailure(f'"{label}" was rejected by the execution node (busy)')
        result = future.result().get_result_async()
        self.spin_until(result.done, timeout, f'"{label}" to finish')
        outcome = result.result().result
        if not outcome.success:
            raise DemoFailure(f'"{label}" failed: {outcome.reason}')


def _pose_goal(position, quat, gripper_after=KEEP):
    pose = PoseStamped()
    pose.header.frame_id = 'world'
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in position)
    pose.pose.orientation.w, pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z = (float(v) for v in quat)
    return Goal(mode=Goal.MODE_TARGET_POSE, target_pose=pose, gripper_before=KEEP, gripper_after=gripper_after)


def pick_and_place_steps(goal, objects):
    """(label, ExecuteMotion goal) steps: grasp from above aligned with the object's faces, lift, place."""
    obj = objects[goal.object_id]
    p = np.array([obj.pose.position.x, obj.pose.position.y, obj.pose.position.z])
    grasp = _quat_multiply(_z_rotation(grasp_yaw(obj)), (0.0, 0.7071068, 0.7071068, 0.0))
    grasp_z = p[2] + min(obj.size.z / 2, 0.03)
    steps = [('open the gripper', Goal(mode=Goal.MODE_GRIPPER_ONLY, gripper_before=GRIPPER_OPEN, gripper_after=KEEP)),
             ('above the object', _pose_goal(p + (0, 0, 0.15), grasp)),
             ('down to grasp, close', _pose_goal((p[0], p[1], grasp_z), grasp, GRIPPER_CLOSED)),
             ('lift', _pose_goal(p + (0, 0, 0.2), grasp))]
    if goal.destination_id:
        dest = objects[goal.destination_id]
        d = np.array([dest.pose.position.x, dest.pose.position.y, dest.pose.position.z + dest.size.z])
        steps += [('above the destination', _pose_goal(d + (0, 0, 0.12 + obj.size.z), grasp)),
                  ('lower into the destination, release', _pose_goal(d + (0, 0, 0.03 + obj.size.z / 2), grasp, GRIPPER_OPEN)),
                  ('retreat', _pose_goal(d + (0, 0, 0.12 + obj.size.z), grasp))]
    return steps


def grasp_yaw(obj):
    """Yaw of the grasp so the fingers (closing along the grip frame's world y at yaw 0) close
    across the object's narrower horizontal side, the least joint-7 rotation among equivalents."""
    q = obj.pose.orientation
    theta = np.arctan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
    if abs(obj.size.x - obj.size.y) < 1e-3:        # square footprint: every quarter turn grasps it
        options = theta + np.pi / 2 * np.arange(-4, 5)
    else:
        base = theta if obj.size.y <= obj.size.x else theta + np.pi / 2
        options = base + np.pi * np.arange(-2, 3)  # the fingers are symmetric under half turns
    return float(options[np.argmin(np.abs(options))])


def _z_rotation(angle):
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


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


def run(instruction, scene_path, runs_dir, timeout=240.0, record=True):
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
    supervisor = graphs.Supervisor(graphs.load(GRAPH, {'scene': scene_path}), env).__enter__()
    nodes = supervisor.processes
    log(f'started graph {GRAPH}: {", ".join(f"{n} (pid {p.pid})" for n, p in nodes.items())}; '
        f'ROS_DOMAIN_ID={domain}, DDS on loopback')
    log(f'perception: {PERCEPTION}')
    log(f'planner:    {PLANNER}')
    context = rclpy.context.Context()
    rclpy.init(context=context)
    outcome = {'instruction': instruction, 'perception': PERCEPTION, 'planner': PLANNER, 'success': False}
    recorder = None
    try:
        client = DemoClient(context, nodes, log)
        if record:
            recorder = recording.BagRecorder(client.node, run_dir / 'bag', RECORDED, sensor_topics=[camera_topic('front', 'color')])
            outcome['recording'] = str(run_dir / 'bag')
        client.spin_until(lambda: client.truth is not None and client.image is not None and client.motion.server_is_ready(),
                          90, 'world_sim topics and the execution server')
        before = client.objects()
        log('perceive ' + ', '.join(f'{o.label} at ({o.pose.position.x:.2f}, {o.pose.position.y:.2f})' for o in before.values()))
        goal = instructions.ground(instruction, {oid: o.label for oid, o in before.items()})
        log(f'grounded object={goal.object_id} destination={goal.destination_id or "(lift)"}')
        _save_png(client.image, run_dir / 'front_before.png')
        for label, motion in pick_and_place_steps(goal, before):
            client.execute(label, motion)
            if time.monotonic() - started > timeout:
                raise DemoFailure(f'timeout of {timeout:.0f} s reached')
        time.sleep(1.0)
        client.truth = None
        client.spin_until(lambda: client.truth is not None, 10, 'ground truth after the motion')
        success, detail = judge(goal, before, client.objects())
        _save_png(client.image, run_dir / 'front_after.png')
        outcome.update(success=success, reason=detail)
    except (DemoFailure, instructions.GroundingError) as exc:
        outcome['reason'] = str(exc)
    finally:
        if recorder is not None:
            counts = recorder.close()
            log(f'recorded {sum(counts.values())} messages on {len(counts)} topics to {run_dir / "bag"} (rosbag2, MCAP)')
        rclpy.shutdown(context=context)
        for name, code in supervisor.stop().items():
            log(f'stopped {name} (exit code {code})')
    outcome['elapsed_s'] = round(time.monotonic() - started, 1)
    outcome['log'] = steps
    (run_dir / 'report.json').write_text(json.dumps(outcome, indent=2))
    verdict = 'SUCCESS' if outcome['success'] else 'FAILURE'
    print(f'\n{verdict}: {outcome["reason"]}\n  time {outcome["elapsed_s"]} s\n  report {run_dir / "report.json"}'
          + (f'\n  recording {outcome["recording"]}' if 'recording' in outcome else ''))
    return 0 if outcome['success'] else 1


def _save_png(msg, path):
    from PIL import Image as PILImage
    PILImage.fromarray(image_array(msg)).save(path)
