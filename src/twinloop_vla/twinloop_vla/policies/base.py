"""The policy contract, its registry and checkpoints (LeRobot's shape).

A policy is a torch module registered by name (`@register_policy('vga')`) with a config dataclass
(`config_class`, checked by twinloop_core's `load_config`: unknown keys and wrong types name the
key). It offers `forward(batch) -> {'loss': ..., <term>: ...}` for training and
`select_action_chunk(observation) -> (C, action_dim)` numpy for inference, where an observation
is {'images': uint8 (V, H, W, 3), 'state': (S,), 'instruction': str}.

A checkpoint is a directory: config.json (the config and the policy's name as 'type'),
model.safetensors (the state dict) and stats.json (normalisation statistics); `load_policy`
rebuilds exactly what `save` wrote. Weights from elsewhere (VGGT) are loaded only when a policy
is made fresh (`make_policy` calls `load_pretrained`), never over a checkpoint.
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

from safetensors.torch import load_file, save_file
from torch import nn

from twinloop_core.engine import ConfigError, load_config

POLICIES = {}  # name -> Policy subclass


class PolicyError(RuntimeError):
    """A policy could not produce actions (e.g. an external server's reply); the message says why."""


class PolicyConfig:
    """Mixin for policy config dataclasses: checked construction from and to plain dicts."""

    @classmethod
    def from_dict(cls, data):
        """The config from a mapping; unknown keys and wrong types raise ConfigError naming the key."""
        return load_config(cls, data, cls.__name__)

    def to_dict(self):
        """A JSON-able dict that `from_dict` turns back into an equal config."""
        return asdict(self)


class Policy(nn.Module):
    """Base of every policy. Subclasses set config_class and implement forward and select_action_chunk."""

    name: ClassVar[str] = ''  # set by register_policy
    config_class: ClassVar[type] = None
    external_prefixes: tuple = ()  # weights loaded from their own folder at construction, left out of checkpoints

    def __init__(self, config, stats=None):
        super().__init__()
        self.config = config
        self.stats = stats or {}

    def forward(self, batch):
        """Training losses of a batch: {'loss': total, <term>: value, ...} (scalar tensors)."""
        raise NotImplementedError

    def select_action_chunk(self, observation):
        """The next chunk of actions for one observation: numpy (C, action_dim)."""
        raise NotImplementedError

    def load_pretrained(self):
        """Load pretrained weights the config points at (only for a fresh policy); none by default."""

    def save(self, directory):
        """Write config.json, model.safetensors and stats.json into directory (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / 'config.json').write_text(json.dumps({'type': self.name, **self.config.to_dict()}, indent=2))
        (directory / 'stats.json').write_text(json.dumps(self.stats, indent=2))
        weights = {k: v for k, v in self.state_dict().items() if not k.startswith(self.external_prefixes)}
        save_file({k: v.detach().contiguous() for k, v in weights.items()}, directory / 'model.safetensors')


def register_policy(name):
    """Class decorator: register a Policy subclass under `name`."""

    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, Policy)):
            raise TypeError(f'policy {name!r}: {cls!r} is not a Policy subclass')
        if not issubclass(cls.config_class or object, PolicyConfig):
            raise TypeError(f'policy {name!r}: config_class must be a PolicyConfig dataclass')
        if name in POLICIES and POLICIES[name] is not cls:
            raise ValueError(f'policy {name!r} is registered twice ({POLICIES[name].__module__}, {cls.__module__})')
        cls.name = name
        POLICIES[name] = cls
        return cls

    return add


def policy_class(name):
    """The registered Policy subclass of that name; an unknown name raises KeyError listing the known ones."""
    if name not in POLICIES:
        raise KeyError(f'unknown policy {name!r}; registered policies: {sorted(POLICIES)}')
    return POLICIES[name]


def make_policy(name, config=None, **kwargs):
    """A fresh policy: config is a dict or a config instance (checked either way), kwargs go to its constructor."""
    cls = policy_class(name)
    if config is None:
        config = {}
    elif isinstance(config, cls.config_class):
        config = config.to_dict()
    elif not isinstance(config, dict):
        raise ConfigError(f'policy {name!r} takes a {cls.config_class.__name__} or a dict, got {type(config).__name__}')
    policy = cls(cls.config_class.from_dict(config), **kwargs)
    policy.load_pretrained()
    return policy


def load_policy(directory, **kwargs):
    """The policy saved in directory by Policy.save, in eval mode; kwargs go to its constructor."""
    directory = Path(directory)
    missing = [f for f in ('config.json', 'model.safetensors', 'stats.json') if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f'{directory} is not a policy checkpoint: missing {missing}')
    data = json.loads((directory / 'config.json').read_text())
    cls = policy_class(data.pop('type', None))
    stats = json.loads((directory / 'stats.json').read_text())
    policy = cls(cls.config_class.from_dict(data), stats=stats, **kwargs)
    missing, unexpected = policy.load_state_dict(load_file(directory / 'model.safetensors'), strict=False)
    missing = [k for k in missing if not k.startswith(policy.external_prefixes)]
    if missing or unexpected:
        raise ValueError(f'{directory}: weights missing {missing[:5]}, unexpected {unexpected[:5]}')
    return policy.eval()
