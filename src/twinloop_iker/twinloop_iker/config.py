"""The IKER engine's parameters (config/iker.yaml), validated when loaded: unknown keys, wrong types
and out-of-range values fail naming the key (twinloop_core.engine.load_config)."""

from dataclasses import dataclass, field

import yaml

from twinloop_core.engine import load_config
from twinloop_iker.reward import RewardConfig
from twinloop_iker.sandbox import SandboxLimits


@dataclass
class IkerConfig:
    """Every IKER parameter: the keypoint reward and the sandbox limits."""

    reward: RewardConfig = field(default_factory=RewardConfig)
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)


def load_iker_config(path):
    """IkerConfig from a YAML file (config/iker.yaml); ConfigError naming the key when it does not fit."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return load_config(IkerConfig, data, str(path))
