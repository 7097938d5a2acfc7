"""One codec path: the same AntiGrounding step through the in-process ports (SimPorts) and through
the ROS ports (sim_twin and trajectory_scoring as nodes over DDS) sees the same candidates, the
same twin facts and scores, and makes the same choice."""

import os
import threading
import time

import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.parameter_client import AsyncParameterClient
from rclpy.executors import MultiThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from twinloop_interfaces.action import ExecuteMotion
from twinloop_interfaces.msg import DetectedObject, DetectedObjectArray
from twinloop_interfaces.srv import RenderViews, RolloutTrajectories, ScoreTrajectories, SyncTwin

from twinloop_antigrounding.config import MpcConfig
from twinloop_antigrounding.mpc import AntiGroundingMpc
from twinloop_antigrounding.stages import stages_for
from twinloop_core.ports import CancelToken, Ports, QuietProgress
from twinloop_core.robot import ARM_JOINTS, FINGER_JOINTS
from twinloop_core.task import SubTask
from twinloop_execution.kinematics import Arm
from twinloop_planning.ports.in_process import SimPorts
from twinloop_planning.ports.ros import LatestState, RosClients, RosPorts
from twinloop_ros import topics
from twinloop_ros.conversions import pose_msg, stamp
from twinloop_scoring import agents, vqa
from twinloop_twin import objects, scene, world
from twinloop_twin.twin import MeshLibrary, SimTwin

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')
SIZE = 64


def _perceived(w, t):
    """The world's ground truth as pose estimation would publish it, and its joint state."""
    header = Header(stamp=stamp(t), frame_id='world')
    msg = DetectedObjectArray(header=header)
    for o in w.config.objects:
        detected = DetectedObject(
            header=header,
            id=o.id,
            label=o.label,
            mesh_id=o.mesh_id,
            pose=pose_msg(*w.object_pose(o.id)),
            confidence=1.0,
        )
        detected.size.x, detected.size.y, detected.size.z = objects.make_shape(o.kind, **o.params).extents
        msg.objects.append(detected)
    fingers = w.gripper_width() / 2
    joints = JointState(
        header=header, name=[*ARM_JOINTS, *FINGER_JOINTS], position=[*map(float, w.arm_positions()), fingers, fingers]
    )
    return msg, joints


@pytest.fixture
def ros_ports(spawn, ros_context):
    """RosPorts on sim_twin and trajectory_scoring nodes, fed the perceived state by the test."""
    spawn(
        '-m',
        'twinloop_twin.sim_twin_node',
        '--ros-args',
        '-p',
        f'scene:={SCENE}',
        '-p',
        f'render_width:={SIZE}',
        '-p',
        f'render_height:={SIZE}',
    )
    spawn(
        '-m',
        'twinloop_scoring.scoring_node',
        '--ros-args',
        '-p',
        f'prompts_file:={ROOT}/config/vqa_prompts.yaml',
        '-p',
        f'agents_file:={ROOT}/config/vlm_agents.yaml',
        '-p',
        'agents:=[twin_critic]',
    )
    node = rclpy.create_node('ports_equivalence', context=ros_context)
    executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    latest = LatestState()
    clients = RosClients(
        latest,
        node.create_client(SyncTwin, topics.twin_service('sim_twin', 'sync')),
        node.create_client(RolloutTrajectories, topics.twin_service('sim_twin', 'rollout')),
        node.create_client(RenderViews, topics.twin_service('sim_twin', 'render')),
        node.create_client(ScoreTrajectories, topics.SCORE_TRAJECTORIES),
        ActionClient(node, ExecuteMotion, topics.EXECUTE_MOTION),
        scorer_parameters=AsyncParameterClient(node, topics.SCORING_NODE),
    )
    for client in (clients.twin_sync, clients.scorer):
        assert client.wait_for_service(timeout_sec=60), f'{client.srv_name} did not come up'
    yield RosPorts(clients, CancelToken()), latest
    executor.shutdown()
    node.destroy_node()


def _feed(latest, w, stop):
    """Perceived state arriving as it would from the topics, until stopped."""
    t = 0.0
    while not stop.is_set():
        t += 0.05
        objects_msg, joints_msg = _perceived(w, t)
        latest.on_joints(joints_msg)
        latest.on_objects(objects_msg)
        time.sleep(0.05)


def _step(ports, arm, config):
    progress = QuietProgress()
    mpc = AntiGroundingMpc(Ports(ports, ports, ports, ports, progress=progress, cancel=CancelToken()), arm, config)
    state = ports.state()
    stage = stages_for([SubTask('pick', 'red_cube')])[0]
    objects_now = dict(state.objects)
    return mpc.step(
        'pick up the red cube', stage, objects_now, dict(objects_now), state.arm, state.gripper_width, 0, execute=False
    )


def test_in_process_and_ros_ports_see_the_same_candidates_facts_and_choice(ros_ports):
    ports_ros, latest = ros_ports
    config = scene.SceneConfig.from_yaml(SCENE)
    w = world.SimWorld(config)
    w.step(200)  # objects at rest
    twin = SimTwin(MeshLibrary.from_scene(config), config.cameras)
    arm, mpc_config = Arm.panda(), MpcConfig(num_candidates=6, seed=3)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(latest, w, stop), daemon=True)
    feeder.start()
    try:
        in_process = SimPorts(
            w,
            twin,
            vqa.PromptConfig.from_yaml(f'{ROOT}/config/vqa_prompts.yaml'),
            agents.load(f'{ROOT}/config/vlm_agents.yaml', ['twin_critic']),
            f'{ROOT}/urdf/panda.urdf',
            f'{ROOT}/config/panda_joint_limits.yaml',
            size=SIZE,
        )
        local = _step(in_process, arm, mpc_config)
        remote = _step(ports_ros, arm, mpc_config)
    finally:
        stop.set()
        feeder.join()
        twin.close()
    assert len(local.candidates) == 6
    assert [(c['id'], c['description']) for c in remote.candidates] == [
        (c['id'], c['description']) for c in local.candidates
    ]
    for a, b in zip(local.candidates, remote.candidates):
        assert a['collisions'] == b['collisions'] and a['holding'] == b['holding'] and a['failed'] == b['failed']
        # times cross DDS as integer nanoseconds: a dimension rounded to 0.01 may flip at its last digit
        assert a['total'] == pytest.approx(b['total'], abs=1e-3)
        assert a['dimensions'] == pytest.approx(b['dimensions'], abs=0.0101)
    assert remote.chosen == local.chosen and remote.chosen
    assert ports_ros.scorer_reads_images is False, 'twin_critic reads no image: the scoring views are not rendered'
    assert remote.backend == local.backend and 'twin_critic' in local.backend
    assert len(remote.images) == len(local.images) and remote.images[0][1].shape == local.images[0][1].shape
