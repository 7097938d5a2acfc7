"""LIBERO tasks for the planners, in process: the twin built from a task's own scene agrees with
LIBERO's simulator, grounding picks the object LIBERO's BDDL goal names, AntiGrounding steps move
LIBERO's arm and an episode ends at LIBERO's step limit, and the scripted expert's demonstrations
load back from the LeRobot format."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from twinloop_antigrounding.config import MpcConfig
from twinloop_antigrounding.mpc import AntiGroundingMpc
from twinloop_data import lerobot_format
from twinloop_execution.kinematics import Arm
from twinloop_language.parsers import make_parser
from twinloop_language.scene import Scene
from twinloop_data.libero_expert import LiberoExpert, features, goal_of
from twinloop_data.world_sim_expert import NoisyTargets
from twinloop_planning.ports.libero import EpisodeEnded, LiberoPorts
from twinloop_scoring import agents, vqa
from twinloop_twin.libero_twin import LiberoTwin
from twinloop_twin.libero_world import TRACKED_SPEED, LiberoWorld
from twinloop_twin.twin import Candidate

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))


@pytest.fixture(scope='module')
def spatial():
    world = LiberoWorld('libero_spatial', 0)
    twin = LiberoTwin(world.sim.model.get_xml(), world.base_position, [o[0] for o in world.objects()])
    yield world, twin
    twin.close()
    world.close()


def _ports(world, twin, max_steps):
    return LiberoPorts(
        world,
        twin,
        vqa.PromptConfig.from_yaml(ROOT / 'config' / 'vqa_prompts.yaml'),
        agents.load(ROOT / 'config' / 'vlm_agents.yaml', ['twin_critic']),
        ROOT / 'urdf' / 'panda.urdf',
        ROOT / 'config' / 'panda_joint_limits.yaml',
        max_steps=max_steps,
        size=96,
    )


def test_twin_agrees_with_libero_and_grounding_finds_the_goal_object(spatial):
    world, twin = spatial
    world.reset(3)
    ports = _ports(world, twin, 220)
    ports.sync()
    for name, _, position, _ in world.objects():
        assert np.allclose(twin.data.body(name).xpos, position, atol=1e-6)
    grip = world.sim.data.site_xpos[world.sim.model.site_name2id('gripper0_grip_site')]
    assert np.allclose(twin.data.site('panda_grip_site').xpos, world.to_base(grip, np.eye(3))[0], atol=1e-4)
    still = twin.rollout(Candidate([0.5], [list(world.arm_positions())], [], 0.3))
    assert still.moved() == [] and still.collisions == []  # settled objects stay where LIBERO has them
    objects = ports.state().objects
    bowl, plate = objects['akita_black_bowl_1'], objects['plate_1']
    assert abs(bowl[0][2] - plate[0][2]) < 0.02  # both bottoms on the table (bottom-centre convention)
    spec = _parser().parse(world.instruction, Scene(ports.labels(), objects))
    assert [(s.action, s.object_id, s.destination_id) for s in spec.subtasks] == [('place', *goal_of(world))]


def _parser():
    return make_parser(f'{ROOT}/config/language.yaml')


def test_anti_grounding_moves_libero_arm_until_the_step_limit(spatial):
    world, twin = spatial
    world.reset(0)
    ports = _ports(world, twin, max_steps=80)  # the first step alone may take 40 (the move to the grasp)
    config = MpcConfig(num_candidates=4)
    mpc = AntiGroundingMpc(ports.ports(), Arm(twin.model), config)
    before = world.arm_positions()
    spec = _parser().parse(world.instruction, Scene(ports.labels(), ports.state().objects))
    with pytest.raises(EpisodeEnded, match='step limit 80') as ended:
        mpc.run(world.instruction, spec.subtasks)
    assert not ended.value.success and world.steps == 80
    assert np.abs(world.arm_positions() - before).max() > 0.02
    assert mpc.records and mpc.records[0].backend.startswith('twin_critic')


def test_writer_round_trip_and_refuses_to_overwrite(tmp_path):
    feats = {
        'observation.images.cam': {'dtype': 'image', 'shape': [8, 8, 3], 'names': ['height', 'width', 'channel']},
        'observation.depth.cam': {'dtype': 'image', 'shape': [8, 8, 1], 'names': ['height', 'width', 'channel']},
        'observation.state': {'dtype': 'float32', 'shape': [2], 'names': ['a', 'b']},
    }
    writer = lerobot_format.LeRobotWriter(tmp_path / 'ds', fps=20, features=feats)
    rng = np.random.default_rng(0)
    frames = [
        {
            'observation.images.cam': rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
            'observation.depth.cam': rng.integers(0, 4000, (8, 8), dtype=np.uint16),
            'observation.state': rng.normal(size=2),
        }
        for _ in range(5)
    ]
    for frame in frames[:3]:
        writer.add_frame(frame)
    writer.save_episode('first task')
    writer.add_frame(frames[3])
    writer.discard_episode()
    for frame in frames[3:]:
        writer.add_frame(frame)
    writer.save_episode('second task')
    with pytest.raises(ValueError, match='lacks'):
        writer.add_frame({'observation.state': [0, 0]})
    info, tasks, episodes, data = lerobot_format.load(tmp_path / 'ds')
    assert info['total_frames'] == 5 and [e['length'] for e in episodes] == [3, 2]
    assert tasks == {0: 'first task', 1: 'second task'} and list(data['task_index']) == [0, 0, 0, 1, 1]
    assert list(data['index']) == list(range(5)) and list(data['frame_index']) == [0, 1, 2, 0, 1]
    assert np.array_equal(np.asarray(data[4]['observation.images.cam']), frames[4]['observation.images.cam'])
    assert np.array_equal(np.asarray(data[1]['observation.depth.cam']), frames[1]['observation.depth.cam'])
    assert np.allclose(data[2]['observation.state'], frames[2]['observation.state'], atol=1e-6)
    with pytest.raises(FileExistsError):
        lerobot_format.LeRobotWriter(tmp_path / 'ds', fps=20, features=feats)

    # merged after a second dataset: tasks united by text, episodes and frames renumbered, stats kept
    other = lerobot_format.LeRobotWriter(tmp_path / 'other', fps=20, features=feats)
    for frame in frames[:4]:
        other.add_frame(frame)
    other.save_episode('second task')
    renumbered = lerobot_format.merge([tmp_path / 'other', tmp_path / 'ds'], tmp_path / 'merged')
    assert renumbered == {(str(tmp_path / 'other'), 0): 0, (str(tmp_path / 'ds'), 0): 1, (str(tmp_path / 'ds'), 1): 2}
    info, tasks, episodes, data = lerobot_format.load(tmp_path / 'merged')
    assert tasks == {0: 'second task', 1: 'first task'} and [e['length'] for e in episodes] == [4, 3, 2]
    assert list(data['task_index']) == [0] * 4 + [1] * 3 + [0] * 2 and list(data['index']) == list(range(9))
    assert list(data['episode_index']) == [0] * 4 + [1] * 3 + [2] * 2
    assert np.array_equal(np.asarray(data[8]['observation.images.cam']), frames[4]['observation.images.cam'])
    stats = [json.loads(line) for line in (tmp_path / 'merged' / 'meta' / 'episodes_stats.jsonl').open()]
    assert [s['episode_index'] for s in stats] == [0, 1, 2] and stats[2]['stats']['observation.state']['count'] == [2]
    narrow = lerobot_format.LeRobotWriter(
        tmp_path / 'narrow', fps=20, features={'observation.state': feats['observation.state']}
    )
    narrow.add_frame({'observation.state': [0.0, 1.0]})
    narrow.save_episode('first task')
    with pytest.raises(ValueError, match='only alike datasets merge'):
        lerobot_format.merge([tmp_path / 'ds', tmp_path / 'narrow'], tmp_path / 'mixed')


def test_expert_demonstration_loads_back(spatial, tmp_path):
    world, twin = spatial
    expert = LiberoExpert(
        world, twin, ROOT / 'urdf' / 'panda.urdf', ROOT / 'config' / 'panda_joint_limits.yaml', max_speed=TRACKED_SPEED
    )
    writer = lerobot_format.LeRobotWriter(tmp_path / 'demo', fps=20, features=features(128))
    for init_state in range(3):  # the expert is not perfect; one success among three is expected
        world.reset(init_state)
        if expert.run(writer.add_frame):
            writer.save_episode(world.instruction)
            break
        writer.discard_episode()
    else:
        pytest.fail('the expert failed three init states in a row')
    assert world.success()
    info, tasks, episodes, data = lerobot_format.load(tmp_path / 'demo')
    assert tasks == {0: world.instruction} and len(data) == episodes[0]['length'] == world.steps
    first = data[0]
    assert np.asarray(first['observation.images.agentview']).shape == (128, 128, 3)
    depth_mm = np.asarray(first['observation.depth.agentview'])
    assert 300 < np.median(depth_mm) < 3000  # millimetres to the table
    gaze = [np.asarray(data[i]['observation.gaze.agentview']).squeeze() > 0 for i in (0, len(data) - 1)]
    assert gaze[0].sum() >= 10 and gaze[1].sum() >= 10, [g.sum() for g in gaze]  # the object, later the destination
    assert (gaze[0] & gaze[1]).sum() < 0.5 * gaze[0].sum()  # the gaze moved on to another object
    actions = np.array(data['action'])
    assert set(np.unique(actions[:, 7])) == {-1.0, 1.0}  # the gripper opened and closed
    states = np.array(data['observation.state'])
    assert np.abs(states[-1, :7] - states[0, :7]).max() > 0.1  # the arm moved
    # joint targets the arm follows: no faster than the controller tracks (uncapped they lead by 0.2-0.5 rad)
    assert np.abs(actions[1:, :7] - states[1:, :7]).max() < 0.1

    # DART: the same init state with noise on the executed targets: the labels of the approach are the same,
    # the arm went elsewhere, and came onto the object where the clean run did
    world.reset(init_state)
    noisy = []
    expert.run(noisy.append, NoisyTargets(0.03, np.random.default_rng(0)))
    approach = 20  # control steps of the first segment, before any contact
    noisy_actions = np.array([f['action'] for f in noisy[:approach]])
    noisy_states = np.array([f['observation.state'] for f in noisy[:approach]])
    np.testing.assert_allclose(noisy_actions, actions[:approach], atol=1e-6)
    assert np.abs(noisy_states[:, :7] - states[:approach, :7]).mean() > 0.005
    grasp = int(np.argmax(actions[:, 7] > 0))  # the first close command: the noise died out on the way down
    assert np.abs(noisy[grasp]['observation.state'][:7] - states[grasp, :7]).max() < 0.005


def test_expert_opens_libero_goal_drawer_and_the_world_reports_its_slide():
    world = LiberoWorld('libero_goal', 0, image_size=64)  # "open the middle drawer of the cabinet"
    twin = LiberoTwin(world.sim.model.get_xml(), world.base_position, [o[0] for o in world.objects()])
    try:
        world.reset(0)
        drawer = world.drawer('wooden_cabinet_1_middle_region')
        assert drawer.joint == 'wooden_cabinet_1_middle_level' and world.scene_joints()[drawer.joint] == 0.0
        assert abs(np.linalg.norm(drawer.opening) - 1) < 1e-9 and abs(drawer.opening[2]) < 1e-9  # horizontal
        with pytest.raises(ValueError, match='no single slide joint'):
            world.drawer('flat_stove_1_cook_region')
        expert = LiberoExpert(world, twin, ROOT / 'urdf' / 'panda.urdf', ROOT / 'config' / 'panda_joint_limits.yaml')
        frames = []
        assert expert.run(frames.append) and world.success()
        assert world.scene_joints()[drawer.joint] < -0.14  # pulled out past LIBERO's open range
        gaze = np.asarray(frames[0]['observation.gaze.agentview']).squeeze()
        assert gaze.sum() >= 10  # the gaze is on the cabinet
        assert {f['action'][7] for f in frames} == {-1.0, 1.0}  # gripped the handle
    finally:
        twin.close()
        world.close()
