"""IKER's keypoint reward (shared/seeds/002, Sec. III-A), pure numpy.

    r_total = a_dist r_dist + a_dir r_dir + a_align r_align + a_bonus r_bonus + a_penalty r_penalty

The paper names the five terms and what each one encourages but gives neither formulas nor
weights. Each term here is the simplest shape that does what its sentence says, in metres and
radians, with a fixed sign so that the weights (config/iker.yaml, block reward) are all
non-negative: r_dist, r_align, r_penalty <= 0, r_dir in [-1, 1], r_bonus in {0, 1}. Success is the
paper's evaluation criterion (Sec. IV-A): the average keypoint distance to target within 5 cm.
"""

import math
from dataclasses import dataclass, field, fields

import numpy as np

from twinloop_core.engine import ConfigError


def _check_non_negative(config):
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, (int, float)) and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f'{type(config).__name__}.{f.name} must be finite and >= 0, got {value!r}')


@dataclass(frozen=True)
class RewardWeights:
    """The alphas of r_total (the paper gives no values; these are starting points)."""

    dist: float = 1.0
    dir: float = 0.5
    align: float = 5.0
    bonus: float = 10.0
    penalty: float = 1.0

    def __post_init__(self):
        """Every weight finite and >= 0 (the terms carry the signs)."""
        _check_non_negative(self)


@dataclass(frozen=True)
class RewardConfig:
    """The weights and the thresholds the terms use."""

    weights: RewardWeights = field(default_factory=RewardWeights)
    success_threshold: float = 0.05  # [m] mean keypoint distance to target counted as success (paper: 5 cm)
    success_steps: int = 5  # consecutive timesteps within the threshold before the bonus is paid
    min_motion: float = 1e-4  # [m] a keypoint moving less than this in a step has no direction
    max_translation: float = 0.05  # [m] end-effector translation per step above which motion is penalised
    max_rotation: float = 0.2  # [rad] end-effector rotation per step above which motion is penalised
    max_force: float = 50.0  # [N] contact force above which force is penalised

    def __post_init__(self):
        """Thresholds finite and >= 0, limits positive."""
        _check_non_negative(self)
        for name in ('success_threshold', 'max_translation', 'max_rotation', 'max_force'):
            if getattr(self, name) <= 0:
                raise ConfigError(f'RewardConfig.{name} must be > 0, got {getattr(self, name)!r}')


@dataclass
class RewardStep:
    """One timestep's state as the reward sees it (world frame, metres)."""

    ee_position: np.ndarray  # (3,) end effector p_e
    object_position: np.ndarray  # (3,) the object being manipulated p_o
    previous_keypoints: np.ndarray  # (n, 3) its keypoints K_o before this step
    keypoints: np.ndarray  # (n, 3) its keypoints K_o after this step
    targets: np.ndarray  # (n, 3) their targets K_t (from the VLM's code)
    action: np.ndarray  # (6,) (delta p_e, delta r_e) of this step [m, rad]
    steps_within: int = 0  # consecutive timesteps, this one included, within the success threshold
    dropped: bool = False  # the object was held (grasp mode) and fell out of the gripper this step
    contact_force: float = 0.0  # [N] largest contact force on the gripper this step


def mean_keypoint_distance(keypoints, targets):
    """Average distance [m] between the keypoints and their targets."""
    return float(np.mean(np.linalg.norm(np.asarray(keypoints) - np.asarray(targets), axis=1)))


def distance_reward(ee_position, object_position):
    """r_dist: 'Encourages the robot to approach the object of interest by penalizing large distances
    between them.' Minus the gripper-to-object distance [m]: <= 0, 0 at the object."""
    return -float(np.linalg.norm(np.asarray(ee_position) - np.asarray(object_position)))


def direction_reward(previous_keypoints, keypoints, targets, min_motion=1e-4):
    """r_dir: 'Guides the robot to move the object in the direction of the target location.'

    The mean over keypoints of the cosine between each keypoint's motion this step and the
    direction from where it was to its target: 1 straight towards, -1 straight away, 0 when it did
    not move (less than min_motion) or already sat on its target.
    """
    previous = np.asarray(previous_keypoints, dtype=float)
    motion = np.asarray(keypoints, dtype=float) - previous
    wanted = np.asarray(targets, dtype=float) - previous
    moved = np.linalg.norm(motion, axis=1)
    remaining = np.linalg.norm(wanted, axis=1)
    valid = (moved >= min_motion) & (remaining > 0)
    cosines = np.zeros(len(previous))
    cosines[valid] = np.sum(motion[valid] * wanted[valid], axis=1) / (moved[valid] * remaining[valid])
    return float(np.mean(np.clip(cosines, -1.0, 1.0)))


def alignment_reward(keypoints, targets):
    """r_align: 'Drives the robot to position the keypoints close to their target locations.' Minus the
    average keypoint-to-target distance [m]: <= 0, 0 when every keypoint is on its target."""
    return -mean_keypoint_distance(keypoints, targets)


def count_within(previous_count, mean_distance, threshold=0.05):
    """The consecutive-timestep counter the bonus reads: previous_count + 1 while the mean keypoint
    distance is within the threshold, 0 as soon as it is not."""
    return previous_count + 1 if mean_distance <= threshold else 0


def success_bonus(steps_within, success_steps):
    """r_bonus: 'an additional reward when the average distance between the keypoints and their target
    positions remains within a specified threshold for a certain number of timesteps'. 1 once
    steps_within (count_within) reaches success_steps, else 0."""
    return 1.0 if steps_within >= success_steps else 0.0


def is_success(keypoints, targets, threshold=0.05):
    """The paper's success criterion (Sec. IV-A): 'the average keypoint distance to target is within 5 cm'."""
    return mean_keypoint_distance(keypoints, targets) <= threshold


def _excess(value, limit):
    """How far value is beyond limit, as a fraction of limit (0 within it)."""
    return max(0.0, value / limit - 1.0)


def penalty_reward(action, dropped, contact_force, max_translation=0.05, max_rotation=0.2, max_force=50.0):
    """r_penalty: 'Applies penalties for undesirable actions such as excessive movements, dropping the
    object, or applying excessive force.' <= 0: minus the sum of the translation and rotation of
    the action beyond their per-step limits (as fractions of them), 1 for a drop, and the contact
    force beyond max_force (as a fraction of it)."""
    action = np.asarray(action, dtype=float)
    moving = _excess(float(np.linalg.norm(action[:3])), max_translation)
    turning = _excess(float(np.linalg.norm(action[3:6])), max_rotation)
    return -(moving + turning + float(dropped) + _excess(float(contact_force), max_force))


def total_reward(step, config=RewardConfig()):
    """r_total and its terms: {'dist', 'dir', 'align', 'bonus', 'penalty', 'total'} (unweighted terms)."""
    terms = {
        'dist': distance_reward(step.ee_position, step.object_position),
        'dir': direction_reward(step.previous_keypoints, step.keypoints, step.targets, config.min_motion),
        'align': alignment_reward(step.keypoints, step.targets),
        'bonus': success_bonus(step.steps_within, config.success_steps),
        'penalty': penalty_reward(
            step.action,
            step.dropped,
            step.contact_force,
            config.max_translation,
            config.max_rotation,
            config.max_force,
        ),
    }
    terms['total'] = sum(getattr(config.weights, name) * value for name, value in terms.items())
    return terms
