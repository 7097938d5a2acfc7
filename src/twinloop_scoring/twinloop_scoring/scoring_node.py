"""trajectory_scoring: the ScoreTrajectories service. Views and candidates in, per candidate the
fused total, per-dimension scores, per-view confidences, rationales and the backends that
produced them out. Candidates are told apart in the images by tube colour (overlays.DISTINCT, in
candidate order); each candidate's rollout_json gives non-visual critics the twin's facts.

Every request field is validated before any scorer runs: an invalid request is answered with
success=false and a message naming the field (e.g. "candidates[1].rollout_json: ee_end: must be
[x, y, z]"), never with a dead node."""

import json
import math
import time
import traceback

from twinloop_interfaces.msg import ViewConfidence
from twinloop_interfaces.srv import ScoreTrajectories

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from twinloop_scoring import agents as agent_registry
from twinloop_scoring import vqa
from twinloop_twin import overlays
from twinloop_ros import codec, node_runner, topics
from twinloop_ros import conversions as ros_conversions


MAX_INSTRUCTION = 100_000  # [characters]
MAX_JSON = 1_000_000  # [characters] of task_json and of each rollout_json
MAX_VIEWS = 16
MAX_AGENTS = 8  # names in one request's backend
MAX_NAME = 128  # [characters] of a candidate id or a camera name
HOLDING = ('wanted', 'required', 'unwanted')  # task_json "holding" (see twin_critic.judge)


