"""KeypointEnv (Sec. III-C, Appendix A): gymnasium's env checker, the reward is reward.total_reward on
the env's own state rebuilt independently (keypoints from keypoints.propose / world_positions),
success when the object sits on its targets, determinism by seed, domain randomisation within its
ranges, reset options, and config/iker.yaml agreeing with the dataclass defaults."""

import os
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from twinloop_core.engine import ConfigError
from twinloop_iker.cem import CemConfig
from twinloop_iker.config import PpoConfig, load_iker_config
from twinloop_iker.env import (
    ENV_ID,
    OBS_SIZE,
    PITCH_RANGE,
    SKILLS,
    EnvConfig,
    KeypointEnv,
    RandomizationConfig,
    catalog_entry,
    hand_quat,
    yaw_pitch,
)
from twinloop_iker.reward import RewardConfig, RewardStep, total_reward
from twinloop_perception.keypoints import propose, world_positions
from twinloop_twin import objects

CONFIG = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3])) / 'config' / 'iker.yaml'
DR = RandomizationConfig()


def object_geoms(env):
    return np.nonzero(env.model.geom_bodyid == env.model.body('object').id)[0]


@pytest.mark.filterwarnings('ignore:.*Box observation space m')  # unbounded positions, by design
@pytest.mark.parametrize('skill', SKILLS)
@pytest.mark.parametrize('randomization', [None, DR])
def test_gymnasium_env_checker_passes(skill, randomization):
    check_env(KeypointEnv(skill, randomization=randomization), skip_render_check=True)


def test_registered_id_makes_the_env():
    env = gym.make(ENV_ID, skill='place')
    observation, _ = env.reset(seed=3)
    assert observation.shape == (OBS_SIZE,) and observation.dtype == np.float32
    assert env.action_space.shape == (4,)  # translation and yaw
    assert gym.make(ENV_ID).action_space.shape == (3,)  # push: translation


@pytest.mark.parametrize('skill', SKILLS)
def test_reward_is_total_reward_of_the_state(skill):
    env = KeypointEnv(skill)
    options = {'kind': 'block', 'gripper_position': (0.45, 0.0, 0.3)}  # push: the hand far above the object
    _, _ = env.reset(seed=5, options=options)
    mesh = objects.shape_mesh(objects.make_shape('block'))
    keypoints = propose([('object', mesh, False)])
    for k in keypoints:
        k.local = k.local * env.scale
    action = np.array([0.5, -0.3, 0.2, 0.4, -0.6][: env.action_space.shape[0]], dtype=np.float32)
    for _ in range(3):
        previous = world_positions(keypoints, {'object': env.object_pose()})
        hand_before, _ = env.hand_pose()
        _, reward, _, _, info = env.step(action)
        hand_after, _ = env.hand_pose()
        position, quat = env.object_pose()
        now = world_positions(keypoints, {'object': (position, quat)})
        rotation = np.empty(9)
        mujoco.mju_quat2Mat(rotation, quat)
        centre = position + rotation.reshape(3, 3) @ (env.scale * catalog_entry('block')[2])
        commanded = np.clip(hand_before + 0.04 * action[:3], EnvConfig().workspace_low, EnvConfig().workspace_high)
        turn = 0.2 * action[3] if skill != 'push' else 0.0
        pitch = 0.2 * action[4] if skill == 'reorient' else 0.0
        state = RewardStep(
            ee_position=hand_after,
            object_position=centre,
            previous_keypoints=previous,
            keypoints=now,
            targets=env.targets,
            action=np.r_[commanded - hand_before, 0.0, pitch, turn],
            steps_within=info['steps_within'],
            dropped=False,
            contact_force=0.0,  # nothing touches the hand (push) or the held object (place) up here
        )
        expected = total_reward(state, RewardConfig())
        assert reward == pytest.approx(expected['total'], abs=1e-9)
        assert info['terms'] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize('skill', SKILLS)
