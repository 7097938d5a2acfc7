"""urdf/panda.urdf and the MuJoCo model agree: joint names, limits, and forward kinematics of
every link (and the wrist camera) at random configurations, checked with pinocchio."""

import os

import mujoco
import numpy as np
import pinocchio as pin
import pytest

from twinloop_twin import cameras, robot_description, scene, world

ROOT = os.environ['TWINLOOP_ROOT']
URDF = os.path.join(ROOT, 'urdf', 'panda.urdf')
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')


@pytest.fixture(scope='module')
def models():
    sim = world.SimWorld(scene.SceneConfig.from_yaml(SCENE))
    robot = pin.buildModelFromUrdf(URDF)
    yield sim, robot
    sim.close()


def test_committed_urdf_is_the_generated_one():
    generated, meshes = robot_description.build_urdf()
    with open(URDF) as f:
        assert f.read() == generated, 'regenerate: python -m twinloop_twin.robot_description urdf/'
    for name in meshes:
        assert os.path.isfile(os.path.join(ROOT, 'urdf', 'meshes', name))


def test_joint_names_and_limits(models):
    sim, robot = models
    names = [robot.names[i] for i in range(1, robot.njoints)]
    assert names == list(scene.ARM_JOINTS) + list(scene.FINGER_JOINTS)
    for name in names:
        j = robot.getJointId(name)
        q = robot.joints[j].idx_q
        np.testing.assert_allclose(
            [robot.lowerPositionLimit[q], robot.upperPositionLimit[q]], sim.model.joint(name).range, atol=1e-6
        )
    assert robot.velocityLimit[0] == pytest.approx(2.175) and robot.effortLimit[6] == pytest.approx(12.0)


def test_forward_kinematics_match(models):
    sim, robot = models
    data = robot.createData()
    rng = np.random.default_rng(7)
    links = [f'panda_link{i}' for i in range(8)] + [
        'panda_right_hand',
        'panda_eef',
        'panda_leftfinger',
        'panda_rightfinger',
    ]
    mj = mujoco.MjData(sim.model)
    worst = 0.0
    for _ in range(50):
        q_arm = rng.uniform(sim.arm_limits[:, 0], sim.arm_limits[:, 1])
        fingers = rng.uniform(0, 0.04)
        mj.qpos[sim.arm_qpos] = q_arm
        mj.qpos[sim.finger_qpos] = (fingers, -fingers)
        mujoco.mj_kinematics(sim.model, mj)
        mujoco.mj_camlight(sim.model, mj)
        pin.framesForwardKinematics(robot, data, np.concatenate([q_arm, [fingers, -fingers]]))
        for link in links:
            placement = data.oMf[robot.getFrameId(link)]
            worst = max(worst, np.linalg.norm(placement.translation - mj.body(link).xpos))
            np.testing.assert_allclose(placement.rotation, mj.body(link).xmat.reshape(3, 3), atol=1e-5)
        camera = data.oMf[robot.getFrameId(robot_description.WRIST_OPTICAL_FRAME)]
        position, rotation = cameras.optical_pose(mj, 'wrist')
        worst = max(worst, np.linalg.norm(camera.translation - position))
        np.testing.assert_allclose(camera.rotation, rotation, atol=1e-5)
    assert worst < 0.001, f'worst link position difference {worst * 1000:.3f} mm'
