"""Issue 20's ablation table: every row of bench/vla_ablations.yaml trained and evaluated with one protocol.

    . ./twinloop_env.sh && python bench/vla_ablations.py --out ~/.cache/twinloop/ablations \\
        [--config bench/vla_ablations.yaml] [--rows vga vga_no_pvm] [--seeds 0] [--dry-run]

Each row and seed trains in OUT/<row>/seed<k> (python -m twinloop_vla.train; python -m twinloop_vla.pipeline for
rows with `pretrain: true`, the paper's two stages) on the protocol's data with its preset, steps and seed, then
is evaluated by python -m twinloop_vla.eval on the protocol's tasks and episodes into OUT/<row>/seed<k>/eval.
Running it again continues: a finished training or evaluation is skipped, a started training resumes from its
newest checkpoint. The table - per row and task the successes summed over seeds with the per-seed rates' spread,
the validation action L1, the attention inside the gaze region (ReconVLA rows), training minutes, inference p50 -
is printed as Markdown and written to bench/results/vla_ablations-<time>.json with the protocol and the commit.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from twinloop_vla.policies import policy_class

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
WALL_FILE = 'ablation_train_time.json'  # the training's wall time, summed over resumed runs
PROTOCOL_KEYS = ('dataset', 'preset', 'steps', 'val_every', 'seeds', 'tasks', 'episodes')


def load(path):
    """(protocol, rows) of an ablation YAML; ValueError for a missing protocol key or a repeated row name,
    KeyError for an unknown policy, ConfigError for a setting its config does not take."""
    config = yaml.safe_load(Path(path).read_text())
    protocol, rows = config['protocol'], config['rows']
    missing = [key for key in PROTOCOL_KEYS if key not in protocol]
    if missing:
        raise ValueError(f'{path}: protocol lacks {missing}')
    if any(row.get('pretrain') for row in rows) and not {'pretrain_dataset', 'pretrain_steps'} <= set(protocol):
        raise ValueError(f'{path}: rows with pretrain: true need protocol.pretrain_dataset and pretrain_steps')
    names = [row['name'] for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f'{path}: row names repeat: {names}')
    for row in rows:  # a misspelt setting fails here, not after hours of training
        preset = getattr(policy_class(row['policy']).config_class, protocol['preset'])
        preset(**settings(protocol, row))
    return protocol, rows


def _path(value):
    return os.path.expanduser(value) if isinstance(value, str) else value


def settings(protocol, row):
    """A row's config overrides: the protocol's common settings for its policy, then the row's own."""
    merged = {**protocol.get('common_set', {}).get(row['policy'], {}), **row.get('set', {})}
    return {key: _path(value) for key, value in merged.items()}


def overrides(protocol, row):
    """The --set arguments of a row."""
    return [arg for key, value in settings(protocol, row).items() for arg in ('--set', f'{key}={value}')]


def train_command(protocol, row, seed, folder):
    """The training command of one row and seed (resuming where a started run left checkpoints)."""
    common = ['--policy', row['policy'], '--preset', protocol['preset'], '--seed', str(seed), '--out', str(folder)]
    if row.get('pretrain'):
        stages = ['--pretrain', _path(protocol['pretrain_dataset']), '--finetune', _path(protocol['dataset'])]
        steps = ['--pretrain-steps', str(protocol['pretrain_steps']), '--finetune-steps', str(protocol['steps'])]
        return [sys.executable, '-m', 'twinloop_vla.pipeline', *common, *stages, *steps, *overrides(protocol, row)]
    every = str(protocol['val_every'])
    command = [sys.executable, '-m', 'twinloop_vla.train', *common, '--dataset', _path(protocol['dataset'])]
    command += ['--steps', str(protocol['steps']), '--val-every', every, '--save-every', every]
    if any((folder / 'checkpoints').glob('step_*')):
        command.append('--resume')
    return command + overrides(protocol, row)


def trained_folder(row, folder):
    """The training folder whose policy/ and report.json are the row's result."""
    return folder / 'finetune' if row.get('pretrain') else folder


def eval_command(protocol, row, folder):
    """The evaluation command of one trained row and seed."""
    tasks = [arg for task in protocol['tasks'] for arg in ('--task', task)]
    checkpoint = trained_folder(row, folder) / 'policy'
    command = [sys.executable, '-m', 'twinloop_vla.eval', '--checkpoint', str(checkpoint), *tasks]
    command += ['--episodes', str(protocol['episodes']), '--out', str(folder / 'eval')]
    return command + [str(arg) for arg in protocol.get('eval_args', [])]


def is_trained(protocol, row, folder):
    report = trained_folder(row, folder) / 'report.json'
    return report.is_file() and json.loads(report.read_text())['steps'] >= protocol['steps']


def is_evaluated(folder):
    return (folder / 'eval' / 'results.json').is_file()


