"""The paraphrase benchmark (issue 17): bench/language/instructions.yaml over bench/language/scenes.yaml.

For every accept case the parser's task must match the expected one (steps in order: action,
object, relation class, reference(s), do-not-move set, speed); for every reject case it must
reject with a reason containing one of the expected words. Reports accuracy per phenomenon and
split, the rejection rate, and how many instructions were grounded to an object the scene does
not have (reject cases of unknown objects that produced a task). The embedded parser always; an
LLM parser too with --agent NAME (an agent of config/vlm_agents.yaml, e.g. local_vllm).

    . ./twinloop_env.sh && python bench/language_bench.py [--cases heldout.yaml] [--split dev|test|heldout|all]
        [--agent NAME] [--failures] [--results]

instructions.yaml (443 cases, dev/test split) was written blind to the parser; the parser was tuned
on dev, then on test after its first run. heldout.yaml (231 cases) was written later, blind again,
and measured once before any change it could inform.

Writes bench/results/language-<time>.json; --results appends a summary to bench/RESULTS.md.
"""

import argparse
import collections
import json
import os
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from twinloop_core.evaluation import git_commit
from twinloop_language.parsers import make_parser
from twinloop_language.scene import Rejected, Scene

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / 'bench' / 'language'
SAME_CLASS = {'': 'in/on', 'in': 'in/on', 'on': 'in/on'}  # into / onto the destination: one class


def load_scenes():
    """{name: Scene} from bench/language/scenes.yaml."""
    with open(DATA / 'scenes.yaml') as f:
        scenes = yaml.safe_load(f)['scenes']
    return {
        name: Scene(
            {o['id']: o['label'] for o in objects},
            {o['id']: (tuple(o['position']), (1.0, 0.0, 0.0, 0.0), tuple(o['size'])) for o in objects},
        )
        for name, objects in scenes.items()
    }


def step_key(action, obj, relation, reference, reference2):
    """A comparable step: between is symmetric, in/on one class."""
    refs = tuple(sorted(r for r in (reference, reference2) if r)) if relation == 'between' else (reference or '',)
    return (action, obj, SAME_CLASS.get(relation or '', relation) if action != 'pick' else '', refs)


def expected_task(expect):
    """(steps, do-not-move set, speed) of a case's expectation."""
    steps = [
        step_key(s['action'], s['object'], s.get('relation', ''), s.get('reference', ''), s.get('reference2', ''))
        for s in expect['steps']
    ]
    return steps, frozenset(expect.get('do_not_move', [])), expect.get('speed', 'normal')


def produced_task(task):
    """(steps, do-not-move set, speed) of a parsed TaskSpec."""
    steps = [
        step_key(s.action, s.object_id, s.relation if s.action != 'pick' else '', s.destination_id, s.reference2_id)
        for s in task.subtasks
    ]
    return steps, frozenset(task.constraints.do_not_move), task.constraints.speed


def run(parser, cases, scenes):
    """One record per case: id, phenomenon, split, kind (accept/reject), passed, what came out."""
    records = []
    for case in tqdm(cases, desc=parser.label[:40], unit='case'):
        scene = scenes[case['scene']]
        started = time.perf_counter()
        try:
            task, reason = parser.parse(case['text'], scene), ''
        except Rejected as exc:
            task, reason = None, str(exc)
        elapsed = time.perf_counter() - started
        record = {
            'id': case['id'],
            'phenomenon': case['phenomenon'],
            'split': case['split'],
            'text': case['text'],
            'kind': 'reject' if 'reject' in case else 'accept',
            'latency_s': round(elapsed, 4),
        }
        if 'reject' in case:
            record['passed'] = task is None and any(w.lower() in reason.lower() for w in case['reject'])
            record['got'] = reason if task is None else [list(map(str, k)) for k in produced_task(task)[0]]
            record['grounded_unknown'] = task is not None and case['phenomenon'] == 'unknown_object'
        else:
            want = expected_task(case['expect'])
            got = produced_task(task) if task else None
            record['passed'] = got == want
            record['got'] = reason if task is None else repr(got)
            record['want'] = repr(want)
        records.append(record)
    return records


