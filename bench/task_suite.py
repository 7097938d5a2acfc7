"""The task suite benchmark (AntiGrounding's four categories): every task of bench/tasks.yaml for N
seeds, each seed a random layout (world_sim ~/reset), headless, through the real graph
(config/graphs.yaml sim_demo: world_sim, execution, sim_twin, trajectory_scoring,
task_orchestrator). Success is judged on world_sim's ground truth, not on the planner's belief;
rates come with 95 % Wilson intervals, and every episode compares the planner's own verdict
(its report's outcome, judged on the perceived state) with the ground truth: false done (the
planner said done, the world says not) and false not-done are counted.

A task may add stricter checks on ground truth (`success:` in the tasks file, twinloop_core.judging.CHECKS;
bench/paper_tasks.yaml: a tape roll must be threaded down the post, not resting on its top).

Seeds: the benchmark runs the held-out range of bench/tasks.yaml (5 per task by default);
development runs say --dev and may use only the development range.
Other engines run the same way: --graph names a graph of config/graphs.yaml with a
task_orchestrator, --param sets a node's parameter, --tasks another task file (whose `parameters:` block
sets nodes' parameters too, --param winning: bench/iker_tasks.yaml draws world_sim's physics). The learned
policy (issue 19) through the whole ROS graph:
    python bench/task_suite.py --tasks bench/vla_tasks.yaml --graph sim_demo_vla --strategy vla \
        --param vla_policy.checkpoints_dir=DIR --seeds 20 --timeout 60   (DIR/vga/: a checkpoint)
Writes bench/results/task_suite-<time>.json and appends the table to bench/RESULTS.md.

    . ./twinloop_env.sh && python bench/task_suite.py [--seeds 5] [--categories cluttered] [--strategy anti_grounding]
    . ./twinloop_env.sh && python bench/task_suite.py --dev --seeds 1 --first-seed 7 --no-results
"""

import argparse
import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from twinloop_interfaces.msg import DetectedObjectArray
from std_srvs.srv import Trigger
from twinloop_interfaces.srv import ResetWorld

from twinloop_bringup import graphs, ros_env
from twinloop_bringup.client import InstructionClient, InstructionError
from twinloop_core.engine import ConfigError, UnknownEngine, engine_class, load_config, load_engines
from twinloop_core.evaluation import check_seeds, episode_log, git_commit, machine, seed_ranges, wilson_interval
from twinloop_core.judging import CHECKS, extra_checks, judge
from twinloop_ros import topics
from twinloop_ros.conversions import object_states

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
DEFAULT_TASKS = (ROOT / 'bench' / 'tasks.yaml').resolve()


class Episode:
    def __init__(self, node, executor, supervisor):
        self.node, self.executor = node, executor
        self.truth, self.truth_at = None, 0.0
        node.create_subscription(DetectedObjectArray, topics.GROUND_TRUTH_OBJECTS, self._on_truth, topics.STATE_QOS)
        self.perceived = 0  # perceived object messages so far
        node.create_subscription(DetectedObjectArray, topics.OBJECTS, self._on_perceived, topics.STATE_QOS)
        self.reset_client = node.create_client(ResetWorld, topics.WORLD_RESET)
        self.redetect_client = node.create_client(Trigger, topics.REDETECT)
        self.instructions = InstructionClient(node, executor=executor, check=supervisor.check)

    def _on_truth(self, msg):
        self.truth, self.truth_at = msg, time.monotonic()

    def _on_perceived(self, _msg):
        self.perceived += 1

    def fresh_truth(self):
        since = time.monotonic()
        self.instructions.spin_until(lambda: self.truth_at > since + 0.5, 30, 'fresh ground truth')
        return object_states(self.truth)

    def run(self, instruction, seed, strategy, timeout, checks=()):
        self.instructions.spin_until(self.reset_client.service_is_ready, 60, 'world_sim ~/reset')
        future = self.reset_client.call_async(ResetWorld.Request(seed=seed))
        self.instructions.spin_until(future.done, 30, 'the reset')
        if not future.result().success:
            raise InstructionError(f'reset failed: {future.result().message}')
        world = future.result().message  # the seed and the objects' friction and mass drawn for it
        if self.redetect_client.service_is_ready():  # a new episode: perception starts from scratch
            future = self.redetect_client.call_async(Trigger.Request())
            self.instructions.spin_until(future.done, 10, 'the re-detection')
            # the set in work may still be tracked from the last episode's poses; the next one is detected
            # (seconds: a fixed 3 s wait let a goal start from the last episode's open drawer)
            seen = self.perceived
            self.instructions.spin_until(lambda: self.perceived >= seen + 2, 30, 'a detection of the new layout')
        before = self.fresh_truth()
        started = time.monotonic()
        self.instructions.send(instruction, strategy=strategy, timeout=timeout)
        result = self.instructions.wait(timeout + 60)
        elapsed = time.monotonic() - started
        after = self.fresh_truth()
        if not result.report_path:  # the goal ended without a report (aborted): an error, said as one
            raise InstructionError(f'the goal ended without a report: {result.reason or "aborted"}')
        report = json.loads(Path(result.report_path).with_name('report.json').read_text())
        keep = report.get('constraints', {}).get('do_not_move', ())  # "without touching the mug"
        success, detail = (
            judge(report['subtasks'], before, after, keep) if report['subtasks'] else (False, result.reason)
        )
        if success and checks:  # the task's own stricter checks on ground truth (bench/paper_tasks.yaml)
            success, more = extra_checks(checks, after)
            detail = f'{detail}; {more}'
        return {
            'success': bool(success),
            'ground_truth': detail,
            'planner_done': report['outcome'] == 'succeeded',
            'planner_outcome': report['outcome'],
            'planner_reason': result.reason,
            'world': world,
            'steps': int(result.steps),
            'elapsed_s': round(elapsed, 1),
            'scorer': report.get('scorer', ''),
            'timing_totals': report.get('timing_totals', {}),
            'planning_s_per_step': report.get('planning_s_per_step', {}),
            'report': result.report_path,
        }


