"""trajectory_scoring: the ScoreTrajectories service. Views and candidates in, per candidate the
fused total, per-dimension scores, per-view confidences, rationales and the backends that
produced them out. Candidates are told apart in the images by tube colour (overlays.DISTINCT, in
candidate order); each candidate's rollout_json gives non-visual critics the twin's facts."""

import json
import time

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
        self.create_service(ScoreTrajectories, topics.SCORE_TRAJECTORIES, self.on_score)
        labels = ', '.join(a.label for a in self.default_agents)
        self.get_logger().info(f'trajectory_scoring ready: prompts v{self.config.version}, agents {labels}')

    def on_score(self, request, response):
        """ScoreTrajectories callback: score every candidate in every view; invalid requests fail with the reason."""
        started = time.monotonic()
        try:
            candidate_ids, views, facts, agents = self._parse(request)
        except (ValueError, KeyError) as exc:
            response.message = f'invalid request: {exc}'
            self.get_logger().error(response.message)
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
        if not request.candidates or not request.views:
            raise ValueError('need at least one candidate and one view')
        candidate_ids = [c.id for c in request.candidates]
        if len(set(candidate_ids)) != len(candidate_ids) or '' in candidate_ids:
            raise ValueError(f'candidate ids must be unique and non-empty: {candidate_ids}')
        if len(candidate_ids) > len(overlays.DISTINCT_NAMES):
            raise ValueError(f'at most {len(overlays.DISTINCT_NAMES)} candidates per request (distinct colours)')
        colours = dict(zip(candidate_ids, overlays.DISTINCT_NAMES))
        views = []
        for view in request.views:
            image = ros_conversions.image_array(view.image)
            if view.image.encoding != 'rgb8':
                raise ValueError(f'view {view.camera_name}: images must be rgb8, not {view.image.encoding}')
            shown = [c for c in view.candidate_ids if c in colours] or candidate_ids
            views.append(vqa.View(view.camera_name, image, {c: colours[c] for c in shown}))
        task = json.loads(request.task_json) if request.task_json else {}
        rollouts = {c.id: json.loads(c.rollout_json) for c in request.candidates if c.rollout_json}
        agents = (
            agent_registry.load(self.agents_file, [n.strip() for n in request.backend.split(',') if n.strip()])
            if request.backend
            else self.default_agents
        )
        if any(not a.backend.is_vlm for a in agents) and set(rollouts) != set(candidate_ids):
            raise ValueError('twin_critic needs rollout_json for every candidate')
        return candidate_ids, views, {'task': task, 'rollouts': rollouts}, agents


def main(args=None):
    """Run the trajectory_scoring node."""
    node_runner.run(ScoringNode, args)


if __name__ == '__main__':
    main()
