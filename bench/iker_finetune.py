"""IKER per task (issue 18): the goal-conditioned PPO policy of a skill (shipped, trained once over
every object kind), the same policy fine-tuned for a few minutes on one task's object kind, and
the CEM planner, side by side on the same fresh randomised episodes of that task (KeypointEnv with
env.kinds = the task's kind), by the paper's criterion (mean keypoint distance within 5 cm).

A task is a skill on one object kind (e.g. push a shoe, place a shoe, push a book); targets stay
random per episode. Fine-tuning: `python -m twinloop_iker.train --skill S --finetune-minutes M
--kinds K` (it starts from the shipped policy). Writes bench/results/iker_finetune-<time>.json and
appends a table to bench/RESULTS.md.

    . ./twinloop_env.sh && python bench/iker_finetune.py [--tasks push:shoe place:shoe push:book]
        [--minutes 5] [--episodes 64] [--cem-episodes 32]
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

from iker_twin import evaluate_row, save_results

from twinloop_core.evaluation import git_commit, machine
from twinloop_iker import train
from twinloop_iker.config import default_config
from twinloop_iker.evaluate import EVAL_SEED
from twinloop_iker.solvers import SHIPPED

ROOT = Path(__file__).resolve().parents[1]


def task_rows(skill, kind, minutes, episodes, cem_episodes, config):
    """The three rows of one task: goal-conditioned PPO, fine-tuned PPO, CEM."""
    config = replace(config, env=replace(config.env, kinds=(kind,)))
    rows = [dict(evaluate_row(skill, 'ppo', True, episodes, str(SHIPPED / skill), config), variant='goal-conditioned')]
    out = train.default_out(f'{skill}-finetuned-{kind}')
    report = train.train(skill, minutes, out=out, eval_episodes=0, config=config, init=SHIPPED / skill)
    tuned = evaluate_row(skill, 'ppo', True, episodes, str(out), config)
    rows.append(dict(tuned, variant=f'fine-tuned {minutes:g} min', training_s=report['run_wall_s']))
    if cem_episodes:
        rows.append(dict(evaluate_row(skill, 'cem', True, cem_episodes, None, config), variant='CEM (no training)'))
    for row in rows:
        row['kind'] = kind
        print(
            f'{skill} {kind} {row["variant"]}: {row["successes"]}/{row["episodes"]} = '
            f'{100 * row["success_rate"]:.1f} %, mean final distance {100 * row["mean_distance"]:.1f} cm, '
            f'{row["seconds_per_episode"]:.2f} s per episode',
            flush=True,
        )
    return rows


def append_results(rows, command, commit, info, path):
    lines = [
        f'\n## IKER per task: goal-conditioned PPO, fine-tuned, CEM (issue 18), {time.strftime("%Y-%m-%d %H:%M")}\n',
        f'Command: `{command}`  ',
        f'Commit: {commit}  ',
        f'Machine: {info["cpu"]}, {info["cores"]} cores, no GPU. KeypointEnv on one object kind per task, domain '
        f'randomisation on, random targets; episodes of seeds {EVAL_SEED}.. (never trained on); success = mean '
        'keypoint distance within 5 cm at the end. Goal-conditioned: the shipped policy of the skill '
        "(twinloop_iker/policies/); fine-tuned: it, trained further on the task's kind only.\n",
        '| task | solver | training | success | rate | 95 % CI (Wilson) | mean final distance | s per episode |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        training = f'+{r["training_s"] / 60:.1f} min' if 'training_s' in r else '-'
        lines.append(
            f'| {r["skill"]} {r["kind"]} | {r["variant"]} | {training} | {r["successes"]}/{r["episodes"]} '
            f'| {100 * r["success_rate"]:.1f} % | {100 * r["wilson95"][0]:.1f}-{100 * r["wilson95"][1]:.1f} % '
            f'| {100 * r["mean_distance"]:.1f} cm | {r["seconds_per_episode"]:.2f} |'
        )
    with open(path, 'a') as f:
        f.write('\n'.join(lines) + '\n')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tasks', nargs='+', default=['push:shoe', 'place:shoe', 'push:book'], help='SKILL:KIND')
    parser.add_argument('--minutes', type=float, default=5.0, help='fine-tuning per task')
    parser.add_argument('--episodes', type=int, default=64, help='per task for the PPO rows')
    parser.add_argument('--cem-episodes', type=int, default=32, help='per task for CEM (slower; 0: none)')
    parser.add_argument('--no-results', action='store_true', help='do not write bench/results or RESULTS.md')
    args = parser.parse_args(argv)
    config, commit, info = default_config(), git_commit(ROOT), machine()
    rows = []
    for task in args.tasks:
        skill, kind = task.split(':')
        rows += task_rows(skill, kind, args.minutes, args.episodes, args.cem_episodes, config)
    if not args.no_results:
        save_results('iker_finetune', argv, rows, commit, info, append_results)


if __name__ == '__main__':
    main()
