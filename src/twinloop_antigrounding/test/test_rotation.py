"""The rigid-coupled rotation module: the axes image goes to a VLM over the real chat protocol
(a loopback server stands in for the hosted model), the answer becomes an object and gripper
rotation, and a non-VLM backend or a garbage reply skips the module with the reason."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from twinloop_antigrounding import rotation
from twinloop_scoring.loopback_server import ChatServer
from twinloop_scoring.openai_http import OpenAIHTTPBackend
from twinloop_scoring.twin_critic import TwinCritic

IMAGE = np.zeros((32, 32, 3), np.uint8)


def test_vlm_answer_becomes_object_and_gripper_rotation():
    with ChatServer(json.dumps({'axis': 'z', 'direction': 'positive', 'degrees': 90})) as server:
        backend = OpenAIHTTPBackend(server.url, 'test-vlm', retries=0, cache=False)
        answer = rotation.ask(backend, 'turn the block so its long side faces the robot', 'green block', IMAGE)
        sent = server.requests[0]['json']
    assert 'green block' in json.dumps(sent['messages']) and any(
        part.get('type') == 'image_url'
        for m in sent['messages']
        if isinstance(m['content'], list)
        for part in m['content']
    )
    assert answer.axis == 'z' and answer.angle == pytest.approx(np.pi / 2)
    tilted = Rotation.from_euler('x', 0.4).as_matrix()  # the object's own z is not the world's
    target = answer.object_rotation(tilted)
    assert np.allclose(target[:, 2], tilted[:, 2])  # turned about its own z axis
    assert np.allclose(target[:, 0], tilted[:, 1])  # x now where y was: +90 degrees
    gripper = Rotation.from_euler('y', np.pi).as_matrix()
    moved = answer.gripper_rotation(tilted, gripper)
    assert np.allclose(moved @ gripper.T, target @ tilted.T)  # the same world rotation as the object


def test_not_a_vlm_or_garbage_skips_the_module_with_a_reason():
    with pytest.raises(rotation.RotationUnavailable, match='not a VLM'):
        rotation.ask(TwinCritic(), 'rotate it', 'cube', IMAGE)
    with ChatServer('I think you should rotate it a bit') as server:
        backend = OpenAIHTTPBackend(server.url, 'test-vlm', retries=0, cache=False)
        with pytest.raises(rotation.RotationUnavailable):
            rotation.ask(backend, 'rotate it', 'cube', IMAGE)
    with pytest.raises(rotation.RotationUnavailable, match='out of range'):
        rotation.parse(json.dumps({'axis': 'w', 'direction': 'positive', 'degrees': 30}), 'test')


def test_mpc_turns_the_carrying_grip_by_the_answer_and_skips_without_a_vlm(sim):
    import os
    from twinloop_antigrounding.config import MpcConfig
    from twinloop_antigrounding.mpc import AntiGroundingMpc
    from twinloop_antigrounding.stages import Stage
    from twinloop_core.task import SubTask
    from twinloop_core.geometry import HOME_GRIP
    from twinloop_core.ports import QuietProgress
    from twinloop_execution.kinematics import Arm
    from twinloop_planning.ports.in_process import SimPorts
    from twinloop_scoring import vqa
    from twinloop_twin.twin import MeshLibrary, SimTwin

    root = os.environ['TWINLOOP_ROOT']
    twin = SimTwin(MeshLibrary.from_scene(sim.config), sim.config.cameras)
    arm = Arm.panda()
    config = vqa.PromptConfig.from_yaml(f'{root}/config/vqa_prompts.yaml')
    notes = []
    try:
        with ChatServer(json.dumps({'axis': 'z', 'direction': 'negative', 'degrees': 45})) as server:
            ports = SimPorts(sim, twin, config, [], f'{root}/urdf/panda.urdf', f'{root}/config/panda_joint_limits.yaml')
            ports.sync()
            mpc = AntiGroundingMpc(
                ports.ports(QuietProgress(notes.append)),
                arm,
                MpcConfig(),
                OpenAIHTTPBackend(server.url, 'test-vlm', retries=0, cache=False),
            )
            grasp = np.array(HOME_GRIP)
            stage = Stage('carry', 0, SubTask('place', 'green_block', 'bowl'))
            upright = {'green_block': (np.zeros(3), (1.0, 0, 0, 0), (0.05, 0.05, 0.05))}
            turned = mpc._rotation('turn it', stage, upright, grasp)
            assert len(server.requests) == 1 and 'axis' in notes[-1]
        as_matrix = lambda q: Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()  # noqa: E731
        delta = as_matrix(turned) @ as_matrix(grasp).T
        assert np.allclose(delta, Rotation.from_euler('z', -np.pi / 4).as_matrix(), atol=1e-6)
        mpc.rotation_backend = None  # no VLM, and "into the bowl" gives no orientation: skipped
        assert mpc._rotation('turn it', stage, upright, grasp) is None and 'no orientation' in notes[-1]
        # side by side with a reference (a pair): the twin answers geometrically, labelled as not a VLM
        lined_up = Stage('carry', 0, SubTask('place', 'green_block', 'bowl', 'side_by_side'))
        reference = {**upright, 'bowl': (np.ones(3), (np.cos(0.3), 0, 0, np.sin(0.3)), (0.1, 0.1, 0.05))}
        turned = mpc._rotation('line it up', lined_up, reference, grasp)
        assert 'twin geometry (not a VLM)' in notes[-1] and 'by 34 degrees' in notes[-1]
        assert np.allclose(as_matrix(turned) @ as_matrix(grasp).T, Rotation.from_euler('z', 0.6).as_matrix(), atol=1e-6)
    finally:
        twin.close()


def test_the_geometric_answer_turns_the_short_way_to_the_reference_yaw():
    yaw = lambda a: (np.cos(a / 2), 0.0, 0.0, np.sin(a / 2))  # noqa: E731
    answer = rotation.geometric(yaw(np.radians(170)), yaw(np.radians(-170)))
    assert answer.axis == 'z' and np.degrees(answer.angle) == pytest.approx(20.0)
    assert rotation.geometric(yaw(0.4), yaw(0.4)).angle == pytest.approx(0.0, abs=1e-9)
    assert answer.backend == rotation.TWIN_GEOMETRY
