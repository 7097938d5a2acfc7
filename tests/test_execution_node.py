"""The execution node with world_sim as the arm: targets reached, bad requests refused before
any motion (IK, safety gate), cancel stops the arm at once, malformed goals never crash it."""

import os
import time

import mujoco
import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from geometry_msgs.msg import PoseStamped
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectoryPoint
from twinloop_interfaces.action import ExecuteMotion

from twinloop_execution.kinematics import EE_SITE, PandaIk
from twinloop_twin import scene, world

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')
Goal, Result = ExecuteMotion.Goal, ExecuteMotion.Result
DOWN = (0.0, 0.7071068, 0.7071068, 0.0)  # w x y z: the home grip orientation


@pytest.fixture(scope='module')
def sim_model():
    w = world.SimWorld(scene.SceneConfig.from_yaml(SCENE))
    yield w
    w.close()


@pytest.fixture
def system(sim_arm, ros_context):
    sim_arm(SCENE, {'world_sim': {'camera_rate': 2.0}, 'execution': {'gripper_time': 0.3}})
    node = rclpy.create_node('execution_test', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    states = []
    node.create_subscription(JointState, '/joint_states', states.append, 50)
    client = ActionClient(node, ExecuteMotion, 'execute_motion')
    deadline = time.monotonic() + 60
    while (not client.server_is_ready() or not states) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    assert client.server_is_ready() and states
    time.sleep(1.0)  # let the execution node receive ground-truth objects
    yield node, executor, client, states
    executor.shutdown()
    node.destroy_node()


def _run(executor, client, goal, timeout=60, on_feedback=None):
    future = client.send_goal_async(goal, feedback_callback=on_feedback)
    executor.spin_until_future_complete(future, timeout_sec=timeout)
    handle = future.result()
    assert handle is not None and handle.accepted
    result = handle.get_result_async()
    executor.spin_until_future_complete(result, timeout_sec=timeout)
    assert result.done()
    return result.result()


def _pose(x, y, z, quat=DOWN):
    p = PoseStamped()
    p.header.frame_id = 'world'
    p.pose.position.x, p.pose.position.y, p.pose.position.z = x, y, z
    p.pose.orientation.w, p.pose.orientation.x, p.pose.orientation.y, p.pose.orientation.z = quat
    return p


def _grip_position(sim_model, arm_q):
    data = mujoco.MjData(sim_model.model)
    data.qpos[sim_model.arm_qpos] = arm_q
    mujoco.mj_kinematics(sim_model.model, data)
    return data.site(EE_SITE).xpos.copy()


def test_reachable_target_is_reached(system, sim_model):
    node, executor, client, states = system
    target = np.array([0.45, 0.12, 0.22])
    response = _run(
        executor,
        client,
        Goal(mode=Goal.MODE_TARGET_POSE, target_pose=_pose(*target), gripper_before=-1.0, gripper_after=-1.0),
    )
    assert response.status == GoalStatus.STATUS_SUCCEEDED, response.result.reason
    assert response.result.final_position_error < 0.005
    time.sleep(0.3)
    executor.spin_once(timeout_sec=0.1)
    measured = _grip_position(sim_model, states[-1].position[:7])
    assert np.linalg.norm(measured - target) < 0.005, measured


def test_unreachable_and_colliding_requests_are_refused_before_motion(system, sim_model):
    node, executor, client, states = system
    executor.spin_once(timeout_sec=0.1)
    before = np.array(states[-1].position[:7])
    far = _run(
        executor,
        client,
        Goal(mode=Goal.MODE_TARGET_POSE, target_pose=_pose(1.6, 0.0, 0.3), gripper_before=-1.0, gripper_after=-1.0),
    )
    assert far.result.code == Result.CODE_REJECTED and 'unreachable' in far.result.reason

    ik = PandaIk(sim_model.model)
    q = sim_model.data.qpos.copy()
    q[sim_model.arm_qpos] = before
    above = ik.solve(q, (0.3, 0.35, 0.15), DOWN).positions
    q[sim_model.arm_qpos] = above
    into_table = ik.solve(q, (0.3, 0.35, 0.004), DOWN).positions
    goal = Goal(mode=Goal.MODE_JOINT_PATH, gripper_before=-1.0, gripper_after=-1.0)
    goal.joint_path.joint_names = list(scene.ARM_JOINTS)
    goal.joint_path.points = [
        JointTrajectoryPoint(positions=list(above)),
        JointTrajectoryPoint(positions=list(into_table)),
    ]
    table = _run(executor, client, goal)
    assert (
        table.result.code == Result.CODE_REJECTED
        and 'collision' in table.result.reason
        and 'table' in table.result.reason
    )
    for _ in range(10):
        executor.spin_once(timeout_sec=0.05)
    assert np.abs(np.array(states[-1].position[:7]) - before).max() < 0.005, 'nothing moved'


def test_cancel_stops_the_arm_within_half_a_second(system):
    node, executor, client, states = system
    executor.spin_once(timeout_sec=0.1)
    future = client.send_goal_async(
        Goal(
            mode=Goal.MODE_TARGET_POSE,
            target_pose=_pose(0.4, -0.3, 0.35),
            gripper_before=-1.0,
            gripper_after=-1.0,
            velocity_scale=0.3,
        )
    )
    executor.spin_until_future_complete(future, timeout_sec=30)
    handle = future.result()
    assert handle.accepted
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)
        if np.abs(states[-1].velocity[:7]).max() > 0.1:
            break
    assert np.abs(states[-1].velocity[:7]).max() > 0.1, 'the arm should be moving before the cancel'
    cancel = handle.cancel_goal_async()
    executor.spin_until_future_complete(cancel, timeout_sec=10)
    # from the newest state when the node has accepted the cancel (the request's way there is DDS's, not the node's)
    cancel_stamp = states[-1].header.stamp.sec + states[-1].header.stamp.nanosec * 1e-9
    result = handle.get_result_async()
    executor.spin_until_future_complete(result, timeout_sec=30)
    assert result.result().status == GoalStatus.STATUS_CANCELED
    end = time.monotonic() + 3
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.02)
    after = [s for s in states if s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 >= cancel_stamp + 0.5]
    assert len(after) > 10
    speeds = [np.abs(np.array(s.velocity[:7])).max() for s in after]
    assert max(speeds) < 0.05, f'arm still moving 0.5 s (sim) after the cancel was accepted: {max(speeds):.3f} rad/s'
    drift = np.abs(np.array(after[-1].position[:7]) - np.array(after[0].position[:7])).max()
    assert drift < 0.01


