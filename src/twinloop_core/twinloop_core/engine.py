"""The DecisionEngine contract and its registry.

An engine is a class registered by name (`@register_engine('iker')`) with a config dataclass
(loaded from config/<name>.yaml and validated when the engine is built) and the ports it needs
(`needs`). The orchestrator builds each engine once, then per goal calls
`engine.run(task, ports, limits)` with only the declared ports. Engine packages register
themselves when imported; `load_engines` imports them by module name (the orchestrator's
`engines` parameter), so adding an engine touches no orchestrator file.
"""

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import yaml

from twinloop_core.ports import PORT_NAMES, Ports
from twinloop_core.task import TaskSpec

ENGINES = {}  # name -> DecisionEngine subclass
PROVIDERS = {  # engines that live in packages of their own, for a clear error while not loaded
    'iker': 'twinloop_iker (the IKER engine)',
    'vla': 'twinloop_vla (the policy server behind RunPolicy)',
}


class ConfigError(ValueError):
    """An engine configuration that does not match its dataclass."""


class UnknownEngine(LookupError):
    """No engine of that name is registered; the message says what is available or missing."""


@dataclass
class Limits:
    """Per-goal limits and options from the action goal (0 / '' : the engine's default)."""

    max_steps: int = 0
    deadline: float | None = None  # time.monotonic() after which the engine stops
    dry_run: bool = False
    num_candidates: int = 0  # engines that sample candidates
    scorer_backend: str = ''  # engines that score


@dataclass
class EngineResult:
    """What an engine did: success on its own judgement, why it stopped, its steps and records."""

    success: bool
    detail: str
    steps: int = 0
    backend: str = ''  # what produced the decisions (scorer, policy, code writer), honestly labelled


@dataclass
class NoConfig:
    """For engines without parameters."""


class DecisionEngine(ABC):
    """Base of every engine. Subclasses set label, config_class and needs, and implement run()."""

    name: ClassVar[str] = ''  # set by register_engine
    label: ClassVar[str] = ''  # what the engine is, honestly (shown in feedback and reports)
    config_class: ClassVar[type] = NoConfig
    needs: ClassVar[tuple] = ()  # port names from twinloop_core.ports.PORT_NAMES
    goal_fields: ClassVar[tuple] = ()  # optional goal fields it reads (num_candidates, scorer_backend)

    def __init__(self, config=None, config_dir=None):
        self.config = config if config is not None else self.config_class()
        self.config_dir = config_dir

    @abstractmethod
    def run(self, task: TaskSpec, ports: Ports, limits: Limits) -> EngineResult:
        """Carry out the task through the ports until done, a limit, cancel (raises Canceled) or failure."""

    def check(self, task: TaskSpec, limits: Limits) -> None:
        """Raise GoalEnded(REJECTED) for a task or limits this engine cannot take (before anything runs)."""


def register_engine(name):
    """Class decorator: register a DecisionEngine subclass under `name`."""

    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, DecisionEngine)):
            raise TypeError(f'engine {name!r}: {cls!r} is not a DecisionEngine subclass')
        if not dataclasses.is_dataclass(cls.config_class):
            raise TypeError(f'engine {name!r}: config_class must be a dataclass')
        unknown = set(cls.needs) - set(PORT_NAMES)
        if unknown:
            raise TypeError(f'engine {name!r} needs unknown ports {sorted(unknown)}; ports are {PORT_NAMES}')
        if name in ENGINES and ENGINES[name] is not cls:
            raise ValueError(f'engine {name!r} is registered twice ({ENGINES[name].__module__}, {cls.__module__})')
        cls.name = name
        ENGINES[name] = cls
        return cls

    return add


def load_engines(modules):
    """Import engine modules (each registers its engines); a missing module raises with its name."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise UnknownEngine(f'engine module {module!r} cannot be imported: {exc}') from None


def engine_class(name):
    """The registered engine class, or UnknownEngine naming what is available or which package is missing."""
    if name in ENGINES:
        return ENGINES[name]
    available = sorted(ENGINES)
    if name in PROVIDERS:
        raise UnknownEngine(
            f'strategy {name!r} is not available here: its engine comes with package {PROVIDERS[name]}, '
            f"which is not loaded (list its engine module in the orchestrator's engines parameter and "
            f'build it); available: {available}'
        )
    raise UnknownEngine(f'unknown strategy {name!r}: no engine of that name is registered; available: {available}')


def build_engine(name, config_dir=None):
    """An engine instance with its config from <config_dir>/<name>.yaml (defaults when absent)."""
    cls = engine_class(name)
    path = Path(config_dir) / f'{name}.yaml' if config_dir else None
    data = {}
    if path is not None and path.is_file():
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    return cls(load_config(cls.config_class, data, str(path) if path else name), config_dir)


def load_config(config_class, data, source='config'):
    """A config dataclass from a mapping, checked: unknown keys, wrong types and nested blocks name the key."""
    if not isinstance(data, dict):
        raise ConfigError(f'{source}: expected a mapping, got {type(data).__name__}')
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f'{source}: unknown keys {unknown}; known: {sorted(fields)}')
    values = {}
    for key, value in data.items():
        default = _default(fields[key])
        where = f'{source}: {key}'
        if dataclasses.is_dataclass(default):
            values[key] = load_config(type(default), value or {}, where)
        else:
            values[key] = _checked(value, default, where)
    return config_class(**values)


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _checked(value, default, where):
    """value, converted where the default's type allows (int -> float, list -> tuple), or ConfigError."""
    if default is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(default, int) and isinstance(value, int):
        return value
    elif isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(f'{where} must be {type(default).__name__}, got {value!r}')
