"""Policies for the vla_policy tests, registered when the node imports this module (its
`policy_modules` parameter). None is learned; each is labelled by what it is."""

from dataclasses import dataclass

import numpy as np

from twinloop_vla.policies import Policy, PolicyConfig, register_policy

DT = 0.05  # [s] the node's control_period in the tests


@dataclass
class ScriptConfig(PolicyConfig):
    """Chunk length of a scripted policy."""

    chunk_size: int = 8


class _Scripted(Policy):
    """Base: no weights, chunks computed from the observed state (policy_state: joints, gripper width, velocities)."""

    config_class = ScriptConfig

    def motion(self, q, k):
        """(C, 7) arm targets at the observed joints q; k = 1..C."""
        raise NotImplementedError

    def select_action_chunk(self, observation):
        """Arm targets from the script, the observed gripper width kept."""
        state = np.asarray(observation['state'], float)
        k = np.arange(1, self.config.chunk_size + 1)
        return np.column_stack([self.motion(state[:7], k), np.full(len(k), state[7])])


@register_policy('test_joint_sweep')
class JointSweep(_Scripted):
    """Scripted joint-space motion (not learned): joint 1 turns at 0.3 rad/s from the observed state."""

    def __init__(self, config, stats=None):
        super().__init__(ScriptConfig(chunk_size=16), stats)

    def motion(self, q, k):
        """Joint 1 onwards at 0.3 rad/s."""
        targets = np.tile(q, (len(k), 1))
        targets[:, 0] += 0.3 * DT * k
        return targets


@register_policy('test_nan')
class NanPolicy(_Scripted):
    """Deliberately bad (test only): NaN targets."""

    def motion(self, q, k):
        """NaN from the third action on."""
        targets = np.tile(q, (len(k), 1))
        targets[2:, 3] = np.nan
        return targets


@register_policy('test_jump')
class JumpPolicy(_Scripted):
    """Deliberately bad (test only): joint 4 jumps by 1 rad between two actions."""

    def motion(self, q, k):
        """Still, then a 1 rad step of joint 4."""
        targets = np.tile(q, (len(k), 1))
        targets[4:, 3] += 1.0
        return targets


@register_policy('test_out_of_workspace')
class OutOfWorkspace(_Scripted):
    """Deliberately bad (test only): a smooth 1 s dive of joint 2 (+1.1 rad, within the velocity and
    acceleration limits) that takes the hand below the table."""

    def __init__(self, config, stats=None):
        super().__init__(ScriptConfig(chunk_size=20), stats)

    def motion(self, q, k):
        """Joint 2 forward along a cosine ramp."""
        targets = np.tile(q, (len(k), 1))
        targets[:, 1] += 1.1 * (1 - np.cos(np.pi * k / len(k))) / 2
        return targets
