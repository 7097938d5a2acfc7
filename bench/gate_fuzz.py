"""Fuzz the safety gate by the million: tests/test_gate_fuzz.py's seeded cases (random, adversarial
near every limit, malformed, huge, the review's findings, a share in the tabletop twin) through
SafetyGate and the independent oracle, with the metamorphic checks (faster, permuted, subdivided,
reversed). Counts escapes (the gate accepts, the oracle refuses), crashes (any exception, or the
gate's check 'internal') and metamorphic violations. Prints progress; writes
bench/results/gate_fuzz-<time>.json and appends a section to bench/RESULTS.md.

    . ./twinloop_env.sh && python bench/gate_fuzz.py [--cases 1000000] [--workers 2] [--no-results]
    python bench/gate_fuzz.py --replay SEED:INDEX [--twin]   # one case, with both verdicts
"""

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from twinloop_core.evaluation import git_commit

ROOT = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(ROOT / 'tests'))

import test_gate_fuzz as fuzz  # noqa: E402  (the generator and the oracle live with the CI test)

_harness = None


def _init():
    global _harness
    _harness = fuzz.Harness(twin=True)


def _chunk(job):
    """Run one seeded chunk in a worker: (seed, counts, kinds, findings as dicts, seconds)."""
    seed, cases, twin_cases = job
    findings, counts, kinds, seconds = fuzz.run(_harness, cases, seed, twin_cases)
    out = []
    for what, case, detail, index in findings:
        small = np.size(case.times) <= 64 if not isinstance(case.times, str) else True
        out.append(
            {
                'what': what,
                'kind': case.kind,
                'detail': detail,
                'seed': seed,
                'index': index,
                'twin': bool(case.twin),
                'times': np.asarray(case.times, dtype=object).tolist() if small else f'{np.size(case.times)} points',
            }
        )
    return seed, counts, kinds, out, seconds


def _add(total, part):
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', type=int, default=1_000_000, help='cases in all (twin ones included)')
    parser.add_argument('--twin-share', type=float, default=0.005, help='fraction of cases in the tabletop twin')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--chunk', type=int, default=2000)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--no-results', action='store_true', help='do not append to bench/RESULTS.md')
    parser.add_argument('--replay', help='SEED:INDEX of a finding: print the case and both verdicts')
    parser.add_argument('--twin', action='store_true', help='with --replay: the case is a twin case')
    args = parser.parse_args()
    if args.replay:
        seed, index = (int(x) for x in args.replay.split(':'))
        case, gate, truth = fuzz.replay(fuzz.Harness(twin=True), seed, index, args.twin)
        print(case, '\ngate:', gate, '\noracle:', truth)
        return
    jobs, left, k = [], args.cases, 0
    while left > 0:
        n = min(args.chunk, left)
        twin = int(round(n * args.twin_share))
        jobs.append((args.seed * 1_000_003 + k, n - twin, twin))
        left -= n
        k += 1
    started = time.monotonic()
    counts, kinds, findings, busy = {}, {}, [], 0.0
    print(f'gate fuzz: {args.cases} cases in {len(jobs)} chunks on {args.workers} workers', flush=True)
    with multiprocessing.Pool(args.workers, initializer=_init) as pool:
        for done, (seed, c, kd, found, seconds) in enumerate(pool.imap_unordered(_chunk, jobs), 1):
            _add(counts, c)
            _add(kinds, kd)
            findings += found
            busy += seconds
            elapsed = time.monotonic() - started
            n = counts.get('cases', 0)
            escapes = sum(f['what'] == 'escape' for f in findings)
            crashes = sum(f['what'] == 'crash' for f in findings)
            meta = sum(f['what'] == 'metamorphic' for f in findings)
            print(
                f'  {n:>9d} cases  {elapsed:7.0f} s  {n / elapsed:6.0f}/s  escapes {escapes}  crashes {crashes}  '
                f'metamorphic {meta}  eta {elapsed / done * (len(jobs) - done):5.0f} s',
                flush=True,
            )
    elapsed = time.monotonic() - started
    summary = {
        'cases': counts.get('cases', 0),
        'metamorphic_variants': counts.get('metamorphic', 0),
        'escapes': sum(f['what'] == 'escape' for f in findings),
        'crashes': sum(f['what'] == 'crash' for f in findings),
        'metamorphic_violations': sum(f['what'] == 'metamorphic' for f in findings),
        'seconds': round(elapsed, 1),
        'cpu_seconds': round(busy, 1),
        'workers': args.workers,
        'seed': args.seed,
        'verdicts': {k: v for k, v in sorted(counts.items()) if k not in ('cases', 'metamorphic')},
        'kinds': dict(sorted(kinds.items())),
        'findings': findings[:200],
        'commit': git_commit(ROOT),
        'command': 'python bench/gate_fuzz.py ' + ' '.join(sys.argv[1:]),
    }
    print(
        f'\ncases {summary["cases"]} (+{summary["metamorphic_variants"]} metamorphic variants), '
        f'escapes {summary["escapes"]}, crashes {summary["crashes"]}, '
        f'metamorphic violations {summary["metamorphic_violations"]}, {elapsed:.0f} s'
    )
    print('verdicts:', summary['verdicts'])
    for f in findings[:20]:
        print('  ', f['what'], f['kind'], f['detail'], f'(replay: --replay {f["seed"]}:{f["index"]})')
    stamp = time.strftime('%Y%m%d-%H%M%S')
    out = ROOT / 'bench' / 'results' / f'gate_fuzz-{stamp}.json'
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1, default=str))
    print('wrote', out.relative_to(ROOT))
    if not args.no_results:
        _append_results(summary, out.relative_to(ROOT))


def _append_results(s, path):
    verdicts = ', '.join(f'{k} {v}' for k, v in s['verdicts'].items())
    row = ' | '.join(
        str(x)
        for x in (
            s['cases'],
            s['metamorphic_variants'],
            s['escapes'],
            s['crashes'],
            s['metamorphic_violations'],
            f'{s["seconds"]:.0f}',
            f'{s["cpu_seconds"]:.0f}',
        )
    )
    text = f"""
## Safety gate fuzz, {time.strftime('%Y-%m-%d %H:%M')}

Command: `. ./twinloop_env.sh && {s['command']}` at commit {s['commit']} (working tree with the
gate changes, not yet committed), {s['workers']} workers on 2 shared cores, no GPU. Cases from
tests/test_gate_fuzz.py (random, adversarial near every limit and box, malformed, huge, the
review's findings; {s['kinds'].get('twin', 0)} in the tabletop twin, the rest with no world or
small spheres), each judged by SafetyGate and the independent oracle; 20 % also checked
metamorphically (faster, permuted, subdivided, reversed).

| cases | metamorphic variants | escapes | crashes | metamorphic violations | wall [s] | CPU [s] |
|---|---|---|---|---|---|---|
| {row} |

Gate verdicts: {verdicts}. JSON: {path}.
"""
    with open(ROOT / 'bench' / 'RESULTS.md', 'a') as f:
        f.write(text)


if __name__ == '__main__':
    main()
