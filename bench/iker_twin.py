"""IKER's solvers in the twin (issue 18): the success rate of each skill (place, push, reorient) over fresh
randomised episodes of KeypointEnv, with and without domain randomisation (the paper's Table II,
shared/seeds/002), by the paper's criterion (mean keypoint distance to target within 5 cm at the end).

Solvers: the CEM planner (cem.py; no training) and the trained goal-conditioned PPO policies (those
shipped in twinloop_iker/policies/, or DIR/<skill>/ from `python -m twinloop_iker.train --out
DIR/<skill>` with --checkpoints DIR). Episodes are
fixed by their seeds (from twinloop_iker.evaluate.EVAL_SEED on, never trained on). Writes
bench/results/iker_twin-<time>.json and appends a table to bench/RESULTS.md.

    . ./twinloop_env.sh && python bench/iker_twin.py [--episodes 128] [--skills place push reorient] [--solvers ppo cem]
        [--checkpoints DIR] [--kinds shoe]

--kinds draws the episodes' objects from these catalog kinds only (the config's for the skill by default): one
task type of the paper, e.g. push --kinds shoe (push to form a pair) and push --kinds book (push to align).
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from twinloop_core.evaluation import git_commit, machine
from twinloop_iker.config import default_config
from twinloop_iker.env import SKILLS, kinds_field
from twinloop_iker.evaluate import EVAL_SEED, POLICY_FILE, SOLVERS, run_episodes, summary
from twinloop_iker.solvers import SHIPPED

ROOT = Path(__file__).resolve().parents[1]


def evaluate_row(skill, solver, randomize, episodes, checkpoint, config):
    """One row: the summary of a solver on a skill's episodes, each episode's outcome kept."""
    started = time.perf_counter()
    seeds = range(EVAL_SEED, EVAL_SEED + episodes)
    with tqdm(total=episodes, desc=f'{skill} {solver} dr={randomize}', leave=False) as bar:
        results = run_episodes(skill, seeds, solver, checkpoint, randomize, config, on_episode=lambda _: bar.update())
    row = summary(results, time.perf_counter() - started)
    row.update(skill=skill, solver=solver, randomization=randomize, kinds=list(getattr(config.env, kinds_field(skill))))
    row['failures'] = [{'seed': r.seed, 'distance': round(r.distance, 4)} for r in results if not r.success]
    return row


def _kinds(kinds):
    """The kinds column: the few a row drew from, or 'all N'."""
    return ', '.join(kinds) if len(kinds) <= 3 else f'all {len(kinds)}'


def append_results(rows, command, commit, info, path):
    lines = [
        f'\n## IKER solvers in the twin (issue 18), {time.strftime("%Y-%m-%d %H:%M")}\n',
        f'Command: `{command}`  ',
        f'Commit: {commit}  ',
        f'Machine: {info["cpu"]}, {info["cores"]} cores, no GPU. KeypointEnv (floating hand, one catalog object, '
        'the keypoint reward of Sec. III-A); success = mean keypoint distance to target within 5 cm at the end '
        f"(the paper's criterion); episodes of seeds {EVAL_SEED}.. (never trained on); domain randomisation: "
        'friction, mass, centre of mass, contact softness, geometry scale, start pose, grasp (config/iker.yaml).\n',
        '| skill | kinds | solver | randomisation | success | rate | 95 % CI (Wilson) | mean final distance '
        '| s per episode |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    lines += [
        f'| {r["skill"]} | {_kinds(r["kinds"])} | {r["solver"]} | {"on" if r["randomization"] else "off"} '
        f'| {r["successes"]}/{r["episodes"]} '
        f'| {100 * r["success_rate"]:.1f} % | {100 * r["wilson95"][0]:.1f}-{100 * r["wilson95"][1]:.1f} % '
        f'| {100 * r["mean_distance"]:.1f} cm | {r["seconds_per_episode"]:.1f} |'
        for r in rows
    ]
    with open(path, 'a') as f:
        f.write('\n'.join(lines) + '\n')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--episodes', type=int, default=128, help='per skill, solver and randomisation setting')
    parser.add_argument('--skills', nargs='*', choices=SKILLS, default=list(SKILLS))
    parser.add_argument('--solvers', nargs='*', choices=SOLVERS, default=list(SOLVERS))
    parser.add_argument('--checkpoints', default=str(SHIPPED), help='DIR with DIR/<skill>/policy.zip (PPO)')
    parser.add_argument('--kinds', nargs='*', help="the catalog kinds episodes draw from (the config's by default)")
    parser.add_argument('--no-results', action='store_true', help='do not write bench/results or RESULTS.md')
    args = parser.parse_args(argv)
    commit, info = git_commit(ROOT), machine()
    rows = []
    for skill in args.skills:
        config = default_config()
        if args.kinds:
            config = replace(config, env=replace(config.env, **{kinds_field(skill): tuple(args.kinds)}))
        for solver in args.solvers:
            checkpoint = str(Path(args.checkpoints) / skill) if solver == 'ppo' else None
            if checkpoint and not (Path(checkpoint) / POLICY_FILE).is_file():
                print(
                    f'{skill} ppo: no policy in {checkpoint} (python -m twinloop_iker.train --skill {skill}); skipped'
                )
                continue
            for randomize in (True, False):
                row = evaluate_row(skill, solver, randomize, args.episodes, checkpoint, config)
                rows.append(row)
                print(
                    f'{skill} {solver} randomisation {"on" if randomize else "off"}: {row["successes"]}/'
                    f'{row["episodes"]} = {100 * row["success_rate"]:.1f} % (95 % Wilson '
                    f'{100 * row["wilson95"][0]:.1f}-{100 * row["wilson95"][1]:.1f} %), mean final distance '
                    f'{100 * row["mean_distance"]:.1f} cm, {row["seconds_per_episode"]:.1f} s per episode',
                    flush=True,
                )
    if not args.no_results:
        save_results('iker_twin', argv, rows, commit, info, append_results)


def save_results(name, argv, rows, commit, info, append):
    """bench/results/<name>-<time>.json and append(rows, command, commit, info, RESULTS.md path)."""
    command = f'python bench/{name}.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    out = ROOT / 'bench' / 'results' / f'{name}-{time.strftime("%Y%m%d-%H%M%S")}.json'
    out.write_text(json.dumps({'command': command, 'commit': commit, 'machine': info, 'rows': rows}, indent=1))
    append(rows, command.strip(), commit, info, ROOT / 'bench' / 'RESULTS.md')
    print(f'wrote {out.relative_to(ROOT)} and appended bench/RESULTS.md')


if __name__ == '__main__':
    main()