def _rates(rows):
    success = sum(e['success'] for e in rows)
    low, high = wilson_interval(success, len(rows))
    judged = [e for e in rows if e.get('planner_done') is not None]
    return {
        'success': success,
        'episodes': len(rows),
        'rate': round(success / max(1, len(rows)), 3),
        'ci95': [round(low, 3), round(high, 3)],
        'false_done': sum(e['planner_done'] and not e['success'] for e in judged),
        'false_not_done': sum(e['success'] and not e['planner_done'] for e in judged),
        'planner_unjudged': len(rows) - len(judged),
    }


def summarize(episodes):
    """Per category and overall: successes, rate with its 95 % Wilson interval, and the planner's
    disagreements with the ground truth (episodes that ended in an error have no planner verdict)."""
    out = {
        c: _rates([e for e in episodes if e['category'] == c]) for c in dict.fromkeys(e['category'] for e in episodes)
    }
    out['overall'] = _rates(episodes)
    return out


def latency(episodes):
    """({MPC stage: mean wall time per step}, steps, {median, p90} of the planning time per step: sync .. scoring)."""
    totals, steps, planning = {}, 0, []
    for e in episodes:
        steps += e['steps']
        planning += e.get('planning_s_per_step', {}).get('each', [])
        for k, v in e['timing_totals'].items():
            totals[k] = totals.get(k, 0.0) + v
    spread = (
        {q: round(float(np.percentile(planning, p)), 3) for q, p in (('median', 50), ('p90', 90))} if planning else {}
    )
    return {k: round(v / max(1, steps), 3) for k, v in totals.items()}, steps, spread


def append_results(summary, timings, steps, episodes, command, env, path, strategy):
    """The run's section of bench/RESULTS.md; timings: (mean per MPC stage, {median, p90} planning per step)."""
    per_step, planning = timings
    lines = [
        f'\n## Task suite ({strategy}), {time.strftime("%Y-%m-%d %H:%M")}\n',
        f'Command: `{command}`  ',
        'Commit: '
        + ', '.join(f'{c} ({n} episodes)' for c, n in Counter(e.get('commit', 'unrecorded') for e in episodes).items())
        + '  ',
        f'Machine: {env["cpu"]}, {env["cores"]} cores, no GPU; scorer: '
        f'{", ".join(sorted({e["scorer"] for e in episodes if e["scorer"]})) or "n/a"}; perception: pose_estimation on '
        "world_sim's rendered cameras; success judged on world_sim's ground truth; planner vs ground truth: "
        'false done = the planner reported success, the world says not; false not-done = the reverse.\n',
        '| category | success | episodes | rate | 95 % CI (Wilson) | false done | false not-done |',
        '|---|---|---|---|---|---|---|',
    ]
    lines += [
        f'| {k} | {v["success"]} | {v["episodes"]} | {100 * v["rate"]:.0f} % '
        f'| {100 * v["ci95"][0]:.0f}-{100 * v["ci95"][1]:.0f} % | {v["false_done"]} | {v["false_not_done"]} |'
        for k, v in summary.items()
    ]
    lines += [
        '',
        f'Mean wall time per MPC step over {steps} steps [s]: '
        + ', '.join(f'{k} {v:.2f}' for k, v in per_step.items())
        + (
            f'; planning per step (sync .. scoring): median {planning["median"]:.2f}, p90 {planning["p90"]:.2f}'
            if planning
            else ''
        ),
        '',
        '| task | seed | success | planner | ground truth | steps | time [s] |',
        '|---|---|---|---|---|---|---|',
    ]
    lines += [
        f'| {e["instruction"]} | {e["seed"]} | {"yes" if e["success"] else "no"} '
        f'| {e.get("planner_outcome", "error")} | {e["ground_truth"]} | {e["steps"]} | {e["elapsed_s"]} |'
        for e in episodes
    ]
    with open(path, 'a') as f:
        f.write('\n'.join(lines) + '\n')


