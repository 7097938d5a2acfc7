"""bench/task_suite.py's ablation switch: --engine-set writes a copy of config/ with the engine's keys
changed for the run, and a misspelt key fails before any episode starts."""

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from twinloop_core.engine import ConfigError

ROOT = Path(os.environ['TWINLOOP_ROOT'])


@pytest.fixture(scope='module')
def task_suite():
    spec = importlib.util.spec_from_file_location('task_suite', ROOT / 'bench' / 'task_suite.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_engine_set_writes_an_ablated_copy_of_the_config(task_suite, tmp_path):
    out = task_suite.engine_config_dir('anti_grounding', ['sampler.exploit=0', 'sampler.lambda_r=0.0'], tmp_path)
    ablated = yaml.safe_load((Path(out) / 'anti_grounding.yaml').read_text())
    original = yaml.safe_load((ROOT / 'config' / 'anti_grounding.yaml').read_text())
    assert ablated['sampler']['exploit'] == 0 and ablated['sampler']['lambda_r'] == 0.0
    assert (
        ablated['sampler']['r0'] == original['sampler']['r0']
        and ablated['num_candidates'] == original['num_candidates']
    )
    assert (Path(out) / 'language.yaml').is_file() and (Path(out) / 'vlm_agents.yaml').is_file()
    assert original['sampler']['exploit'] != 0  # the project's config is untouched


@pytest.mark.parametrize('item, error', [('sampler.exploitt=0', 'exploitt'), ('goal_prior', 'KEY=VALUE')])
def test_engine_set_refuses_unknown_keys_and_malformed_items(task_suite, tmp_path, item, error):
    with pytest.raises((ConfigError, ValueError), match=error):
        task_suite.engine_config_dir('anti_grounding', [item], tmp_path)
