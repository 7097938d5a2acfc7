"""Structured VQA: one request per (agent, view) covering every candidate drawn in that view,
sub-questions over the five dimensions, replies validated against a schema. A malformed,
refused or truncated reply is retried, then recorded as a failure for that view (never a crash,
never a silent zero). The fused result keeps every intermediate number."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import yaml

from twinloop_core.ports import Score
from twinloop_scoring import fusion
from twinloop_scoring.vlm import VLMError, VLMRequest


@dataclass
class Dimension:
    """One scored dimension: its name, its weight in the total and the sub-question asked about it."""

    name: str
    weight: float
    question: str


@dataclass
class PromptConfig:
    """The structured VQA prompts (config/vqa_prompts.yaml): dimensions, system prompt, template, fusion settings."""

    version: int
    dimensions: list
    system: str
    template: str
    lambda_c: float = 1.0
    retries: int = 1

    @classmethod
    def from_yaml(cls, path):
        """Load a prompts YAML; ValueError unless the dimension weights sum to 1."""
        with open(path) as f:
            data = yaml.safe_load(f)
        dims = [Dimension(d['name'], float(d['weight']), d['question']) for d in data['dimensions']]
        if not np.isclose(sum(d.weight for d in dims), 1.0):
            raise ValueError(f'{path}: dimension weights must sum to 1')
        return cls(
            int(data['version']),
            dims,
            data['system'],
            data['template'],
            float(data.get('lambda_c', 1.0)),
            int(data.get('retries', 1)),
        )

    @property
    def weights(self):
        """Dimension weights (K,), in dimension order."""
        return np.array([d.weight for d in self.dimensions])

    def schema(self, candidate_ids):
        """JSON schema of a reply: view_clarity and 0-10 scores per dimension for each candidate."""
        score = {'type': 'number', 'minimum': 0, 'maximum': 10}
        item = {
            'type': 'object',
            'additionalProperties': False,
            'properties': {
                'id': {'type': 'string', 'enum': list(candidate_ids)},
                'rationale': {'type': 'string'},
                **{d.name: score for d in self.dimensions},
            },
            'required': ['id', 'rationale'] + [d.name for d in self.dimensions],
        }
        return {
            'type': 'object',
            'additionalProperties': False,
            'properties': {'view_clarity': score, 'candidates': {'type': 'array', 'items': item}},
            'required': ['view_clarity', 'candidates'],
        }


@dataclass
class View:
    """One rendered view to score: the image with candidates drawn, and which colour is which candidate."""

    name: str
    image: np.ndarray | None  # rgb8 with the candidates drawn; None for scorers that read no image (reads_images)
    legend: dict  # candidate id -> colour name
    facts: dict = field(default_factory=dict)  # per-view facts for non-visual critics (e.g. visibility)


@dataclass
class Agent:
    """One scoring agent: a VLM backend at a sampling temperature."""

    backend: object  # a VLMBackend
    temperature: float = 0.0

    @property
    def label(self):
        """backend:model@T<temperature>, naming the agent in results."""
        return f'{self.backend.label}:{self.backend.model}@T{self.temperature:g}'


class ReplyError(ValueError):
    """A reply that is not valid structured VQA; the message says what is wrong."""


def parse_reply(text, config, candidate_ids):
    """(clarity, {id: (scores (K,), rationale)}) with scores in [0, 1]; ReplyError when invalid."""
    match = re.search(r'\{.*\}', text or '', re.DOTALL)
    if not match:
        raise ReplyError(f'no JSON object in the reply: {text[:80]!r}')
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ReplyError(f'invalid JSON: {exc}') from exc
    if not isinstance(data, dict) or 'candidates' not in data or 'view_clarity' not in data:
        raise ReplyError('reply lacks "view_clarity" or "candidates"')

    def number(value, what):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
            raise ReplyError(f'{what} must be a number in 0..10, got {value!r}')
        return float(value) / 10.0

    clarity = number(data['view_clarity'], 'view_clarity')
    out = {}
    for entry in data['candidates'] if isinstance(data['candidates'], list) else []:
        if not isinstance(entry, dict) or entry.get('id') not in candidate_ids:
            raise ReplyError(f'unknown candidate entry {entry!r:.80}')
        scores = np.array([number(entry.get(d.name), f'{entry["id"]}.{d.name}') for d in config.dimensions])
        out[entry['id']] = (scores, str(entry.get('rationale', '')))
    missing = set(candidate_ids) - set(out)
    if missing:
        raise ReplyError(f'no scores for candidates {sorted(missing)}')
    return clarity, out


TWIN_VIEW = 'twin'  # the one view, without an image, shown to scorers that read the twin instead (twin_critic)


def reads_images(agents):
    """Whether any of the agents looks at the rendered views (a VLM does; twin_critic reads the twin)."""
    return any(agent.backend.is_vlm for agent in agents)


def build_request(config, instruction, view, candidate_ids, temperature, facts=None):
    """The VLMRequest for one view: the template filled with instruction, legend and questions, with the schema."""
    fields = ', '.join(f'"{d.name}": <0-10>' for d in config.dimensions)
    questions = '\n'.join(f'- {d.name}: {d.question}' for d in config.dimensions)
    legend = ', '.join(f'{colour} -> {cid}' for cid, colour in view.legend.items())
    prompt = config.template.format(
        instruction=instruction, view=view.name, legend=legend, questions=questions, fields=fields
    )
    images = [] if view.image is None else [view.image]
    return VLMRequest(prompt, images, config.system, config.schema(candidate_ids), temperature, facts=facts or {})


@dataclass
class ScoringResult:
    """The fused scores of a request with rationales, failures, agents and the request count."""

    candidate_ids: list
    fused: fusion.Fusion
    rationales: dict  # candidate id -> list of rationale strings
    failures: list  # (agent, view, reason)
    agents: list  # agent labels
    requests: int
    prompt_version: int

    @property
    def backends(self):
        """The distinct agent labels, sorted."""
        return sorted(set(self.agents))

    def candidate_scores(self, config, models=''):
        """A Score per candidate, in candidate order: what in-process ports return and the scoring
        node sends (twinloop_ros.codec.score_msg)."""
        backend = ', '.join(self.backends)
        return [
            Score(
                total=float(self.fused.totals[j]),
                failed=False,
                backend=backend,
                model=models,
                dimensions={
                    d.name: round(float(self.fused.dimension_scores[j, k]), 2) for k, d in enumerate(config.dimensions)
                },
                weights={d.name: d.weight for d in config.dimensions},
                rationale='\n'.join(self.rationales[cid]),
            )
            for j, cid in enumerate(self.candidate_ids)
        ]


def failed_scores(candidate_ids, reason, agents):
    """A failed Score per candidate: no agent produced a valid score."""
    backend = ', '.join(a.label for a in agents)
    return [
        Score(total=0.0, failed=True, backend=backend, model='', dimensions={}, rationale=reason) for _ in candidate_ids
    ]


def _ask(config, instruction, views, candidate_ids, agent, facts):
    """One agent on every view, retrying malformed replies.

    Returns (clarity (V,), scores (V, J, K), rationales, failures, requests).
    """
    v_count, j_count, k_count = len(views), len(candidate_ids), len(config.dimensions)
    scores, clarity = np.full((v_count, j_count, k_count), np.nan), np.full(v_count, np.nan)
    rationales, requests, last_error = [], 0, {}
    pending = list(range(v_count))
    for _ in range(config.retries + 1):
        if not pending:
            break
        batch = [
            build_request(
                config,
                instruction,
                views[v],
                candidate_ids,
                agent.temperature,
                {**(facts or {}), **views[v].facts, 'view': views[v].name},
            )
            for v in pending
        ]
        replies = agent.backend.complete(batch)
        requests += len(batch)
        still = []
        for v, reply in zip(pending, replies):
            try:
                if isinstance(reply, VLMError):
                    raise ReplyError(reply.reason)
                q, per_candidate = parse_reply(reply.text, config, candidate_ids)
            except ReplyError as exc:
                last_error[v] = str(exc)
                still.append(v)
                continue
            clarity[v] = q
            for j, cid in enumerate(candidate_ids):
                scores[v, j] = per_candidate[cid][0]
                rationales.append((cid, f'[{agent.label} {views[v].name}] {per_candidate[cid][1]}'))
        pending = still
    failures = [(agent.label, views[v].name, last_error[v]) for v in pending]
    return clarity, scores, rationales, failures, requests


def score(config, instruction, views, candidate_ids, agents, facts=None):
    """Ask every agent about every view (agents in parallel, each backend with its own
    concurrency) and fuse. facts: extra data for non-visual critics (rollouts)."""
    with ThreadPoolExecutor(max_workers=max(1, len(agents))) as pool:
        answers = list(pool.map(lambda agent: _ask(config, instruction, views, candidate_ids, agent, facts), agents))
    rationales = {cid: [] for cid in candidate_ids}
    for _, _, agent_rationales, _, _ in answers:
        for cid, text in agent_rationales:
            rationales[cid].append(text)
    scores = np.array([a[1] for a in answers]).reshape(
        len(agents), len(views), len(candidate_ids), len(config.dimensions)
    )
    clarity = np.array([a[0] for a in answers]).reshape(len(agents), len(views))
    failures = [f for a in answers for f in a[3]]
    try:
        fused = fusion.fuse(scores, clarity, config.weights, config.lambda_c)
    except ValueError as exc:  # say why every view failed (the first few agents' and views' reasons)
        reasons = '; '.join(f'{agent} {view}: {reason}' for agent, view, reason in failures[:3])
        raise ValueError(f'{exc} ({reasons})' if reasons else str(exc)) from None
    return ScoringResult(
        list(candidate_ids),
        fused,
        rationales,
        failures,
        [a.label for a in agents],
        sum(a[4] for a in answers),
        config.version,
    )
