"""Offline policy optimisation of the structured VQA: AntiGrounding's meta-VLM stage
(shared/seeds/000, "Offline Policy Optimization"), on the project's logged runs.

The data are the task suite's episodes (its --log JSON lines: ground truth per episode, and the
path of the planner's report). Every MPC step of a report lists its candidates with their fused
dimension scores, whether the twin's rollout ended with the stage done (`reaches`,
Stage.done_in_twin) and which was chosen. A step where some safe candidate reaches and another
does not is a ranking example: the weights should score every reaching candidate above every
non-reaching one. From those steps:

- patterns: in the steps where a non-reaching candidate was chosen over a reaching one (a
  regret), which dimensions carried it, per stage kind (the bias patterns a meta-VLM reviews);
- a reviewer proposes new weights, and may rewrite the sub-questions: `log_analyst` (embedded,
  NOT a VLM) fits the weights on the simplex to the ranking examples (mean pairwise hinge loss,
  kept near the current weights); an agent of config/vlm_agents.yaml (any OpenAI-compatible VLM)
  reads the patterns and the failed episodes and answers with weights and rewrites as JSON;
- the proposal becomes a new versioned prompts file (version + 1, with what produced it), a
  candidate only: it is kept if the held-out task suite's success rises (`compare`, paired by
  task and seed, with a bootstrap interval).

Training episodes must come from the development seeds of the task file: held-out ones are refused.

    python -m twinloop_antigrounding.offline fit --logs TRAIN.jsonl --out config/vqa_prompts_v2.yaml \\
        [--validate HELD_OUT.jsonl] [--reviewer log_analyst|AGENT]
    python bench/task_suite.py --param trajectory_scoring.prompts_file=config/vqa_prompts_v2.yaml --log NEW.jsonl
    python -m twinloop_antigrounding.offline compare --baseline HELD_OUT.jsonl --candidate NEW.jsonl
"""

import argparse
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from twinloop_core.evaluation import episode_log, seed_ranges
from twinloop_scoring.vlm import VLMError, VLMRequest

MARGIN = 0.02  # a reaching candidate should outscore a non-reaching one by this (totals are in [0, 1])
GRID = 0.05  # the weights' grid on the simplex
CLOSENESS = 0.01  # the fit's penalty per unit of L1 distance from the current weights (hinge losses are ~0.01-0.02)
MAX_QUESTION = 300  # [characters] of a rewritten sub-question


@dataclass
class RankingStep:
    """One MPC step with something to learn from: candidates' dimension scores (J, K) and which reach
    the stage in the twin."""

    stage: str  # grasp, lift, carry, release
    dimensions: np.ndarray
    reaches: np.ndarray


def episodes(logs):
    """The episode records of task-suite logs, each with its report (report.json) loaded ('report_data';
    None when the report is gone)."""
    out = []
    for log in logs:
        for record in episode_log(log):
            path = Path(record.get('report') or '').with_name('report.json')
            data = json.loads(path.read_text()) if record.get('report') and path.is_file() else None
            out.append({**record, 'report_data': data})
    return out


def ranking_steps(reports, names):
    """The ranking examples of reports (dicts of report.json): steps with a reaching and a
    non-reaching safe candidate (not failed, no collision in the twin), scores in `names` order."""
    out = []
    for report in reports:
        for step in report.get('steps', []):
            rows = [
                c
                for c in step.get('candidates', [])
                if not c.get('failed') and not c.get('collisions') and c.get('reaches') is not None
            ]
            reaches = np.array([bool(c['reaches']) for c in rows])
            if not (reaches.any() and not reaches.all()):
                continue
            dims = np.array([[float(c['dimensions'].get(n, 0.0)) for n in names] for c in rows])
            out.append(RankingStep(step['stage'].split()[0], dims, reaches))
    return out


def regret(steps, weights):
    """Share of steps whose best-scored candidate under `weights` does not reach (0 without steps)."""
    if not steps:
        return 0.0
    return float(np.mean([not s.reaches[int(np.argmax(s.dimensions @ weights))] for s in steps]))


def _pair_differences(steps):
    """(P, K) score differences reaching - non-reaching of every pair, and (P,) weights giving every step equal say."""
    diffs, share = [], []
    for s in steps:
        good, bad = s.dimensions[s.reaches], s.dimensions[~s.reaches]
        d = (good[:, None, :] - bad[None, :, :]).reshape(-1, s.dimensions.shape[1])
        diffs.append(d)
        share.append(np.full(len(d), 1.0 / (len(d) * len(steps))))
    return np.concatenate(diffs), np.concatenate(share)


