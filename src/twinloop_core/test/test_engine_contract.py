"""The engine contract without ROS: registration checks, clear errors for missing engines,
validated configs, and Ports that hold only what an engine declared."""

import re
from dataclasses import dataclass, field

import pytest

from twinloop_core import engine
from twinloop_core.engine import ConfigError, DecisionEngine, EngineResult, load_config, register_engine
from twinloop_core.ports import CancelToken, Ports
from twinloop_core.outcomes import Canceled


@dataclass
class Inner:
    radius: float = 0.1


@dataclass
class Outer:
    steps: int = 3
    speed: float = 0.5
    name: str = 'x'
    flags: tuple = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_config_is_validated_with_the_key_named():
    config = load_config(Outer, {'steps': 5, 'speed': 1, 'flags': [3], 'inner': {'radius': 2}}, 'outer.yaml')
    assert config == Outer(5, 1.0, 'x', (3,), Inner(2.0)) and isinstance(config.speed, float)
    for data, message in [
        ({'stepz': 1}, "unknown keys ['stepz']"),
        ({'steps': 1.5}, 'steps must be int'),
        ({'steps': True}, 'steps must be int'),
        ({'name': 3}, 'name must be str'),
        ({'inner': {'radius': 'far'}}, 'inner: radius must be float'),
        ([1], 'expected a mapping'),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(Outer, data, 'outer.yaml')


def test_registry_rejects_bad_engines_and_names_missing_packages(monkeypatch):
    monkeypatch.delitem(engine.ENGINES, 'iker', raising=False)  # as in a process that did not load twinloop_iker
    with pytest.raises(TypeError, match='not a DecisionEngine'):
        register_engine('bad')(object)
    with pytest.raises(TypeError, match='unknown ports'):
        register_engine('bad')(type('Bad', (DecisionEngine,), {'needs': ('teleporter',), 'run': lambda *a: None}))
    with pytest.raises(engine.UnknownEngine, match='twinloop_iker .* not loaded'):
        engine.engine_class('iker')
    with pytest.raises(engine.UnknownEngine, match="unknown strategy 'nope'"):
        engine.engine_class('nope')
    with pytest.raises(engine.UnknownEngine, match='cannot be imported'):
        engine.load_engines(['twinloop_no_such_engine'])


def test_a_registered_engine_is_built_from_its_yaml(tmp_path):
    @register_engine('contract_test_engine')
    class Echo(DecisionEngine):
        config_class = Outer
        needs = ('perception',)

        def run(self, task, ports, limits):
            return EngineResult(True, str(self.config.steps))

    (tmp_path / 'contract_test_engine.yaml').write_text('steps: 7\ninner: {radius: 0.3}\n')
    built = engine.build_engine('contract_test_engine', tmp_path)
    assert isinstance(built, Echo) and built.config.steps == 7 and built.config.inner.radius == 0.3
    (tmp_path / 'contract_test_engine.yaml').write_text('steps: seven\n')
    with pytest.raises(ConfigError, match='contract_test_engine.yaml: steps must be int'):
        engine.build_engine('contract_test_engine', tmp_path)
    engine.ENGINES.pop('contract_test_engine')


def test_ports_hold_only_what_an_engine_needs_and_cancel_is_shared():
    token = CancelToken()
    ports = Ports('p', 't', 's', 'e', cancel=token).only(('perception', 'executor'))
    assert (ports.perception, ports.twin, ports.scorer, ports.executor) == ('p', None, None, 'e')
    token.cancel()
    with pytest.raises(Canceled):
        ports.cancel.check()
    with pytest.raises(ValueError, match='unknown ports'):
        Ports().only(('camera',))
