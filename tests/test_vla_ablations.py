"""bench/vla_ablations.py: the shipped protocol loads with settings every policy takes, rows become the right
training and evaluation commands (the two-stage pipeline, resume), and the table adds seeds up honestly."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from twinloop_core.engine import ConfigError

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
spec = importlib.util.spec_from_file_location('vla_ablations', ROOT / 'bench' / 'vla_ablations.py')
ablations = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablations)

TASKS = ['libero_spatial:0', 'libero_spatial:1']
PROTOCOL = {
    'dataset': '~/data/fine',
    'pretrain_dataset': '/data/all',
    'preset': 'cpu',
    'steps': 100,
    'pretrain_steps': 50,
    'val_every': 25,
    'seeds': [0, 1],
    'tasks': TASKS,
    'episodes': 3,
    'common_set': {'reconvla': {'action_head': 'continuous', 'vae_weights': '~/vae'}},
}


def _write(tmp_path, rows, protocol=PROTOCOL):
    path = tmp_path / 'ablations.yaml'
    path.write_text(yaml.safe_dump({'protocol': protocol, 'rows': rows}))
    return path


def test_the_shipped_protocol_loads_and_names_the_papers_rows():
    protocol, rows = ablations.load(ROOT / 'bench' / 'vla_ablations.yaml')
    names = {row['name'] for row in rows}
    assert {'reconvla_no_reconstruction', 'reconvla_whole_image', 'reconvla_no_pretraining'} <= names
    assert {'vga_no_pvm', 'vga_no_joint_training'} <= names
    assert len(protocol['seeds']) >= 2


def test_bad_protocols_are_refused_before_any_training(tmp_path):
    row = {'name': 'vga', 'policy': 'vga'}
    with pytest.raises(ValueError, match='repeat'):
        ablations.load(_write(tmp_path, [row, row]))
    with pytest.raises(ValueError, match="lacks \\['episodes'\\]"):
        ablations.load(_write(tmp_path, [row], {k: v for k, v in PROTOCOL.items() if k != 'episodes'}))
    with pytest.raises(ConfigError, match='use_pvn'):
        ablations.load(_write(tmp_path, [{'name': 'typo', 'policy': 'vga', 'set': {'use_pvn': False}}]))
    with pytest.raises(KeyError, match='unknown policy'):
        ablations.load(_write(tmp_path, [{'name': 'x', 'policy': 'openvla'}]))


def test_rows_become_pipeline_or_training_commands_with_their_settings(tmp_path):
    recon = {'name': 'recon', 'policy': 'reconvla', 'pretrain': True, 'set': {'action_head': 'discrete'}}
    command = ablations.train_command(PROTOCOL, recon, 1, tmp_path / 'recon' / 'seed1')
    assert command[1:3] == ['-m', 'twinloop_vla.pipeline']
    joined = ' '.join(command)
    assert '--pretrain /data/all' in joined and f'--finetune {os.path.expanduser("~/data/fine")}' in joined
    assert '--pretrain-steps 50 --finetune-steps 100' in joined and '--seed 1' in joined
    # the row's own setting wins over the protocol's common one; paths are expanded
    assert '--set action_head=discrete' in joined and 'continuous' not in joined
    assert f'--set vae_weights={os.path.expanduser("~/vae")}' in joined
    evaluation = ablations.eval_command(PROTOCOL, recon, tmp_path / 'recon' / 'seed1')
    assert str(tmp_path / 'recon' / 'seed1' / 'finetune' / 'policy') in evaluation
    assert ' '.join(evaluation).count('--task ') == 2

    folder = tmp_path / 'vga' / 'seed0'
    plain = ablations.train_command(PROTOCOL, {'name': 'vga', 'policy': 'vga'}, 0, folder)
    assert plain[1:3] == ['-m', 'twinloop_vla.train'] and '--resume' not in plain
    (folder / 'checkpoints' / 'step_25').mkdir(parents=True)
    assert '--resume' in ablations.train_command(PROTOCOL, {'name': 'vga', 'policy': 'vga'}, 0, folder)


def _finished(folder, successes, attention=None, minutes=10.0, steps=100):
    folder.mkdir(parents=True, exist_ok=True)
    final = {'step': steps, 'split': 'val', 'action_l1': 0.2}
    if attention is not None:
        final['attention_inside'] = attention
    (folder / 'report.json').write_text(json.dumps({'steps': steps, 'final_val': final}))
    (folder / ablations.WALL_FILE).write_text(json.dumps({'train_s': 60 * minutes}))
    tasks = {t: {'episodes': 3, 'successes': s, 'success_rate': s / 3} for t, s in zip(TASKS, successes)}
    summary = {'tasks': tasks, 'all': {'inference_p50_s': 0.02}}
    (folder / 'eval').mkdir(exist_ok=True)
    (folder / 'eval' / 'results.json').write_text(json.dumps({'summary': summary}))


def test_the_table_sums_seeds_and_skips_unfinished_ones(tmp_path):
    row = {'name': 'vga', 'policy': 'vga'}
    seeds = [tmp_path / f'seed{s}' for s in range(3)]
    _finished(seeds[0], [3, 1], attention=0.4, minutes=10)
    _finished(seeds[1], [2, 1], attention=0.2, minutes=20)
    _finished(seeds[2], [0, 0], steps=60)  # stopped before the protocol's steps: not in the table
    out = ablations.summarise(PROTOCOL, row, seeds)
    assert out['seeds'] == 2
    assert out['tasks'][TASKS[0]]['successes'] == 5 and out['tasks'][TASKS[0]]['episodes'] == 6
    assert out['tasks'][TASKS[0]]['rate_spread'] == pytest.approx(1 / 3)
    assert out['tasks'][TASKS[1]]['rate_spread'] == 0
    assert out['attention_inside'] == pytest.approx(0.3) and out['train_minutes'] == pytest.approx(15)
    table = ablations.markdown(PROTOCOL, [out, ablations.summarise(PROTOCOL, {'name': 'none', 'policy': 'vga'}, [])])
    assert '| vga | 2 | 5/6 (spread 33%) | 2/6 (spread 0%) | 0.200 | 0.300 | 15 | 20 ms |' in table
    assert '| none | 0 | - | - | - | - | - | - |' in table
