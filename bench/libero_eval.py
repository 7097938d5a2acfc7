"""LIBERO evaluation: a strategy on LIBERO tasks nobody here wrote, judged by each task's own success
predicate (its BDDL goal), within LIBERO's standard step limits (spatial 220, object 280, goal
300, 10: 520 control steps at 20 Hz, after 10 settling steps), one episode per init state.

Runs in process (no ROS graph): LIBERO's simulator is the arm and world, its state is the
perception ("privileged perception": its objects are not in twinloop's mesh library), the twin is
LIBERO's own scene (twinloop_twin.libero_twin), the scorer is the named backend. Resumable: every
finished episode is a line in the --log JSONL file; a rerun skips those. --results appends the
table (with the command) to bench/RESULTS.md, and writes bench/results/libero_eval-<time>.json.

    . ./twinloop_env.sh && python bench/libero_eval.py --tasks libero_spatial:0,1,2 libero_object:0,1,2 \\
        --episodes 5 --strategy anti_grounding --backend twin_critic [--log bench/results/libero_eval.jsonl] [--results]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from twinloop_antigrounding.config import MpcConfig
from twinloop_antigrounding.mpc import AntiGroundingMpc
from twinloop_core.engine import load_config
from twinloop_core.evaluation import episode_log, wilson_interval
from twinloop_core.ports import QuietProgress
from twinloop_execution.kinematics import Arm
from twinloop_language.parsers import make_parser
from twinloop_language.scene import Rejected, Scene
from twinloop_planning.ports.libero import PERCEPTION, EpisodeEnded, LiberoPorts
from twinloop_scoring import agents, vqa
from twinloop_twin.libero_twin import LiberoTwin
from twinloop_twin.libero_world import MAX_STEPS, LiberoWorld

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
STRATEGIES = ('anti_grounding',)


def parse_tasks(specs):
    """['libero_spatial:0,1,2', ...] -> [(suite, task id)]."""
    out = []
    for spec in specs:
        suite, _, ids = spec.partition(':')
        if suite not in MAX_STEPS or not ids:
            raise SystemExit(
                f'--tasks wants suite:ids with a suite of {sorted(MAX_STEPS)}, e.g. libero_spatial:0,1,2; got {spec!r}'
            )
        out += [(suite, int(i)) for i in ids.split(',')]
    return out


def done_episodes(log):
    """The finished episodes of a --log JSONL file, by (suite, task id, episode); a rerun skips them."""
    return {(r['suite'], r['task_id'], r['episode']): r for r in episode_log(log)}


class Evaluator:
    def __init__(self, args):
        self.args = args
        self.prompts = vqa.PromptConfig.from_yaml(ROOT / 'config' / 'vqa_prompts.yaml')
        self.agents = agents.load(ROOT / 'config' / 'vlm_agents.yaml', [args.backend])
        self.mpc_config = yaml.safe_load(open(ROOT / 'config' / 'anti_grounding.yaml'))
        self.parser = make_parser(ROOT / 'config' / 'language.yaml', ROOT / 'config' / 'waste_categories.yaml')

    def episode(self, world, twin, episode):
        """One episode from init state `episode`: a result record."""
        started = time.monotonic()
        world.reset(episode)
        ports = LiberoPorts(
            world,
            twin,
            self.prompts,
            self.agents,
            ROOT / 'urdf' / 'panda.urdf',
            ROOT / 'config' / 'panda_joint_limits.yaml',
            max_steps=MAX_STEPS[world.suite],
        )
        config = load_config(MpcConfig, self.mpc_config)
        config.num_candidates, config.seed = self.args.candidates, episode
        mpc = AntiGroundingMpc(
            ports.ports(QuietProgress(lambda line: print('   ', line, flush=True))), Arm(twin.model), config
        )
        objects = ports.state().objects
        reason, planner_done = '', False
        try:
            spec = self.parser.parse(world.instruction, Scene(ports.labels(), objects))
            print(f'   grounded: {[s.__dict__ for s in spec.subtasks]}', flush=True)
            planner_done, reason = mpc.run(world.instruction, spec.subtasks)
        except EpisodeEnded as exc:
            reason = str(exc)
        except (Rejected, ValueError) as exc:
            reason = f'{type(exc).__name__}: {exc}'
        return {
            'suite': world.suite,
            'task_id': world.task_id,
            'episode': episode,
            'instruction': world.instruction,
            'success': world.success(),
            'planner_done': planner_done,  # the planner's own verdict (an episode ends when LIBERO's holds)
            'steps': world.steps,
            'mpc_steps': len(mpc.records),
            'wall_s': round(time.monotonic() - started, 1),
            'reason': reason,
            'backend': ', '.join(a.label for a in self.agents),
            'perception': PERCEPTION,
            'strategy': self.args.strategy,
        }


def summarise(records):
    tasks = {}
    for r in records:
        tasks.setdefault((r['suite'], r['task_id']), []).append(r)
    rows = []
    for (suite, task_id), rs in sorted(tasks.items()):
        rows.append(
            {
                'suite': suite,
                'task_id': task_id,
                'instruction': rs[0]['instruction'],
                'episodes': len(rs),
                'success_rate': sum(r['success'] for r in rs) / len(rs),
                'mean_steps': float(np.mean([r['steps'] for r in rs])),
                'mean_wall_s': float(np.mean([r['wall_s'] for r in rs])),
            }
        )
    return rows


def write_results(args, records, rows, command):
    out = ROOT / 'bench' / 'results' / f'libero_eval-{time.strftime("%Y%m%d-%H%M%S")}.json'
    out.write_text(
        json.dumps({'command': command, 'cpu_cores': os.cpu_count(), 'tasks': rows, 'episodes': records}, indent=2)
    )
    print(f'results: {out}')
    if not args.results:
        return
    suites = {}
    for r in records:
        suites.setdefault(r['suite'], []).append(r['success'])
    lines = [
        f'\n## LIBERO evaluation, {time.strftime("%Y-%m-%d %H:%M")}\n',
        f'Command: `{command}`  ',
        f'Strategy {args.strategy}, scorer {records[0]["backend"]}, perception {records[0]["perception"]}, '
        f'{args.candidates} candidates per MPC step, LIBERO step limits {dict((s, MAX_STEPS[s]) for s in suites)}, '
        f"{os.cpu_count()} cores, no GPU. Success is LIBERO's own predicate.\n",
        '| suite | task | instruction | episodes | success | mean steps | mean wall [s] |',
        '|---|---|---|---|---|---|---|',
    ]
    lines += [
        f'| {r["suite"]} | {r["task_id"]} | {r["instruction"]} | {r["episodes"]} | {r["success_rate"] * 100:.0f} % | '
        f'{r["mean_steps"]:.0f} | {r["mean_wall_s"]:.0f} |'
        for r in rows
    ]
    lines += [f'| **{s}** | | | {len(v)} | **{100 * sum(v) / len(v):.0f} %** | | |' for s, v in sorted(suites.items())]
    wins = sum(r['success'] for r in records)
    low, high = wilson_interval(wins, len(records))
    lines.append(
        f'| **overall** | | | {len(records)} | **{100 * wins / len(records):.0f} %** ({wins}/{len(records)}; '
        f'Wilson 95 %: {100 * low:.0f}-{100 * high:.0f} %) | | |'
    )
    reasons = {}
    for r in records:
        if not r['success']:
            key = r['reason'].split(':')[0].split(' after ')[0][:90]
            reasons[key] = reasons.get(key, 0) + 1
    lines.append(
        '\nWhy episodes failed: ' + '; '.join(f'{k} ({n})' for k, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    )
    false_done = sum(r.get('planner_done', False) and not r['success'] for r in records)
    lines.append(
        f"\nPlanner vs LIBERO: the planner judged the task done where LIBERO's predicate did not hold in "
        f"{false_done} of {len(records)} episodes (an episode ends the moment LIBERO's predicate holds, so the "
        'other disagreement cannot occur).'
    )
    with open(ROOT / 'bench' / 'RESULTS.md', 'a') as f:
        f.write('\n'.join(lines) + '\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', nargs='+', required=True, help='suite:ids, e.g. libero_spatial:0,1,2 libero_goal:8')
    parser.add_argument('--episodes', type=int, default=5, help='per task: init states 0 .. episodes-1')
    parser.add_argument('--strategy', default='anti_grounding', choices=STRATEGIES)
    parser.add_argument('--backend', default='twin_critic', help='scorer agent of config/vlm_agents.yaml')
    parser.add_argument('--candidates', type=int, default=16)
    parser.add_argument(
        '--log',
        type=Path,
        default=ROOT / 'bench' / 'results' / 'libero_eval.jsonl',
        help='one JSON line per finished episode; a rerun resumes from it',
    )
    parser.add_argument('--results', action='store_true', help='append the table to bench/RESULTS.md')
    args = parser.parse_args()
    command = 'python bench/libero_eval.py ' + ' '.join(sys.argv[1:])
    tasks = parse_tasks(args.tasks)
    evaluator = Evaluator(args)
    done = done_episodes(args.log)
    records = []
    for suite, task_id in tasks:
        wanted = [e for e in range(args.episodes) if (suite, task_id, e) not in done]
        records += [done[(suite, task_id, e)] for e in range(args.episodes) if (suite, task_id, e) in done]
        if not wanted:
            continue
        print(f'{suite} task {task_id}: creating the LIBERO environment ...', flush=True)
        world = LiberoWorld(suite, task_id)
        twin = LiberoTwin(world.sim.model.get_xml(), world.base_position, [o[0] for o in world.objects()])
        print(f'{suite} task {task_id}: "{world.instruction}", episodes {wanted}', flush=True)
        for episode in wanted:
            record = evaluator.episode(world, twin, episode)
            records.append(record)
            with open(args.log, 'a') as f:
                f.write(json.dumps(record) + '\n')
            print(
                f'  episode {episode}: {"SUCCESS" if record["success"] else "failure"} in {record["steps"]} steps, '
                f'{record["wall_s"]:.0f} s ({record["reason"]})',
                flush=True,
            )
        twin.close()
        world.close()
    rows = summarise(records)
    for r in rows:
        print(f'{r["suite"]} {r["task_id"]}: {r["success_rate"] * 100:.0f} % of {r["episodes"]} ({r["instruction"]})')
    write_results(args, records, rows, command)


if __name__ == '__main__':
    main()
