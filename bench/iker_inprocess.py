"""The IKER engine on the simulated arm in process (issue 18): the task suite's IKER tasks on held-out
layouts, parsed by the embedded parser and run by the iker engine in a SimWorld whose ground-truth poses
are the perception and whose arm plays the streamed chunks (twinloop_planning.ports.in_process: no ROS,
no camera, no safety gate, faster than real time). A quick measure of what a deployment setting does -
success on the world's ground truth and streamed chunks per layout - before the task suite measures it
through ROS (perception, the gate, real time, its timeout). Each --loop and --chunk-actions value is a
row. The objects' friction and mass are drawn per layout as the task file's world_sim parameters say
(as world_sim draws them through ROS).

Writes bench/results/iker_inprocess-<time>.json and appends a table to bench/RESULTS.md.

    . ./twinloop_env.sh && python bench/iker_inprocess.py [--categories shoe_push book_align three_stage]
        [--seeds 10] [--first-seed 1000] [--loop chunked receding] [--chunk-actions 1 2] [--max-chunks 120]
"""

import argparse
import os
import time
from dataclasses import replace

import numpy as np
import yaml
from iker_twin import save_results

from twinloop_core.engine import Limits, build_engine
from twinloop_core.evaluation import git_commit, machine, wilson_interval
from twinloop_core.judging import extra_checks, judge
from twinloop_iker import engine as iker_engine  # noqa: F401  (registers 'iker')
from twinloop_language.parsers import make_parser
from twinloop_language.scene import Scene
from twinloop_planning.ports.in_process import held_out_layout

ROOT = os.environ['TWINLOOP_ROOT']


def run_layout(task, seed, chunk_actions, max_chunks, parser, solver_seed=0, loop='chunked', physics=None):
    """One held-out layout: {seed, success, ground truth, planner, chunks, iterations, seconds}. physics:
    world_sim's parameters (object_friction, object_mass_scale) the layout's physics are drawn with."""
    physics = physics or {}
    friction, mass_scale = physics.get('object_friction'), physics.get('object_mass_scale')
    with held_out_layout(ROOT, task['scene'], seed, friction, mass_scale) as (_, world, ports, streamer, progress):
        arm = ports.perception
        before = arm.state().objects
        labels = {o.id: o.label for o in world.config.objects}
        spec = parser.parse(task['instruction'], Scene(labels, before))
        engine = build_engine('iker', f'{ROOT}/config')
        deploy = replace(
            engine.config.deploy,
            chunk_actions=replace(engine.config.deploy.chunk_actions, push=chunk_actions),
            loop=loop,
        )
        engine.config = replace(engine.config, deploy=deploy)
        engine.solvers = iker_engine.make_solvers(engine.config, iker_engine.SKILLS)
        for solver in engine.solvers.values():  # another CEM sample stream: the spread a perception error makes
            if hasattr(solver, 'rng'):
                solver.rng = np.random.default_rng(solver_seed)
        started = time.perf_counter()
        try:
            result = engine.run(spec, ports, Limits(max_steps=max_chunks))
            planner = result.detail
        except Exception as ended:  # a goal the engine ends (GoalEnded) counts as a failure, with its reason
            planner = f'{type(ended).__name__}: {ended}'
        after = arm.state().objects
        success, truth = judge(spec.subtasks, before, after)
        if success and task.get('success'):  # the task's own stricter checks, as the task suite applies them
            success, more = extra_checks(task['success'], after)
            truth = f'{truth}; {more}'
        return {
            'seed': seed,
            'success': success,
            'ground_truth': truth,
            'planner': planner,
            'chunks': streamer.chunks,
            'world_s': round(float(world.data.time), 1),  # simulated seconds
            'iterations': len(progress.records),
            'seconds': round(time.perf_counter() - started, 1),
        }