def test_malformed_goals_never_crash_the_node(system):
    node, executor, client, states = system
    rng = np.random.default_rng(3)
    codes = {}
    for i in range(60):
        kind = i % 6
        goal = Goal(gripper_before=-1.0, gripper_after=-1.0)
        if kind == 0:
            goal.mode = Goal.MODE_TARGET_POSE
            goal.target_pose = _pose(float('nan'), 0.0, 0.3)
        elif kind == 1:
            goal.mode = Goal.MODE_TARGET_POSE
            goal.target_pose = _pose(*(rng.uniform(-1e6, 1e6, 3)))
        elif kind == 2:
            goal.mode = Goal.MODE_JOINT_PATH
            goal.joint_path.joint_names = ['a', 'b']
            goal.joint_path.points = [JointTrajectoryPoint(positions=[1.0, 2.0])]
        elif kind == 3:
            goal.mode = Goal.MODE_JOINT_PATH
            goal.joint_path.joint_names = list(scene.ARM_JOINTS)
            goal.joint_path.points = [JointTrajectoryPoint(positions=list(rng.uniform(-10, 10, 7)))]
        elif kind == 4:
            goal.mode = Goal.MODE_CARTESIAN_PATH
        else:
            goal.mode = int(rng.integers(4, 255))
        response = _run(executor, client, goal)
        assert not response.result.success and response.result.reason
        codes[response.result.code] = codes.get(response.result.code, 0) + 1
    print(f'60 malformed goals: result codes {codes}')
    alive = _run(executor, client, Goal(mode=Goal.MODE_GRIPPER_ONLY, gripper_before=0.08, gripper_after=-1.0))
    assert alive.result.success


def test_moveit_backend_falls_back_with_a_clear_message():
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'twinloop_execution.execution_node',
            '--ros-args',
            '-p',
            'backend:=moveit',
            '-p',
            f'scene:={SCENE}',
            '-p',
            f'robot_description_file:={ROOT}/urdf/panda.urdf',
            '-p',
            f'joint_limits_file:={ROOT}/config/panda_joint_limits.yaml',
            '-p',
            f'safety_file:={ROOT}/config/safety.yaml',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    time.sleep(5)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=20)
    assert 'moveit_py is not importable' in output and 'using the embedded backend' in output, output
    assert process.returncode == 0


def test_a_motion_stopped_short_by_contact_holds_there_and_runs_its_gripper_event(system, sim_model):
    """Closed fingers pressed onto the red cube's top cannot reach the path's end: the arm stops
    pushing and the gripper still opens (before, the goal aborted and skipped its gripper event)."""
    node, executor, client, states = system
    executor.spin_once(timeout_sec=0.1)
    ik = PandaIk(sim_model.model)
    q = sim_model.data.qpos.copy()
    q[sim_model.arm_qpos] = states[-1].position[:7]
    above = ik.solve(q, (0.50, 0.12, 0.15), DOWN).positions
    q[sim_model.arm_qpos] = above
    into_cube = ik.solve(q, (0.50, 0.12, 0.045), DOWN).positions  # the cube's top is at 5 cm
    goal = Goal(mode=Goal.MODE_JOINT_PATH, gripper_before=0.0, gripper_after=0.08)
    goal.joint_path.joint_names = list(scene.ARM_JOINTS)
    goal.joint_path.points = [
        JointTrajectoryPoint(positions=list(above)),
        JointTrajectoryPoint(positions=list(into_cube)),
    ]
    response = _run(executor, client, goal)
    assert response.status == GoalStatus.STATUS_SUCCEEDED, response.result.reason
    executor.spin_once(timeout_sec=0.1)
    final = np.array(states[-1].position)
    short = np.abs(final[:7] - into_cube).max()
    assert 0.002 < short < 0.05  # stopped short: it did not reach the end
    assert final[7] + final[8] > 0.07  # and the fingers opened afterwards (both joints positive)
    assert _grip_position(sim_model, final[:7])[2] > 0.05  # resting on the cube, not in it
