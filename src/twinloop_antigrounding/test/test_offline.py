"""Offline optimisation of the structured VQA (twinloop_antigrounding.offline): the twin's hindsight
labels, the weight fit on ranking examples, a meta-VLM over the real chat protocol (a loopback
server stands in for the hosted model) with its garbage replies refused, the versioned prompts
file it writes, the paired held-out comparison, and the command line end to end."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from twinloop_antigrounding import offline
from twinloop_antigrounding.stages import Stage
from twinloop_core.task import SubTask
from twinloop_scoring import vqa
from twinloop_scoring.loopback_server import ChatServer
from twinloop_scoring.openai_http import OpenAIHTTPBackend

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3]))
PROMPTS = ROOT / 'config' / 'vqa_prompts.yaml'
NAMES = ['safety', 'task_alignment', 'efficiency', 'physical_feasibility', 'viewpoint_clarity']
CLOSE = {
    'safety': 1.0,
    'task_alignment': 0.9,
    'efficiency': 0.22,
    'physical_feasibility': 1.0,
    'viewpoint_clarity': 1.0,
}
MOVE = {
    'safety': 1.0,
    'task_alignment': 0.74,
    'efficiency': 0.92,
    'physical_feasibility': 1.0,
    'viewpoint_clarity': 1.0,
}


def _report(steps=3):
    """A report whose grasp steps chose a short move over a close that grasps in the twin (the bias the
    default weights have: efficiency outweighs the grasp's alignment)."""
    candidate = lambda cid, dims, reaches, **kw: {  # noqa: E731
        'id': cid,
        'total': 0.0,
        'failed': False,
        'dimensions': dims,
        'collisions': [],
        'reaches': reaches,
        **kw,
    }
    rows = lambda: [  # noqa: E731
        candidate('c00', CLOSE, True),
        candidate('c01', MOVE, False),
        candidate('c02', CLOSE, False, collisions=['panda_hand|table']),  # unsafe: never an example
    ]
    return {'steps': [{'stage': 'grasp blue_cube', 'candidates': rows(), 'chosen': 'c01'} for _ in range(steps)]}


def _logs(tmp_path, name, seeds, success=False):
    log = tmp_path / f'{name}.jsonl'
    with open(log, 'w') as f:
        for seed in seeds:
            run = tmp_path / f'{name}-{seed}'
            run.mkdir()
            (run / 'report.json').write_text(json.dumps(_report()))
            record = {'instruction': 'stack the blue cube on the red cube', 'seed': seed, 'success': success}
            f.write(json.dumps({**record, 'ground_truth': 'not held', 'report': str(run / 'report.html')}) + '\n')
    return log


def test_the_twin_says_whether_a_candidate_ends_the_stage():
    stage = Stage('grasp', 0, SubTask('pick', 'cube'))
    cube = (np.array([0.5, 0.0, 0.0]), (1.0, 0.0, 0.0, 0.0), (0.04, 0.04, 0.04))
    objects = {'cube': cube}
    grip = stage.grasp_point(objects)
    lifted = {'final_positions': {'cube': [0.5, 0.0, 0.03]}, 'holding': 'cube', 'ee_end': list(grip + (0, 0, 0.03))}
    assert stage.done_in_twin(objects, objects, lifted)
    assert not stage.done_in_twin(objects, objects, {**lifted, 'holding': ''})  # fingers open: not grasped
    beside = {'final_positions': {'cube': [0.5, 0.0, 0.0]}, 'holding': '', 'ee_end': list(grip + (0.1, 0, 0))}
    assert not stage.done_in_twin(objects, objects, beside)


def test_the_fit_moves_weight_off_the_dimension_that_chose_wrongly():
    config = vqa.PromptConfig.from_yaml(PROMPTS)
    steps = offline.ranking_steps([_report()], NAMES)
    assert len(steps) == 3 and all(len(s.reaches) == 2 for s in steps)  # the colliding candidate is left out
    assert offline.regret(steps, config.weights) == 1.0
    weights = offline.fit_weights(steps, config.weights)
    assert offline.regret(steps, weights) == 0.0
    assert weights.sum() == pytest.approx(1.0) and np.all(weights >= 0)
    assert weights[2] < config.weights[2]  # efficiency carried the wrong choices
    assert weights[0] == pytest.approx(config.weights[0])  # safety: no example tells it apart, kept
    pattern = offline.patterns(steps, config.weights, NAMES)['grasp']
    assert pattern['regrets'] == 3 and pattern['chosen_minus_reaching']['efficiency'] == pytest.approx(0.7)
    assert offline.patterns(steps, weights, NAMES)['grasp']['regrets'] == 0


def test_steps_without_a_choice_to_learn_from_are_not_examples():
    report = _report()
    for row in report['steps'][0]['candidates']:
        row['reaches'] = True
    report['steps'][1]['candidates'][0]['reaches'] = None  # an old report: not judged
    report['steps'][1]['candidates'][1]['reaches'] = None
    assert len(offline.ranking_steps([report], NAMES)) == 1


@pytest.mark.parametrize(
    'reply, error',
    [
        ('I would raise task alignment.', 'not JSON'),
        (json.dumps({'questions': {}}), 'no "weights"'),
        (json.dumps({'weights': {'safety': 1.0}}), 'exactly'),
        (json.dumps({'weights': {**dict.fromkeys(NAMES, 0.2), 'safety': -0.1}}), 'non-negative'),
        (json.dumps({'weights': {**dict.fromkeys(NAMES, 0.2), 'safety': True}}), 'non-negative'),
        (
            '{"weights": {"safety": NaN, "task_alignment": 1, "efficiency": 0, "physical_feasibility": 0, '
            '"viewpoint_clarity": 0}}',
            'finite',
        ),
        (json.dumps({'weights': dict.fromkeys(NAMES, 0)}), 'sum to zero'),
        (json.dumps({'weights': dict.fromkeys(NAMES, 1), 'questions': {'gripper': 'x'}}), 'keyed by'),
        (json.dumps({'weights': dict.fromkeys(NAMES, 1), 'questions': {'safety': 'x' * 400}}), 'at most'),
        (json.dumps({'weights': dict.fromkeys(NAMES, 1), 'questions': {'safety': ' '}}), 'non-empty'),
    ],
)
def test_garbage_proposals_are_refused_with_the_reason(reply, error):
    with pytest.raises(ValueError, match=error):
        offline.parse_proposal(reply, NAMES)


def test_a_meta_vlm_proposes_over_the_chat_protocol(tmp_path):
    config = vqa.PromptConfig.from_yaml(PROMPTS)
    steps = offline.ranking_steps([_report()], NAMES)
    answer = {
        'weights': {**dict.fromkeys(NAMES, 1.0), 'task_alignment': 6.0},
        'questions': {'efficiency': 'Does the motion reach its goal without needless detours?'},
        'rationale': 'alignment was outweighed by efficiency',
    }
    with ChatServer(json.dumps(answer)) as server:
        reviewer = offline.VlmReviewer(OpenAIHTTPBackend(server.url, 'meta-test', retries=0, cache=False))
        weights, questions, rationale = reviewer.propose(config, steps, ['stack the blue cube: not held'])
        sent = ' '.join(part['text'] for m in server.requests[0]['json']['messages'] for part in m['content'])
    assert 'efficiency' in sent and 'not held' in sent and '"regrets": 3' in sent
    assert weights['task_alignment'] == pytest.approx(0.6) and sum(weights.values()) == pytest.approx(1.0)
    assert questions == {'efficiency': answer['questions']['efficiency']} and 'meta-VLM' in reviewer.label
    with ChatServer('no idea') as server:
        reviewer = offline.VlmReviewer(OpenAIHTTPBackend(server.url, 'meta-test', retries=0, cache=False))
        with pytest.raises(ValueError, match='not JSON'):
            reviewer.propose(config, steps, [])


def test_the_new_prompts_file_is_versioned_and_loads(tmp_path):
    out = tmp_path / 'vqa_prompts_v2.yaml'
    weights = {
        'safety': 0.3,
        'task_alignment': 0.4333333,
        'efficiency': 0.0333333,
        **dict.fromkeys(NAMES[3:], 0.1166667),
    }
    version = offline.write_prompts(PROMPTS, weights, {'efficiency': 'Is it direct?'}, out, {'by': 'test'})
    loaded, base = vqa.PromptConfig.from_yaml(out), vqa.PromptConfig.from_yaml(PROMPTS)
    assert version == loaded.version == base.version + 1
    assert loaded.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert [d.question for d in loaded.dimensions if d.name == 'efficiency'] == ['Is it direct?']
    assert yaml.safe_load(out.read_text())['optimised'] == {'from_version': base.version, 'by': 'test'}


def test_the_held_out_gain_is_paired_by_task_and_seed():
    rows = lambda outcomes: [  # noqa: E731
        {'instruction': t, 'seed': s, 'success': ok, 'steps': 10 if ok else 4} for (t, s), ok in outcomes.items()
    ]
    baseline = rows({('a', 1): True, ('a', 2): False, ('b', 1): False, ('b', 2): True, ('c', 9): False})
    candidate = rows({('a', 1): True, ('a', 2): True, ('b', 1): True, ('b', 2): True})
    gain = offline.paired_gain(baseline, candidate)
    assert gain['pairs'] == 4 and gain['gain'] == pytest.approx(0.5) and gain['baseline'] == pytest.approx(0.5)
    assert 0.0 <= gain['ci95'][0] <= 0.5 <= gain['ci95'][1] <= 1.0
    assert gain['steps'] == {'both_solved': 2, 'baseline': 10.0, 'candidate': 10.0}
    with pytest.raises(ValueError, match='both'):
        offline.paired_gain(baseline, rows({('z', 1): True}))


def test_fit_and_compare_from_the_command_line(tmp_path, capsys):
    train = _logs(tmp_path, 'train', [5, 6])
    held = _logs(tmp_path, 'held', [1000, 1001])
    out, report = tmp_path / 'v2.yaml', tmp_path / 'fit.json'
    offline.main(['fit', '--logs', str(train), '--out', str(out), '--validate', str(held), '--report', str(report)])
    summary = json.loads(report.read_text())
    assert summary['train_regret'] == {'before': 1.0, 'after': 0.0}
    assert summary['held_out_regret']['before'] == 1.0 and summary['held_out_regret']['after'] == 0.0
    assert 'not a VLM' in summary['reviewer'] and vqa.PromptConfig.from_yaml(out).version == summary['version']
    with pytest.raises(SystemExit, match='held-out seeds'):  # never fit on the held-out range
        offline.main(['fit', '--logs', str(held), '--out', str(tmp_path / 'v3.yaml')])
    with pytest.raises(SystemExit, match='not a VLM'):
        offline.main(['fit', '--logs', str(train), '--out', str(tmp_path / 'v3.yaml'), '--reviewer', 'twin_critic'])
    better = _logs(tmp_path, 'better', [1000, 1001], success=True)
    capsys.readouterr()
    offline.main(['compare', '--baseline', str(held), '--candidate', str(better)])
    result = json.loads(capsys.readouterr().out)
    assert result['gain'] == 1.0 and result['verdict'].startswith('kept')
