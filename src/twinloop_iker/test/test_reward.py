"""The keypoint reward of Sec. III-A: each term at known configurations, its sign and bounds, the 5 cm
success criterion, the weighted total, and config/iker.yaml loading with its checks."""

import os
from pathlib import Path

import numpy as np
import pytest

from twinloop_core.engine import ConfigError
from twinloop_iker import reward
from twinloop_iker.config import IkerConfig, load_iker_config
from twinloop_iker.reward import RewardConfig, RewardStep, RewardWeights

CONFIG = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3])) / 'config' / 'iker.yaml'
SQUARE = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.1, 0.1, 0.0], [0.0, 0.1, 0.0]])


def test_distance_reward_is_minus_the_gripper_object_distance():
    assert reward.distance_reward([0.5, 0.0, 0.3], [0.5, 0.0, 0.3]) == 0.0
    assert reward.distance_reward([0.5, 0.0, 0.3], [0.5, 0.3, 0.7]) == pytest.approx(-0.5)
    assert reward.distance_reward([0, 0, 1], [0, 0, 0]) < reward.distance_reward([0, 0, 0.5], [0, 0, 0]) <= 0


def test_direction_reward_is_the_cosine_of_motion_and_wanted_direction():
    targets = SQUARE + [0.2, 0.0, 0.0]
    assert reward.direction_reward(SQUARE, SQUARE + [0.01, 0, 0], targets) == pytest.approx(1.0)
    assert reward.direction_reward(SQUARE, SQUARE - [0.01, 0, 0], targets) == pytest.approx(-1.0)
    assert reward.direction_reward(SQUARE, SQUARE + [0, 0.01, 0], targets) == pytest.approx(0.0, abs=1e-12)
    diagonal = reward.direction_reward(SQUARE, SQUARE + [0.01, 0.01, 0], targets)
    assert diagonal == pytest.approx(np.cos(np.pi / 4))


def test_direction_reward_is_zero_without_motion_or_once_on_target():
    targets = SQUARE + [0.2, 0.0, 0.0]
    assert reward.direction_reward(SQUARE, SQUARE + [1e-5, 0, 0], targets, min_motion=1e-4) == 0.0
    assert reward.direction_reward(SQUARE, SQUARE + [0.01, 0, 0], SQUARE) == 0.0
    half = SQUARE.copy()
    half[:2] += [0.01, 0, 0]  # two of four keypoints move straight to their targets
    assert reward.direction_reward(SQUARE, half, targets) == pytest.approx(0.5)


def test_alignment_reward_is_minus_the_mean_keypoint_distance():
    assert reward.alignment_reward(SQUARE, SQUARE) == 0.0
    assert reward.alignment_reward(SQUARE, SQUARE + [0.0, 0.0, 0.03]) == pytest.approx(-0.03)
    shifted = SQUARE.copy()
    shifted[0] += [0.08, 0.0, 0.0]  # one keypoint 8 cm off: mean 2 cm
    assert reward.alignment_reward(SQUARE, shifted) == pytest.approx(-0.02)


def test_success_is_the_papers_five_centimetre_mean_distance():
    assert reward.is_success(SQUARE, SQUARE + [0.0, 0.049, 0.0])
    assert not reward.is_success(SQUARE, SQUARE + [0.0, 0.051, 0.0])
    assert RewardConfig().success_threshold == 0.05 == load_iker_config(CONFIG).reward.success_threshold


def test_success_bonus_needs_the_threshold_held_for_success_steps():
    count = 0
    bonuses = []
    for distance in (0.04, 0.03, 0.02, 0.06, 0.01, 0.01, 0.01):
        count = reward.count_within(count, distance, threshold=0.05)
        bonuses.append(reward.success_bonus(count, success_steps=3))
    assert bonuses == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_penalty_for_excess_motion_drops_and_force():
    calm = np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.05])
    assert reward.penalty_reward(calm, dropped=False, contact_force=10.0) == 0.0
    assert reward.penalty_reward(calm, dropped=True, contact_force=10.0) == -1.0
    assert reward.penalty_reward([0.1, 0, 0, 0, 0, 0], False, 0.0, max_translation=0.05) == pytest.approx(-1.0)
    assert reward.penalty_reward([0, 0, 0, 0, 0.4, 0], False, 0.0, max_rotation=0.2) == pytest.approx(-1.0)
    assert reward.penalty_reward(calm, False, 75.0, max_force=50.0) == pytest.approx(-0.5)
    assert reward.penalty_reward([0.1, 0, 0, 0, 0.4, 0], True, 100.0) == pytest.approx(-4.0)


def test_total_reward_is_the_weighted_sum_of_the_terms():
    weights = RewardWeights(dist=1.0, dir=2.0, align=3.0, bonus=4.0, penalty=5.0)
    config = RewardConfig(weights=weights, success_steps=2)
    targets = SQUARE + [0.02, 0.0, 0.0]
    step = RewardStep(
        ee_position=np.array([0.05, 0.05, 0.1]),
        object_position=np.array([0.05, 0.05, 0.0]),
        previous_keypoints=SQUARE,
        keypoints=SQUARE + [0.01, 0.0, 0.0],
        targets=targets,
        action=np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0]),
        steps_within=2,
    )
    terms = reward.total_reward(step, config)
    assert terms['dist'] == pytest.approx(-0.1)
    assert terms['dir'] == pytest.approx(1.0)
    assert terms['align'] == pytest.approx(-0.01)
    assert terms['bonus'] == 1.0
    assert terms['penalty'] == pytest.approx(-1.0)
    assert terms['total'] == pytest.approx(-0.1 + 2.0 - 0.03 + 4.0 - 5.0)


def test_config_file_loads_and_bad_values_name_the_key(tmp_path):
    config = load_iker_config(CONFIG)
    assert isinstance(config, IkerConfig) and config.reward.weights == RewardWeights()
    bad = tmp_path / 'iker.yaml'
    for text, message in (
        ('reward: {weights: {dist: 1.0, distance: 2.0}}', "unknown keys ['distance']"),
        ('reward: {weigths: {}}', "unknown keys ['weigths']"),
        ('rewards: {}', "unknown keys ['rewards']"),
        ('reward: {weights: {align: -1.0}}', 'RewardWeights.align must be finite and >= 0'),
        ('reward: {success_threshold: 0.0}', 'success_threshold must be > 0'),
        ('reward: {success_steps: 2.5}', 'success_steps must be int'),
        ('sandbox: {cpu_s: fast}', 'cpu_s must be float'),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message.replace('[', r'\[').replace(']', r'\]')):
            load_iker_config(bad)
