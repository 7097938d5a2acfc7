"""The task suite's evaluation (bench/task_suite.py) without running it: the held-out seeds a
development run may not use, the planner's verdict counted against the ground truth per episode, and
--engine-set's ablated copy of config/ (a misspelt key fails before any episode starts)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from twinloop_core.engine import ConfigError
from twinloop_core.evaluation import wilson_interval

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3]))


@pytest.fixture(scope='module')
def suite():
    spec = importlib.util.spec_from_file_location('task_suite', ROOT / 'bench' / 'task_suite.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_development_runs_never_use_held_out_seeds(suite, tmp_path):
    ranges = suite.seed_ranges(ROOT / 'bench' / 'tasks.yaml')
    (d0, d1), (h0, h1) = ranges['development'], ranges['held_out']
    assert d1 <= h0 or h1 <= d0
    assert suite.check_seeds(range(d0, d0 + 5), ranges, dev=True) == ''
    assert 'held-out seeds stay unseen' in suite.check_seeds([d1 - 1, h0], ranges, dev=True)
    assert suite.check_seeds(range(h0, h0 + 5), ranges, dev=False) == ''
    assert '--dev' in suite.check_seeds([d0], ranges, dev=False)
    overlapping = tmp_path / 'tasks.yaml'
    overlapping.write_text('seeds: {development: [1, 100], held_out: [50, 200]}\ncategories: {}\n')
    with pytest.raises(ValueError, match='disjoint'):
        suite.seed_ranges(overlapping)


def test_planner_verdicts_are_counted_against_the_ground_truth(suite):
    def episode(category, success, planner_done):
        row = {'category': category, 'success': success}
        return row if planner_done is None else {**row, 'planner_done': planner_done}

    episodes = [
        episode('multi_stage', True, True),
        episode('multi_stage', True, False),  # the run that judged its own release not done
        episode('multi_stage', False, True),
        episode('cluttered', False, False),
        episode('cluttered', False, None),  # ended in an error: no planner verdict
    ]
    summary = suite.summarize(episodes)
    assert summary['multi_stage'] == {
        'success': 2,
        'episodes': 3,
        'rate': 0.667,
        'ci95': [round(v, 3) for v in wilson_interval(2, 3)],
        'false_done': 1,
        'false_not_done': 1,
        'planner_unjudged': 0,
    }
    counts = {k: summary['overall'][k] for k in ('episodes', 'false_done', 'false_not_done', 'planner_unjudged')}
    assert counts == {'episodes': 5, 'false_done': 1, 'false_not_done': 1, 'planner_unjudged': 1}


def test_engine_set_writes_an_ablated_copy_of_the_config(suite, tmp_path):
    out = suite.engine_config_dir('anti_grounding', ['sampler.exploit=0', 'sampler.lambda_r=0.0'], tmp_path)
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
def test_engine_set_refuses_unknown_keys_and_malformed_items(suite, tmp_path, item, error):
    with pytest.raises((ConfigError, ValueError), match=error):
        suite.engine_config_dir('anti_grounding', [item], tmp_path)


def test_a_rerun_with_the_log_skips_finished_episodes(suite, tmp_path):
    log = tmp_path / 'suite.jsonl'
    assert suite.done_episodes(log) == {}
    rows = [{'instruction': 'put the red block in the bin', 'seed': s, 'success': s == 1000} for s in (1000, 1001)]
    log.write_text(''.join(json.dumps(r) + '\n' for r in rows) + '\n')
    done = suite.done_episodes(log)
    assert set(done) == {('put the red block in the bin', 1000), ('put the red block in the bin', 1001)}
    assert done[('put the red block in the bin', 1000)]['success'] is True