def test_object_on_its_targets_is_a_success(skill):
    env = KeypointEnv(skill)
    target = (0.55, 0.1, 0.0 if skill == 'push' else 0.08, 0.4, -1.0)[: 5 if skill == 'reorient' else 4]
    options = {'kind': 'book', 'target_pose': target, 'gripper_position': (0.4, -0.2, 0.3)}
    _, info = env.reset(seed=1, options=options)
    assert not info['is_success']
    position, quat = env.target_object_pose(target)
    env.set_object_pose(position + [0, 0, 0.0005], quat)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for step in range(1, RewardConfig().success_steps + 1):
        observation, reward, terminated, truncated, info = env.step(zero)
        assert info['is_success'] and info['distance'] < 0.01
        assert terminated == (step == RewardConfig().success_steps) and not truncated
    assert info['terms']['bonus'] == 1.0 and reward > 0
    assert np.allclose(observation[38:50], 0.0, atol=0.01)  # targets minus keypoints


def test_episode_is_truncated_at_max_steps():
    env = KeypointEnv('place', EnvConfig(max_steps=3))
    env.reset(seed=0)
    outcomes = [env.step(np.zeros(4, dtype=np.float32))[2:4] for _ in range(3)]
    assert outcomes[-1] == (False, True) and all(o == (False, False) for o in outcomes[:-1])


@pytest.mark.parametrize('skill', SKILLS)
def test_a_seed_fixes_the_episode(skill):
    def run(seed):
        env = KeypointEnv(skill, randomization=DR)
        observations = [env.reset(seed=seed)[0]]
        rng = np.random.default_rng(0)
        rewards = []
        for _ in range(10):
            observation, reward, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            observations.append(observation)
            rewards.append(reward)
        return np.array(observations), rewards, env.model.geom_friction[object_geoms(env), 0].copy()

    first, again, other = run(7), run(7), run(8)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1] and np.array_equal(first[2], again[2])
    assert not np.array_equal(first[0][0], other[0][0])


def test_domain_randomisation_stays_in_its_ranges_and_varies():
    frictions, masses = [], []
    for seed in range(8):
        env = KeypointEnv('push', randomization=DR)
        env.reset(seed=seed, options={'kind': 'block'})
        m, body, geoms = env.model, env.model.body('object').id, object_geoms(env)
        friction, mass = m.geom_friction[geoms, 0], m.body_mass[body]
        assert np.all(friction == friction[0]) and DR.friction[0] <= friction[0] <= DR.friction[1]
        assert DR.mass[0] <= mass <= DR.mass[1]
        timeconst, dampratio = m.geom_solref[geoms[0]]
        assert DR.solref_timeconst[0] <= timeconst <= DR.solref_timeconst[1]
        assert DR.solref_dampratio[0] <= dampratio <= DR.solref_dampratio[1]
        extents = np.asarray(objects.make_shape('block').extents) * env.scale * DR.geometry_scale[1]
        nominal_com = env.scale * catalog_entry('block')[2]
        assert np.all(np.abs(m.body_ipos[body] - nominal_com) <= DR.com * extents + 0.003)
        size = m.geom_size[geoms[0]] / (np.array(objects.make_shape('block').parts[0].size) * env.scale)
        assert DR.geometry_scale[0] - 1e-9 <= size[0] <= DR.geometry_scale[1] + 1e-9
        frictions.append(friction[0])
        masses.append(mass)
    assert len(set(frictions)) == 8 and len(set(masses)) == 8

    nominal = KeypointEnv('push')
    nominal.reset(seed=0, options={'kind': 'block'})
    assert np.all(nominal.model.geom_friction[object_geoms(nominal), 0] == EnvConfig().friction)
    assert nominal.model.body_mass[nominal.model.body('object').id] == pytest.approx(EnvConfig().mass)


def test_options_give_the_targets_and_unknown_ones_fail():
    env = KeypointEnv('push')
    targets = np.array([[0.5, 0.1, 0.02], [0.5, 0.0, 0.02], [0.55, 0.05, 0.02], [0.45, 0.05, 0.02]])
    observation, _ = env.reset(seed=0, options={'kind': 'cube', 'object_pose': (0.5, -0.1, 0.0), 'targets': targets})
    assert np.allclose(observation[26:38], targets.ravel(), atol=1e-6)
    assert np.allclose(env.object_pose()[0][:2], [0.5, -0.1], atol=0.005)
    with pytest.raises(ValueError, match='unknown reset options'):
        env.reset(seed=0, options={'colour': 'red'})
    with pytest.raises(ValueError, match='skill'):
        KeypointEnv('throw')