def summarise(protocol, row, folders):
    """The table row of one ablation row from its seeds' train reports and evaluations (missing ones skipped)."""
    done = [f for f in folders if is_trained(protocol, row, f) and is_evaluated(f)]
    runs = [
        (
            json.loads((trained_folder(row, f) / 'report.json').read_text()),
            json.loads((f / 'eval' / 'results.json').read_text()),
        )
        for f in done
    ]
    out = {'row': row['name'], 'paper': row.get('paper', ''), 'seeds': len(runs), 'tasks': {}}
    if not runs:
        return out
    for task in protocol['tasks']:
        results = [evaluation['summary']['tasks'][task] for _, evaluation in runs]
        rates = [r['success_rate'] for r in results]
        out['tasks'][task] = {
            'successes': sum(r['successes'] for r in results),
            'episodes': sum(r['episodes'] for r in results),
            'rate_mean': float(np.mean(rates)),
            'rate_spread': float(np.max(rates) - np.min(rates)),
        }
    finals = [train['final_val'] for train, _ in runs]
    attention = [f['attention_inside'] for f in finals if 'attention_inside' in f]
    out.update(
        val_action_l1=float(np.mean([f.get('action_l1', f.get('action', np.nan)) for f in finals])),
        attention_inside=float(np.mean(attention)) if attention else None,
        train_minutes=float(np.mean([train_minutes(f) for f in done])),
        inference_p50_s=float(np.mean([e['summary']['all']['inference_p50_s'] for _, e in runs])),
    )
    return out


def train_minutes(folder):
    """Wall minutes this script spent training a row and seed, over every run that continued it."""
    wall = folder / WALL_FILE
    return json.loads(wall.read_text())['train_s'] / 60 if wall.is_file() else float('nan')


def markdown(protocol, table):
    """The table as Markdown: one line per row."""
    head = ['row', 'seeds', *protocol['tasks'], 'val action L1', 'attention in gaze', 'train min', 'inference p50']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in table:
        cells = [r['row'], str(r['seeds'])]
        for task in protocol['tasks']:
            t = r['tasks'].get(task)
            cells.append(f'{t["successes"]}/{t["episodes"]} (spread {t["rate_spread"]:.0%})' if t else '-')
        number = r.get('attention_inside')
        cells += [
            f'{r["val_action_l1"]:.3f}' if 'val_action_l1' in r else '-',
            f'{number:.3f}' if number is not None else '-',
            f'{r["train_minutes"]:.0f}' if 'train_minutes' in r else '-',
            f'{r["inference_p50_s"] * 1000:.0f} ms' if 'inference_p50_s' in r else '-',
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def run(command, dry_run):
    """Runs command (printed first; only printed on a dry run); returns its wall seconds."""
    print('$', ' '.join(command), flush=True)
    started = time.monotonic()
    if not dry_run:
        subprocess.run(command, check=True, cwd=ROOT)
    return time.monotonic() - started


def add_train_time(folder, seconds):
    wall = folder / WALL_FILE
    total = json.loads(wall.read_text())['train_s'] if wall.is_file() else 0.0
    wall.write_text(json.dumps({'train_s': total + seconds}))


def main():
    parser = argparse.ArgumentParser(description="Issue 20's ablation rows, one protocol")
    parser.add_argument('--config', default=str(ROOT / 'bench' / 'vla_ablations.yaml'))
    parser.add_argument('--out', required=True, help='folder of the rows (OUT/<row>/seed<k>)')
    parser.add_argument('--rows', nargs='+', help='row names (default: all)')
    parser.add_argument('--seeds', type=int, nargs='+', help="seeds (default: the protocol's)")
    parser.add_argument('--dry-run', action='store_true', help='print the commands, run nothing')
    args = parser.parse_args()
    protocol, rows = load(args.config)
    unknown = set(args.rows or ()) - {row['name'] for row in rows}
    if unknown:
        parser.error(f'unknown rows {sorted(unknown)}; the config has {[row["name"] for row in rows]}')
    rows = [row for row in rows if not args.rows or row['name'] in args.rows]
    seeds = args.seeds if args.seeds is not None else protocol['seeds']
    out = Path(args.out).expanduser()
    for row in rows:
        for seed in seeds:
            folder = out / row['name'] / f'seed{seed}'
            if not is_trained(protocol, row, folder):
                seconds = run(train_command(protocol, row, seed, folder), args.dry_run)
                if not args.dry_run:
                    add_train_time(folder, seconds)
            if not is_evaluated(folder):
                run(eval_command(protocol, row, folder), args.dry_run)
    if args.dry_run:
        return
    table = [summarise(protocol, row, [out / row['name'] / f'seed{s}' for s in seeds]) for row in rows]
    print(markdown(protocol, table))
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout
    record = {'command': ' '.join(sys.argv), 'commit': commit.strip(), 'protocol': protocol, 'rows': table}
    path = ROOT / 'bench' / 'results' / f'vla_ablations-{time.strftime("%Y%m%d-%H%M%S")}.json'
    path.write_text(json.dumps(record, indent=2))
    print(f'written: {path}')


if __name__ == '__main__':
    main()