class ScoringNode(Node):
    """The trajectory_scoring node: serves ScoreTrajectories with structured VQA and view fusion."""

    def __init__(self):
        super().__init__('trajectory_scoring')
        p = lambda name, default, doc: self.declare_parameter(name, default, ParameterDescriptor(description=doc)).value  # noqa: E731
        prompts = p('prompts_file', '', 'structured VQA prompts and weights (config/vqa_prompts.yaml)')
        self.agents_file = p('agents_file', '', 'agent definitions (config/vlm_agents.yaml)')
        names = p('agents', ['twin_critic'], 'the default ensemble: names from agents_file')
        if not prompts or not self.agents_file:
            raise ValueError('parameters "prompts_file" and "agents_file" are required')
        self.config = vqa.PromptConfig.from_yaml(prompts)
        self.default_agents = agent_registry.load(self.agents_file, names)
        self.declare_parameter(
            'reads_images',
            vqa.reads_images(self.default_agents),
            ParameterDescriptor(
                description='whether the default agents look at the views (false: send views without images)',
                read_only=True,
            ),
        )
        self.create_service(ScoreTrajectories, topics.SCORE_TRAJECTORIES, self.on_score)
        labels = ', '.join(a.label for a in self.default_agents)
        self.get_logger().info(f'trajectory_scoring ready: prompts v{self.config.version}, agents {labels}')

    def on_score(self, request, response):
        """ScoreTrajectories callback: score every candidate in every view; invalid requests fail with the reason."""
        try:
            return self._score(request, response)
        except Exception as exc:  # a bug, not the request: answer (and log it) rather than take the node down
            self.get_logger().error(f'scoring failed unexpectedly:\n{traceback.format_exc()}')
            return ScoreTrajectories.Response(
                success=False, message=f'internal error: {type(exc).__name__}: {exc}'[:500]
            )

    def _score(self, request, response):
        started = time.monotonic()
        try:
            candidate_ids, views, facts, agents = self._parse(request)
        except (ValueError, KeyError) as exc:
            response.message = f'invalid request: {exc}'
            self.get_logger().error(response.message, throttle_duration_sec=1.0)
            return response
        try:
            result = vqa.score(self.config, request.instruction, views, candidate_ids, agents, facts)
        except ValueError as exc:  # every view failed for every agent
            response.success, response.message = True, f'scoring failed: {exc}'
            response.scores = [
                codec.score_msg(c, s) for c, s in zip(candidate_ids, vqa.failed_scores(candidate_ids, str(exc), agents))
            ]
            return response
        fused = result.fused
        backends = ', '.join(result.backends)
        models = ', '.join(sorted({a.backend.model for a in agents}))
        for cid, score in zip(candidate_ids, result.candidate_scores(self.config, models)):
            msg = codec.score_msg(cid, score)
            for v, view in enumerate(views):
                reasons = [r for _, name, r in result.failures if name == view.name]
                msg.views.append(
                    ViewConfidence(
                        camera_name=view.name,
                        clarity=float(fused.clarity[v]),
                        variance=float(np.nan_to_num(fused.variance[v])),
                        confidence=float(fused.normalised[v]),
                        failed=bool(fused.failed_views[v]),
                        failure_reason='; '.join(reasons),
                    )
                )
            response.scores.append(msg)
        response.success, response.backend, response.requests = True, backends, result.requests
        response.message = f'{len(result.failures)} view failure(s)' if result.failures else 'ok'
        response.wall_time = time.monotonic() - started
        self.get_logger().info(
            f'scored {len(candidate_ids)} candidates x {len(views)} views with {backends} '
            f'({result.requests} requests, {response.wall_time:.2f} s)'
        )
        return response

    def _parse(self, request):
        """(candidate ids, views, facts, agents) of a valid request; ValueError naming the first bad field."""
        if len(request.instruction) > MAX_INSTRUCTION:
            raise ValueError(f'instruction: longer than {MAX_INSTRUCTION} characters')
        if not request.candidates:
            raise ValueError('candidates: need at least one candidate')
        if len(request.candidates) > len(overlays.DISTINCT_NAMES):
            raise ValueError(f'candidates: at most {len(overlays.DISTINCT_NAMES)} per request (distinct colours)')
        candidate_ids = _names([c.id for c in request.candidates], 'candidates', 'id')
        if not request.views:
            raise ValueError('views: need at least one view')
        if len(request.views) > MAX_VIEWS:
            raise ValueError(f'views: at most {MAX_VIEWS} per request')
        _names([v.camera_name for v in request.views], 'views', 'camera_name')
        colours = dict(zip(candidate_ids, overlays.DISTINCT_NAMES))
        views = []
        for i, view in enumerate(request.views):
            shown = list(view.candidate_ids)
            unknown = [c for c in shown if c not in colours]
            if unknown or len(set(shown)) != len(shown):
                raise ValueError(
                    f'views[{i}].candidate_ids: must name request candidates, each once '
                    f'(unknown: {_short(unknown)}, {len(shown)} given)'
                )
            image = None  # an empty image: for scorers that read none (the reads_images parameter)
            if view.image.width or view.image.height or view.image.data:
                try:
                    ros_conversions.check_image(view.image, ('rgb8',))
                except ValueError as exc:
                    raise ValueError(f'views[{i}].image: {exc}') from None
                image = ros_conversions.image_array(view.image)
            views.append(vqa.View(view.camera_name, image, {c: colours[c] for c in shown or candidate_ids}))
        task = _task(_json_object(request.task_json, 'task_json')) if request.task_json else {}
        rollouts = {}
        for i, c in enumerate(request.candidates):
            if c.rollout_json:
                what = f'candidates[{i}].rollout_json'
                rollouts[c.id] = _facts(_json_object(c.rollout_json, what), what)
        agents = self._agents(request.backend)
        blank = [i for i, v in enumerate(views) if v.image is None]
        if blank and vqa.reads_images(agents):
            raise ValueError(f"views[{blank[0]}].image is empty, and the request's agents read images")
        missing = [i for i, c in enumerate(request.candidates) if c.id not in rollouts]
        if any(not a.backend.is_vlm for a in agents) and missing:
            raise ValueError(
                f'candidates[{missing[0]}].rollout_json is empty: twin_critic needs rollout_json for every candidate'
            )
        return candidate_ids, views, {'task': task, 'rollouts': rollouts}, agents

    def _agents(self, backend):
        """The request's agents (backend: comma-separated names from agents_file), else the default ensemble."""
        if not backend:
            return self.default_agents
        names = [n.strip() for n in backend.split(',') if n.strip()]
        if len(names) > MAX_AGENTS or any(len(n) > MAX_NAME for n in names):
            raise ValueError(f'backend: at most {MAX_AGENTS} agent names of at most {MAX_NAME} characters')
        try:
            return agent_registry.load(self.agents_file, names) if names else self.default_agents
        except ValueError as exc:
            raise ValueError(f'backend: {exc}') from None