def hinge(steps, weights):
    """Mean over steps of the mean pairwise hinge loss max(0, MARGIN - w . (reaching - non-reaching))."""
    diffs, share = _pair_differences(steps)
    return float(np.maximum(0.0, MARGIN - diffs @ weights) @ share)


def simplex_grid(k, step=GRID):
    """Every weight vector of k non-negative multiples of `step` summing to 1, as (N, k)."""
    n = round(1 / step)
    points = [c for c in itertools.product(range(n + 1), repeat=k - 1) if sum(c) <= n]
    return np.array([[*c, n - sum(c)] for c in points], float) / n


def fit_weights(steps, current, step=GRID, closeness=CLOSENESS):
    """The weights minimising hinge + closeness * |w - current|_1 on the simplex grid (ties: nearest to
    the current ones). A dimension the examples never tell apart (safety: candidates that collide are
    never chosen, so none is an example) keeps its weight; the others share the rest."""
    current = np.asarray(current, float)
    diffs, share = _pair_differences(steps)
    free = np.abs(diffs).max(axis=0) > 1e-9
    if not free.any():
        return current
    shares = simplex_grid(int(free.sum()), step)
    grid = np.tile(current, (len(shares), 1))
    grid[:, free] = shares * (1.0 - current[~free].sum())
    losses = np.concatenate(
        [np.maximum(0.0, MARGIN - chunk @ diffs.T) @ share for chunk in np.array_split(grid, max(1, len(grid) // 256))]
    )
    distance = np.abs(grid - current).sum(axis=1)
    best = np.lexsort((distance, np.round(losses + closeness * distance, 9)))[0]
    return grid[best]


def patterns(steps, weights, names):
    """Per stage kind: steps, regrets under `weights`, and the mean score difference (chosen-by-weights
    minus best reaching candidate) per dimension in the regret steps: what carried the wrong choices."""
    out = {}
    for stage in dict.fromkeys(s.stage for s in steps):
        mine = [s for s in steps if s.stage == stage]
        gaps = []
        for s in mine:
            totals = s.dimensions @ weights
            top = int(np.argmax(totals))
            if not s.reaches[top]:
                best_reaching = int(np.flatnonzero(s.reaches)[np.argmax(totals[s.reaches])])
                gaps.append(s.dimensions[top] - s.dimensions[best_reaching])
        out[stage] = {
            'steps': len(mine),
            'regrets': len(gaps),
            'chosen_minus_reaching': {n: round(float(v), 3) for n, v in zip(names, np.mean(gaps, axis=0))}
            if gaps
            else {},
        }
    return out


class LogAnalyst:
    """The embedded reviewer, NOT a VLM: fits the dimension weights to the ranking examples; it
    leaves the sub-questions as they are."""

    label = 'log analyst (not a VLM): simplex fit of the weights to twin-judged ranking examples'

    def propose(self, config, steps, failures):
        """(weights by name, question rewrites by name, rationale) for a PromptConfig."""
        weights = fit_weights(steps, config.weights)
        return {d.name: float(w) for d, w in zip(config.dimensions, weights)}, {}, 'fitted to the ranking examples'


class VlmReviewer:
    """A meta-VLM over the OpenAI-compatible protocol (an agent of vlm_agents.yaml): reads the current
    template, the bias patterns and the failed episodes; answers with weights and question rewrites."""

    def __init__(self, backend):
        self.backend = backend
        self.label = f'meta-VLM {backend.label}:{backend.model}'

    def propose(self, config, steps, failures):
        """(weights by name, question rewrites by name, rationale) from the meta-VLM's reply."""
        names = [d.name for d in config.dimensions]
        prompt = (
            'You review the evaluation template a robot planner uses to score candidate motions. Each '
            'candidate gets 0-10 per sub-question; the total is the weighted sum (weights sum to 1).\n'
            'Current sub-questions and weights:\n'
            + '\n'.join(f'- {d.name} (weight {d.weight:.2f}): {d.question}' for d in config.dimensions)
            + '\n\nBias patterns from logged runs, per stage: steps with a candidate that completes the stage in '
            'the simulator, how often the weights chose one that does not, and the mean score difference '
            '(chosen minus the best completing candidate) per sub-question in those steps:\n'
            + json.dumps(patterns(steps, config.weights, names), indent=1)
            + '\n\nFailed episodes (instruction: why):\n'
            + '\n'.join(f'- {f}' for f in failures[:20])
            + '\n\nPropose new weights (one per sub-question, non-negative) and, where a sub-question misleads, '
            'a rewrite of it. Reply with JSON only: {"weights": {name: number}, "questions": {name: text}, '
            '"rationale": text}.'
        )
        schema = {
            'type': 'object',
            'properties': {
                'weights': {'type': 'object', 'properties': {n: {'type': 'number'} for n in names}},
                'questions': {'type': 'object', 'properties': {n: {'type': 'string'} for n in names}},
                'rationale': {'type': 'string'},
            },
            'required': ['weights', 'rationale'],
        }
        reply = self.backend.complete([VLMRequest(prompt, [], json_schema=schema, max_tokens=1500)])[0]
        if isinstance(reply, VLMError):
            raise ValueError(f'the meta-VLM did not answer: {reply}')
        return parse_proposal(reply.text, names)


def parse_proposal(text, names):
    """(weights, questions, rationale) of a reviewer's JSON reply, checked: every weight named, finite
    and non-negative with a positive sum (normalised here), questions non-empty text of known
    dimensions; ValueError with the reason otherwise."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'the reply is not JSON ({exc}): {str(text)[:200]!r}') from None
    if not isinstance(data, dict) or not isinstance(data.get('weights'), dict):
        raise ValueError(f'the reply has no "weights" object: {str(text)[:200]!r}')
    weights = data['weights']
    if set(weights) != set(names):
        raise ValueError(f'weights must name exactly {names}, got {sorted(weights)}')
    values = {}
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f'weight {name}={value!r} is not a finite non-negative number')
        values[name] = float(value)
    total = sum(values.values())
    if total <= 0:
        raise ValueError('the weights sum to zero')
    questions = data.get('questions') or {}
    if not isinstance(questions, dict) or set(questions) - set(names):
        raise ValueError(f'questions must be an object keyed by {names}')
    for name, question in questions.items():
        if not isinstance(question, str) or not question.strip() or len(question) > MAX_QUESTION:
            raise ValueError(f'question {name!r} must be non-empty text of at most {MAX_QUESTION} characters')
    rationale = data.get('rationale', '')
    return {n: values[n] / total for n in names}, {n: q.strip() for n, q in questions.items()}, str(rationale)[:500]


def rounded_weights(weights, names, digits=3):
    """Weights rounded to `digits`, the rounding remainder on the largest so they sum to exactly 1."""
    out = {n: round(weights[n], digits) for n in names}
    largest = max(names, key=lambda n: out[n])
    out[largest] = round(out[largest] + 1.0 - sum(out.values()), digits)
    return out


def write_prompts(base_path, weights, questions, out_path, provenance):
    """A new prompts file from base_path: version + 1, the weights and rewritten questions, and what
    produced it (`optimised`)."""
    data = yaml.safe_load(Path(base_path).read_text())
    names = [d['name'] for d in data['dimensions']]
    new = rounded_weights(weights, names)
    for d in data['dimensions']:
        d['weight'] = new[d['name']]
        d['question'] = questions.get(d['name'], d['question'])
    data['version'] = int(data['version']) + 1
    data['optimised'] = {'from_version': int(data['version']) - 1, **provenance}
    header = (
        f'# Structured VQA prompts v{data["version"]}, written by offline optimisation '
        f'(twinloop_antigrounding.offline) from {Path(base_path).name} v{data["version"] - 1}.\n'
        '# A candidate until the held-out task suite says it is better (offline compare).\n'
    )
    Path(out_path).write_text(header + yaml.safe_dump(data, sort_keys=False, width=110))
    return data['version']


def paired_gain(baseline, candidate, resamples=10000, seed=0):
    """Success gain of candidate over baseline on the episodes both ran (same instruction and seed):
    {'pairs', 'baseline', 'candidate', 'gain', 'ci95'} with a paired bootstrap interval, and the mean
    MPC steps of the pairs both solved ('steps': baseline, candidate)."""
    a = {(r['instruction'], r['seed']): r for r in baseline}
    b = {(r['instruction'], r['seed']): r for r in candidate}
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError('no episode (instruction, seed) ran in both logs')
    x = np.array([bool(a[k]['success']) for k in keys], float)
    y = np.array([bool(b[k]['success']) for k in keys], float)
    solved = [k for k in keys if a[k]['success'] and b[k]['success']]
    steps = [round(float(np.mean([r[k].get('steps', 0) for k in solved])), 1) if solved else None for r in (a, b)]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), (resamples, len(keys)))
    gains = (y[draws] - x[draws]).mean(axis=1)
    return {
        'pairs': len(keys),
        'baseline': round(float(x.mean()), 3),
        'candidate': round(float(y.mean()), 3),
        'gain': round(float((y - x).mean()), 3),
        'ci95': [round(float(np.percentile(gains, 2.5)), 3), round(float(np.percentile(gains, 97.5)), 3)],
        'steps': {'both_solved': len(solved), 'baseline': steps[0], 'candidate': steps[1]},
    }


def _check_development(records, tasks_file):
    first, last = seed_ranges(tasks_file)['held_out']
    held_out = sorted({r['seed'] for r in records if first <= r['seed'] < last})
    if held_out:
        raise SystemExit(f'training logs contain held-out seeds {held_out}: fit on development seeds only')


def _fit(args):
    from twinloop_scoring import agents, vqa

    config = vqa.PromptConfig.from_yaml(args.prompts)
    names = [d.name for d in config.dimensions]
    train = episodes(args.logs)
    _check_development(train, args.tasks)
    steps = ranking_steps([e['report_data'] for e in train if e['report_data']], names)
    if not steps:
        raise SystemExit('no ranking example in the training logs (reports without "reaches": re-run them)')
    if args.reviewer == 'log_analyst':
        reviewer = LogAnalyst()
    else:
        backend = agents.load(args.agents, [args.reviewer])[0].backend
        if not backend.is_vlm:
            raise SystemExit(f'agent {args.reviewer!r} ({backend.label}) is not a VLM: use --reviewer log_analyst')
        reviewer = VlmReviewer(backend)
    failures = [f'{e["instruction"]}: {e.get("ground_truth", "")}' for e in train if not e['success']]
    weights, questions, rationale = reviewer.propose(config, steps, failures)
    new = np.array([weights[n] for n in names])
    summary = {
        'reviewer': reviewer.label,
        'training': {'episodes': len(train), 'ranking_steps': len(steps), 'logs': [str(p) for p in args.logs]},
        'weights_before': dict(zip(names, config.weights.round(3).tolist())),
        'weights_after': rounded_weights(weights, names),
        'questions_rewritten': sorted(questions),
        'rationale': rationale,
        'train_regret': {'before': round(regret(steps, config.weights), 3), 'after': round(regret(steps, new), 3)},
        'patterns_before': patterns(steps, config.weights, names),
    }
    if args.validate:
        held = [e['report_data'] for e in episodes(args.validate) if e['report_data']]
        check = ranking_steps(held, names)
        summary['held_out_regret'] = {
            'steps': len(check),
            'before': round(regret(check, config.weights), 3),
            'after': round(regret(check, new), 3),
        }
    provenance = {'by': reviewer.label, 'training_episodes': len(train), 'ranking_steps': len(steps)}
    summary['version'] = write_prompts(args.prompts, weights, questions, args.out, provenance)
    summary['out'] = str(args.out)
    print(json.dumps(summary, indent=2))
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=2))


def _compare(args):
    result = paired_gain(episode_log(args.baseline), episode_log(args.candidate))
    result['verdict'] = (
        'kept: held-out success rose' if result['gain'] > 0 else 'rejected: held-out success did not rise'
    )
    print(json.dumps(result, indent=2))


def main(argv=None):
    """The command line: fit or compare."""
    root = Path(os.environ.get('TWINLOOP_ROOT', Path.cwd()))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    fit = sub.add_parser('fit', help='propose a new prompts file from training logs')
    fit.add_argument('--logs', nargs='+', type=Path, required=True, help='task-suite --log files (development seeds)')
    fit.add_argument('--out', type=Path, required=True, help='the new prompts YAML')
    fit.add_argument('--prompts', type=Path, default=root / 'config' / 'vqa_prompts.yaml')
    fit.add_argument('--reviewer', default='log_analyst', help='log_analyst (embedded) or an agent of --agents')
    fit.add_argument('--agents', type=Path, default=root / 'config' / 'vlm_agents.yaml')
    fit.add_argument('--tasks', type=Path, default=root / 'bench' / 'tasks.yaml', help='its seed ranges')
    fit.add_argument('--validate', nargs='*', type=Path, help='held-out logs: regret before/after, offline')
    fit.add_argument('--report', type=Path, help='also write the summary JSON here')
    compare = sub.add_parser('compare', help='held-out success of a candidate against the baseline, paired')
    compare.add_argument('--baseline', type=Path, required=True)
    compare.add_argument('--candidate', type=Path, required=True)
    args = parser.parse_args(argv)
    {'fit': _fit, 'compare': _compare}[args.command](args)


if __name__ == '__main__':
    main()
