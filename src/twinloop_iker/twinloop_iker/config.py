"""The IKER engine's parameters (config/iker.yaml), validated when loaded: unknown keys, wrong types
and out-of-range values fail naming the key (twinloop_core.engine.load_config).

Each block's dataclass lives beside the code that reads it; PPO's lives here so that loading the
configuration does not import torch and stable-baselines3 (train.py does).
"""

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from twinloop_core.engine import ConfigError, load_config
from twinloop_iker.cem import CemConfig
from twinloop_iker.deploy import DeployConfig
from twinloop_iker.env import EnvConfig, RandomizationConfig
from twinloop_iker.reward import RewardConfig
from twinloop_iker.sandbox import SandboxLimits


@dataclass(frozen=True)
class PpoConfig:
    """PPO's hyperparameters and the training run's checkpoints (twinloop_iker.train)."""

    net_arch: tuple = (256, 128, 64)  # hidden layers of the actor and of the critic (ELU; Sec. III-C)
    n_steps: int = 1024  # steps per env between updates
    batch_size: int = 256
    n_epochs: int = 5
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    checkpoint_minutes: float = 5.0  # wall time between checkpoints
    keep_checkpoints: int = 2  # older ones are deleted

    def __post_init__(self):
        """Positive sizes, rates and periods; discounts in (0, 1]."""
        sizes = (*self.net_arch, self.n_steps, self.batch_size, self.n_epochs, self.keep_checkpoints)
        if not self.net_arch or min(sizes) < 1:
            raise ConfigError('PpoConfig: net_arch, n_steps, batch_size, n_epochs and keep_checkpoints must be >= 1')
        for name in ('learning_rate', 'clip_range', 'checkpoint_minutes'):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f'PpoConfig.{name} must be finite and > 0, got {getattr(self, name)!r}')
        if not (0 < self.gamma <= 1 and 0 < self.gae_lambda <= 1 and self.ent_coef >= 0):
            raise ConfigError('PpoConfig: gamma and gae_lambda in (0, 1], ent_coef >= 0')


@dataclass
class IkerConfig:
    """Every IKER parameter: the keypoint reward, the sandbox limits and the policies in the twin
    (the training env, its domain randomisation, the CEM planner and PPO) and their deployment on
    the arm (the engine's code writer, iterations and streamed chunks)."""

    reward: RewardConfig = field(default_factory=RewardConfig)
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    env: EnvConfig = field(default_factory=EnvConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    cem: CemConfig = field(default_factory=CemConfig)
    ppo: PpoConfig = field(default_factory=PpoConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)


def load_iker_config(path):
    """IkerConfig from a YAML file (config/iker.yaml); ConfigError naming the key when it does not fit."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return load_config(IkerConfig, data, str(path))


def default_config():
    """IkerConfig of config/iker.yaml in this checkout ($TWINLOOP_ROOT, set by twinloop_env.sh), or the
    built-in defaults when there is none."""
    path = Path(os.environ.get('TWINLOOP_ROOT', '.')) / 'config' / 'iker.yaml'
    return load_iker_config(path) if path.is_file() else IkerConfig()