def _short(value, limit=60):
    """repr of a value cut to limit characters (a request's strings can be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + '...'


def _names(names, field, attribute):
    """The list of names, ValueError unless each is non-empty, at most MAX_NAME characters and unique."""
    for i, name in enumerate(names):
        if not name or len(name) > MAX_NAME:
            raise ValueError(f'{field}[{i}].{attribute}: must be 1 to {MAX_NAME} characters, not {_short(name)}')
        if name in names[:i]:
            raise ValueError(f'{field}[{i}].{attribute}: {_short(name)} given twice')
    return list(names)


def _json_object(text, what):
    """The dict a JSON text holds; ValueError naming `what` for anything else."""
    if len(text) > MAX_JSON:
        raise ValueError(f'{what}: longer than {MAX_JSON} characters')
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f'{what}: not valid JSON ({_short(str(exc))})') from None
    if not isinstance(value, dict):
        raise ValueError(f'{what}: must be a JSON object, not {type(value).__name__}')
    return value


def _number(value, what, minimum=None):
    """value as a float; ValueError naming `what` unless it is a finite JSON number (>= minimum)."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        ok = False
    if not ok or (minimum is not None and value < minimum):
        bound = f' >= {minimum}' if minimum is not None else ''
        raise ValueError(f'{what}: must be a finite number{bound}, not {_short(value)}')
    return float(value)


def _point(value, what):
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f'{what}: must be [x, y, z], not {_short(value)}')
    return [_number(v, what) for v in value]


def _string(value, what, none=False):
    if not (isinstance(value, str) or (none and value is None)):
        raise ValueError(f'{what}: must be a string{" or null" if none else ""}, not {_short(value)}')
    return value


def _mapping(value, what, item):
    """A dict of string keys, each value checked by item(value, what)."""
    if not isinstance(value, dict):
        raise ValueError(f'{what}: must be an object, not {_short(value)}')
    return {k: item(v, f'{what}.{k}') for k, v in value.items()}


def _task(task):
    """task_json's fields twin_critic reads, type-checked (others pass through for VLM prompts)."""
    checks = {
        'object': _string,
        'stage': _string,
        'destination': lambda v, w: _string(v, w, none=True),
        'goal_position': lambda v, w: None if v is None else _point(v, w),
        'object_size': _point,
        'grasp_offset': _point,
        'destination_height': _number,
        'tilt': _number,
        'holding': lambda v, w: v if v in HOLDING else _fail(f'{w}: must be one of {list(HOLDING)}, not {_short(v)}'),
    }
    for key, check in checks.items():
        if key in task:
            check(task[key], f'task_json: {key}')
    return task


def _facts(facts, what):
    """A rollout's facts (twinloop_twin.facts.rollout_facts), type-checked for twin_critic."""
    for key in ('ee_start', 'ee_end'):
        if key not in facts:
            raise ValueError(f'{what}: lacks {key}')
        _point(facts[key], f'{what}: {key}')
    collisions = facts.get('collisions', [])
    if not isinstance(collisions, list) or not all(isinstance(c, str) and '|' in c for c in collisions):
        raise ValueError(f'{what}: collisions must be a list of "a|b" strings')
    positions = {}
    for key in ('initial_positions', 'final_positions'):
        positions[key] = _mapping(facts.get(key, {}), f'{what}: {key}', _point)
    if set(positions['initial_positions']) != set(positions['final_positions']):
        raise ValueError(f'{what}: initial_positions and final_positions must name the same objects')
    for key in ('displacements', 'rotations'):
        _mapping(facts.get(key, {}), f'{what}: {key}', _number)
    margins = facts.get('joint_margins', [1.0])
    if not isinstance(margins, list) or not margins:
        raise ValueError(f'{what}: joint_margins must be a non-empty list')
    for margin in margins:
        _number(margin, f'{what}: joint_margins')
    _string(facts.get('holding', ''), f'{what}: holding')
    _number(facts.get('ee_path_length', 0.0), f'{what}: ee_path_length', minimum=0.0)
    return facts


def _fail(message):
    raise ValueError(message)


def main(args=None):
    """Run the trajectory_scoring node."""
    node_runner.run(ScoringNode, args)


if __name__ == '__main__':
    main()