def test_config_file_matches_the_defaults_and_is_checked():
    config = load_iker_config(CONFIG)
    assert config.env == EnvConfig() and config.randomization == DR
    assert config.cem == CemConfig() and config.ppo == PpoConfig()
    with pytest.raises(ConfigError):
        replace(EnvConfig(), kinds=('bin',))
    with pytest.raises(ConfigError):
        RandomizationConfig(mass=(0.5, 0.1))
    with pytest.raises(ConfigError):
        CemConfig(elites=50)
    with pytest.raises(ConfigError):
        PpoConfig(gamma=1.5)


@pytest.mark.parametrize('randomization', [None, DR])
def test_a_push_starts_behind_the_object_or_above_it(randomization):
    env = KeypointEnv('push', randomization=randomization)
    for seed in range(20):
        env.reset(seed=seed)
        hand, _ = env.hand_pose()
        centre = env.observation()[-3:] + hand  # c_o - p_e is the observation's tail
        way, back = env.targets.mean(axis=0)[:2] - centre[:2], hand[:2] - centre[:2]
        assert way @ back < 0, f'seed {seed}: the hand is not on the far side from the targets'
        assert not env.data.ncon or all(
            env.model.geom_bodyid[g] != env.model.body('hand').id
            for c in env.data.contact[: env.data.ncon]
            for g in (c.geom1, c.geom2)
        ), f'seed {seed}: the hand starts touching something'
    above = KeypointEnv('push', EnvConfig(push_start='above'), randomization)
    above.reset(seed=0)
    assert above.hand_pose()[0][2] >= above.object_pose()[0][2] + 0.03
    with pytest.raises(ConfigError, match='push_start'):
        EnvConfig(push_start='sideways')


def test_hand_joint_angles_round_trip_through_the_quaternion():
    for yaw, pitch in [(0.3, 0.5), (-2.0, 1.5), (1.0, -1.2), (3.0, 0.0)]:
        assert np.allclose(yaw_pitch(hand_quat(yaw, pitch)), (yaw, pitch), atol=1e-9)


@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_a_reorient_target_stands_the_long_side_up_on_its_bottom(sign):
    """Book Reorient (shared/seeds/002): the drawn targets are the flat book turned a quarter turn about its
    narrower horizontal axis: its length vertical, its lowest point at the target's bottom height."""
    env = KeypointEnv('reorient')
    env.reset(seed=0, options={'kind': 'book', 'scale': 1.0})
    shape, _, centre = catalog_entry('book')
    target = (0.5, -0.1, 0.07, 0.3, sign)
    position, quat = env.target_object_pose(target)
    rotation = np.empty(9)
    mujoco.mju_quat2Mat(rotation, quat)
    half = np.asarray(shape.extents) / 2
    corners = centre + half * np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
    world = corners @ rotation.reshape(3, 3).T + position
    assert np.ptp(world[:, 2]) == pytest.approx(max(shape.extents[:2]))  # the 22 cm side upright
    assert world[:, 2].min() == pytest.approx(0.07) and np.allclose(world[:, :2].mean(axis=0), (0.5, -0.1))
    env.reset(seed=0, options={'kind': 'book', 'scale': 1.0, 'target_pose': target})
    assert np.allclose(env.targets, position + env.local_keypoints @ rotation.reshape(3, 3).T)


def test_pitching_the_hand_stands_the_held_book_up():
    """Reorient's fifth action turns the hand, and the book it holds, about the fingers' closing axis."""
    env = KeypointEnv('reorient')
    env.reset(seed=0, options={'kind': 'book', 'scale': 1.0, 'object_pose': (0.5, 0.0, 0.15, 0.0)})
    for _ in range(20):  # towards a quarter turn, 0.2 rad a step at most (deltas from the pitch reached)
        env.step(np.r_[0.0, 0.0, 0.0, 0.0, np.clip((np.pi / 2 - env.data.qpos[4]) / 0.2, -1, 1)])
    rotation = np.empty(9)
    mujoco.mju_quat2Mat(rotation, env.object_pose()[1])
    assert abs(rotation.reshape(3, 3)[2, 0]) > 0.995  # the book's long (x) axis now vertical
    assert env.action_space.shape == (5,)
    for _ in range(15):
        env.step(np.array([0.0, 0.0, 0.0, 0.0, 1.0], dtype=np.float32))
    assert env.data.ctrl[4] == PITCH_RANGE[1]  # the joint's range bounds the commanded pitch