def summary(records):
    """Accuracy per phenomenon and split, acceptance/rejection rates."""
    table = collections.defaultdict(lambda: [0, 0])
    for r in records:
        for key in ((r['phenomenon'], r['split']), (r['phenomenon'], 'all'), ('ALL ' + r['kind'], r['split'])):
            table[key][0] += r['passed']
            table[key][1] += 1
        table[('ALL ' + r['kind'], 'all')][0] += r['passed']
        table[('ALL ' + r['kind'], 'all')][1] += 1
    return {f'{p}|{s}': {'passed': a, 'cases': n, 'rate': round(a / n, 3)} for (p, s), (a, n) in sorted(table.items())}


def print_summary(label, table, records):
    print(f'\n== {label}')
    phenomena = sorted({k.split('|')[0] for k in table}, key=lambda p: (p.startswith('ALL'), p))
    print(f'{"phenomenon":28s} {"dev":>11s} {"test":>11s} {"all":>11s}')
    for p in phenomena:
        cells = []
        for split in ('dev', 'test', 'all'):
            c = table.get(f'{p}|{split}')
            cells.append(f'{c["passed"]:3d}/{c["cases"]:3d} {100 * c["rate"]:3.0f}%' if c else '')
        print(f'{p:28s} ' + ' '.join(f'{c:>11s}' for c in cells))
    unknown = sum(r.get('grounded_unknown', False) for r in records)
    print(f'grounded to an object the scene does not have: {unknown}')
    latencies = sorted(r['latency_s'] for r in records)
    print(
        f'latency per instruction: median {1000 * latencies[len(latencies) // 2]:.0f} ms, '
        f'max {1000 * latencies[-1]:.0f} ms'
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--split', choices=('dev', 'test', 'heldout', 'all'), default='all')
    parser.add_argument('--cases', default='instructions.yaml', help='case file in bench/language (heldout.yaml)')
    parser.add_argument('--agent', default='', help='also run the LLM parser with this agent of config/vlm_agents.yaml')
    parser.add_argument('--failures', action='store_true', help='print every failed case')
    parser.add_argument('--results', action='store_true', help='append the summary to bench/RESULTS.md')
    args = parser.parse_args()
    with open(DATA / args.cases) as f:
        cases = [c for c in yaml.safe_load(f)['cases'] if args.split in ('all', c['split'])]
    scenes = load_scenes()
    config = ROOT / 'config'
    parsers = [make_parser(config / 'language.yaml', config / 'waste_categories.yaml')]
    if args.agent:
        parsers.append(make_parser(config / 'language.yaml', config / 'waste_categories.yaml', parser=args.agent))
    out = {'commit': git_commit(ROOT), 'file': args.cases, 'split': args.split, 'cases': len(cases), 'parsers': {}}
    for p in parsers:
        records = run(p, cases, scenes)
        table = summary(records)
        print_summary(p.label, table, records)
        if args.failures:
            for r in records:
                if not r['passed']:
                    print(
                        f'FAIL {r["id"]} [{r["split"]}] {r["text"]!r}\n     got  {r["got"]}\n'
                        f'     want {r.get("want", "reject")}'
                    )
        out['parsers'][p.label] = {
            'summary': table,
            'grounded_unknown': sum(r.get('grounded_unknown', False) for r in records),
            'records': records,
        }
    os.makedirs(ROOT / 'bench' / 'results', exist_ok=True)
    path = ROOT / 'bench' / 'results' / f'language-{time.strftime("%Y%m%d-%H%M%S")}.json'
    path.write_text(json.dumps(out, indent=1))
    print(f'\nwrote {path.relative_to(ROOT)}')
    if args.results:
        with open(ROOT / 'bench' / 'RESULTS.md', 'a') as f:
            f.write(f'\n## Language benchmark ({time.strftime("%Y-%m-%d")}, commit {out["commit"]})\n\n')
            f.write(f'`python bench/language_bench.py --cases {args.cases} --split {args.split}`; ')
            f.write(f'{len(cases)} cases; {path.name}\n\n')
            for label, result in out['parsers'].items():
                s = result['summary']
                f.write(f'- {label}: accept {s["ALL accept|all"]["passed"]}/{s["ALL accept|all"]["cases"]}, ')
                f.write(f'reject {s["ALL reject|all"]["passed"]}/{s["ALL reject|all"]["cases"]}, ')
                f.write(f'grounded to a missing object: {result["grounded_unknown"]}\n')


if __name__ == '__main__':
    main()