def append_results(rows, command, commit, info, path):
    lines = [
        f'\n## IKER in process: loop and push chunk actions (issue 18), {time.strftime("%Y-%m-%d %H:%M")}\n',
        f'Command: `{command}`  ',
        f'Commit: {commit}  ',
        f'Machine: {info["cpu"]}, {info["cores"]} cores, no GPU. The iker engine (template writer, CEM) in a SimWorld: '
        'ground-truth poses as perception, streamed chunks played without the safety gate, no time limit but the '
        'chunk budget; held-out layouts, friction and mass drawn per layout as through ROS; success judged on the '
        'ground truth. Simulated time: the whole episode, approach and retreats included.\n',
        '| category | loop | push actions per chunk | success | rate | 95 % CI (Wilson) | chunks (all layouts) '
        '| simulated s (all layouts) | chunks per layout |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        low, high = r['wilson95']
        chunks = ' '.join(str(e['chunks']) + ('' if e['success'] else '*') for e in r['episodes'])
        lines.append(
            f'| {r["category"]} | {r["loop"]} | {r["chunk_actions"]} | {r["successes"]}/{len(r["episodes"])} | '
            f'{100 * r["rate"]:.0f} % | {100 * low:.0f}-{100 * high:.0f} % | {r["total_chunks"]} | '
            f'{sum(e["world_s"] for e in r["episodes"]):.0f} | {chunks} |'
        )
    lines.append('\n(* a failed layout)')
    with open(path, 'a') as f:
        f.write('\n'.join(lines) + '\n')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tasks', default=f'{ROOT}/bench/iker_tasks.yaml')
    parser.add_argument('--categories', nargs='+', default=['shoe_push', 'book_align'])
    parser.add_argument('--seeds', type=int, default=10)
    parser.add_argument('--first-seed', type=int, default=1000, help='held-out layouts start here')
    parser.add_argument(
        '--chunk-actions', type=int, nargs='+', default=[1, 2], help='push actions per chunk, a row each'
    )
    parser.add_argument('--loop', nargs='+', default=['chunked'], help='deploy.loop values, a row each')
    parser.add_argument('--max-chunks', type=int, default=120, help='chunked: streamed chunks per layout')
    parser.add_argument('--max-control-steps', type=int, default=600, help='receding: control steps per layout')
    parser.add_argument('--solver-seed', type=int, default=0, help="the CEM solvers' sample stream (the engine's: 0)")
    parser.add_argument('--no-results', action='store_true', help='do not write bench/results or RESULTS.md')
    args = parser.parse_args(argv)
    with open(args.tasks) as f:
        task_file = yaml.safe_load(f)
    categories, physics = task_file['categories'], (task_file.get('parameters') or {}).get('world_sim')
    language = make_parser(f'{ROOT}/config/language.yaml')
    rows = []
    for category in args.categories:
        (task,) = categories[category]
        for loop, actions in [(loop, actions) for loop in args.loop for actions in args.chunk_actions]:
            episodes, budget = [], args.max_control_steps if loop == 'receding' else args.max_chunks
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                episodes.append(run_layout(task, seed, actions, budget, language, args.solver_seed, loop, physics))
                e = episodes[-1]
                print(
                    f'{category} {loop} actions={actions} seed={seed}: {"yes" if e["success"] else "no"}, '
                    f'{e["chunks"]} chunks, {e["iterations"]} iterations, {e["world_s"]} s simulated, '
                    f'{e["seconds"]} s; {e["ground_truth"]}'
                )
            successes = sum(e['success'] for e in episodes)
            rows.append(
                {
                    'category': category,
                    'loop': loop,
                    'chunk_actions': actions,
                    'successes': successes,
                    'rate': successes / len(episodes),
                    'wilson95': wilson_interval(successes, len(episodes)),
                    'total_chunks': sum(e['chunks'] for e in episodes),
                    'episodes': episodes,
                }
            )
            print(
                f'{category} {loop} actions={actions}: {successes}/{len(episodes)}, {rows[-1]["total_chunks"]} chunks'
            )
    if not args.no_results:
        save_results('iker_inprocess', argv, rows, git_commit(ROOT), machine(), append_results)


if __name__ == '__main__':
    main()