def done_episodes(log):
    """The finished episodes of a --log JSONL file, by (instruction, seed); a rerun skips them."""
    return {(r['instruction'], r['seed']): r for r in episode_log(log)}


def engine_config_dir(strategy, items, out_dir):
    """A copy of config/ in out_dir with ['key.sub=value', ...] (values in YAML) set in <strategy>.yaml
    (an ablation: sampler.exploit=0 drops the experience-guided directions), checked by the engine's
    config class so a misspelt key fails before any episode runs. Returns out_dir."""
    shutil.copytree(ROOT / 'config', out_dir, dirs_exist_ok=True)
    path = Path(out_dir) / f'{strategy}.yaml'
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    for item in items:
        target, sep, value = item.partition('=')
        if not (sep and target):
            raise ValueError(f'--engine-set {item!r}: expected KEY=VALUE (KEY may be dotted: sampler.r0)')
        *parents, key = target.split('.')
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = yaml.safe_load(value)
    with open(ROOT / 'config' / 'task_orchestrator.yaml') as f:  # the engines the orchestrator serves
        load_engines(yaml.safe_load(f)['task_orchestrator']['ros__parameters']['engines'])
    load_config(engine_class(strategy).config_class, data, f'--engine-set for {strategy}')
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return out_dir


def node_parameters(items):
    """['node.key=value', ...] (values in YAML) -> {node: {key: value}}."""
    out = {}
    for item in items:
        target, sep, value = item.partition('=')
        node, dot, key = target.partition('.')
        if not (sep and dot and node and key):
            raise ValueError(f'--param {item!r}: expected NODE.KEY=VALUE')
        out.setdefault(node, {})[key] = yaml.safe_load(value)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=5, help='random layouts per task')
    parser.add_argument(
        '--first-seed', type=int, help="first layout seed (default: the start of the run's seed range in --tasks)"
    )
    parser.add_argument('--dev', action='store_true', help='a development run: development seeds only, never held-out')
    parser.add_argument('--categories', nargs='*', help='run only these categories')
    parser.add_argument('--strategy', default='anti_grounding')
    parser.add_argument('--timeout', type=float, default=240.0, help='per episode [s]')
    parser.add_argument('--tasks', default=str(DEFAULT_TASKS))
    parser.add_argument('--graph', default='sim_demo', help='a graph of config/graphs.yaml with a task_orchestrator')
    parser.add_argument('--param', action='append', default=[], metavar='NODE.KEY=VALUE', help="a node's parameter")
    parser.add_argument(
        '--engine-set',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help="set a key of the strategy's engine config for this run (ablations), e.g. sampler.lambda_r=0",
    )
    parser.add_argument(
        '--log', type=Path, help='one JSON line per finished episode; a rerun with the same file resumes from it'
    )
    parser.add_argument('--no-results', action='store_true', help='do not append to bench/RESULTS.md')
    args = parser.parse_args()
    try:
        parameters = node_parameters(args.param)
    except ValueError as exc:
        parser.error(str(exc))
    ranges = seed_ranges(args.tasks)
    if args.first_seed is None:
        args.first_seed = ranges['development' if args.dev else 'held_out'][0]
    refused = check_seeds(range(args.first_seed, args.first_seed + args.seeds), ranges, args.dev)
    if refused:
        parser.error(refused)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the graph cleanly too
    with open(args.tasks) as f:
        task_file = yaml.safe_load(f)
    categories = task_file['categories']
    for name, values in (task_file.get('parameters') or {}).items():  # the task file's, under --param's
        parameters[name] = {**values, **parameters.get(name, {})}
    tasks = [(c, t) for c, ts in categories.items() if not args.categories or c in args.categories for t in ts]
    unknown = {name for _, t in tasks for item in t.get('success', ()) for name in item} - set(CHECKS)
    if unknown:
        parser.error(f'{args.tasks}: unknown success checks {sorted(unknown)}; known: {sorted(CHECKS)}')
    runs_dir = ROOT / 'runs' / f'task_suite-{time.strftime("%Y%m%d-%H%M%S")}'
    if args.engine_set:
        try:
            config_dir = engine_config_dir(args.strategy, args.engine_set, runs_dir / 'config')
        except (ValueError, ConfigError, UnknownEngine) as exc:
            parser.error(str(exc))
        parameters.setdefault('task_orchestrator', {})['engine_config_dir'] = str(config_dir)
    commit = git_commit(ROOT)
    env = ros_env.dds_environment(ros_env.allocate_domain_id())
    os.environ.update(env)
    done = done_episodes(args.log) if args.log else {}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    episodes = [done[(t['instruction'], seed)] for _, t in tasks for seed in seeds if (t['instruction'], seed) in done]
    for scene in dict.fromkeys(t['scene'] for _, t in tasks):
        todo = [
            (c, t, seed)
            for c, t in tasks
            if t['scene'] == scene
            for seed in seeds
            if (t['instruction'], seed) not in done
        ]
        if not todo:
            continue
        specs = graphs.load(args.graph, {'scene': str(ROOT / 'config' / 'scenes' / f'{scene}.yaml')})
        unknown = set(parameters) - {spec.name for spec in specs}
        if unknown:
            parser.error(f'--param for {sorted(unknown)}: graph {args.graph} has no such node')
        for spec in specs:
            spec.parameters.update(parameters.get(spec.name, {}))
            if spec.name == 'task_orchestrator':
                spec.parameters['runs_dir'] = str(runs_dir)
        context = rclpy.context.Context()
        rclpy.init(context=context)
        with graphs.Supervisor(specs, env) as supervisor:
            node = rclpy.create_node('task_suite', context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            runner = Episode(node, executor, supervisor)
            for category, task, seed in todo:
                try:
                    outcome = runner.run(
                        task['instruction'], seed, args.strategy, args.timeout, task.get('success', ())
                    )
                except (InstructionError, graphs.GraphFailure) as exc:
                    outcome = {
                        'success': False,
                        'ground_truth': f'error: {exc}',
                        'steps': 0,
                        'elapsed_s': 0.0,
                        'scorer': '',
                        'timing_totals': {},
                    }
                record = {'category': category, 'instruction': task['instruction'], 'scene': scene, 'seed': seed}
                episodes.append({**record, 'commit': commit, **outcome})
                if args.log:
                    with open(args.log, 'a') as f:
                        f.write(json.dumps(episodes[-1]) + '\n')
                print(
                    f'[{category}] "{task["instruction"]}" seed {seed}: '
                    f'{"SUCCESS" if outcome["success"] else "failure"} '
                    f'(planner: {outcome.get("planner_outcome", "error")}; {outcome["ground_truth"]}; '
                    f'{outcome["steps"]} steps, {outcome["elapsed_s"]} s)',
                    flush=True,
                )
            node.destroy_node()
        rclpy.shutdown(context=context)
    summary = summarize(episodes)
    per_step, steps, planning = latency(episodes)
    command = 'python bench/task_suite.py ' + ' '.join(
        [f'--seeds {args.seeds}', f'--first-seed {args.first_seed}', f'--strategy {args.strategy}']
        + ([f'--tasks {os.path.relpath(args.tasks, ROOT)}'] if Path(args.tasks).resolve() != DEFAULT_TASKS else [])
        + ([f'--graph {args.graph}'] if args.graph != 'sim_demo' else [])
        + [f'--param {p}' for p in args.param]
        + [f'--engine-set {p}' for p in args.engine_set]
        + (['--dev'] if args.dev else [])
        + ([f'--categories {" ".join(args.categories)}'] if args.categories else [])
    )
    info = machine()
    out = ROOT / 'bench' / 'results' / f'task_suite-{time.strftime("%Y%m%d-%H%M%S")}.json'
    out.write_text(
        json.dumps(
            {
                'command': command,
                'environment': info,
                'summary': summary,
                'mean_step_timings_s': per_step,
                'planning_s_per_step': planning,
                'episodes': episodes,
            },
            indent=2,
        )
    )
    print(json.dumps(summary, indent=2))
    print('mean wall time per MPC step [s]:', per_step, '; planning per step (sync .. scoring) [s]:', planning)
    if not args.no_results:
        append_results(
            summary, (per_step, planning), steps, episodes, command, info, ROOT / 'bench' / 'RESULTS.md', args.strategy
        )
    print(f'results: {out}')


if __name__ == '__main__':
    main()
