"""trajectory_scoring over DDS: twin_critic by default (labelled as not a VLM), an OpenAI-
compatible agent on a loopback server on request, and clear answers to bad requests."""

import json
import os

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from twinloop_interfaces.msg import CandidateTrajectory, RenderedView
from twinloop_interfaces.srv import ScoreTrajectories

from twinloop_bringup.client import call_service
from twinloop_scoring.loopback_server import ChatServer
from twinloop_ros import conversions as ros_conversions

ROOT = os.environ['TWINLOOP_ROOT']


def _facts(collisions, moved_cm):
    start = [0.5, 0.12, 0.0]
    return {
        'collisions': collisions,
        'initial_positions': {'red_cube': start, 'bowl': [0.55, -0.3, 0.0]},
        'final_positions': {'red_cube': [0.5, 0.12 - moved_cm / 100, 0.0], 'bowl': [0.55, -0.3, 0.0]},
        'displacements': {'red_cube': moved_cm / 100, 'bowl': 0.0},
        'rotations': {'red_cube': 0.0, 'bowl': 0.0},
        'joint_margins': [0.5] * 7,
        'holding': '',
        'ee_start': [0.46, 0.0, 0.41],
        'ee_end': [0.5, 0.1, 0.05],
        'ee_path_length': 0.45,
    }


def _request(backend=''):
    request = ScoreTrajectories.Request(
        instruction='put the red cube in the bowl',
        backend=backend,
        task_json=json.dumps({'object': 'red_cube', 'destination': 'bowl'}),
    )
    request.candidates = [
        CandidateTrajectory(id='clean', rollout_json=json.dumps(_facts([], 5.0))),
        CandidateTrajectory(id='collide', rollout_json=json.dumps(_facts(['panda_link7|table'], 5.0))),
    ]
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    request.views = [
        RenderedView(
            camera_name='front',
            candidate_ids=['clean', 'collide'],
            image=ros_conversions.image_msg(image, 'rgb8', RenderedView().image.header),
        )
    ]
    return request


@pytest.fixture
def scoring(spawn, ros_context, tmp_path):
    server = ChatServer().__enter__()
    agents = tmp_path / 'agents.yaml'
    agents.write_text(
        f'agents:\n  twin_critic: {{backend: twin_critic}}\n'
        f'  loopback: {{backend: openai_http, base_url: "{server.url}", model: test-vlm, retries: 0}}\n'
    )
    spawn(
        '-m',
        'twinloop_scoring.scoring_node',
        '--ros-args',
        '-p',
        f'prompts_file:={ROOT}/config/vqa_prompts.yaml',
        '-p',
        f'agents_file:={agents}',
        '-p',
        'agents:=[twin_critic]',
    )
    node = rclpy.create_node('scoring_test', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    client = node.create_client(ScoreTrajectories, 'score_trajectories')

    def call(request):
        return call_service(executor, client, request, 60, 'trajectory_scoring')

    yield call, server
    executor.shutdown()
    node.destroy_node()
    server.__exit__(None, None, None)


def test_twin_critic_by_default(scoring):
    call, _ = scoring
    response = call(_request())
    assert response.success and 'twin_critic (not a VLM)' in response.backend and response.requests == 1
    clean, collide = response.scores
    assert collide.total < clean.total
    assert [d.dimension for d in clean.dimensions] == [
        'safety',
        'task_alignment',
        'efficiency',
        'physical_feasibility',
        'viewpoint_clarity',
    ]
    assert clean.views[0].camera_name == 'front' and clean.views[0].confidence == pytest.approx(1.0)
    assert 'not a VLM' in clean.rationale and 'not a VLM' in clean.backend


def test_http_agent_on_request(scoring):
    call, server = scoring
    answer = {
        'view_clarity': 9,
        'candidates': [
            {
                'id': 'clean',
                'safety': 10,
                'task_alignment': 10,
                'efficiency': 10,
                'physical_feasibility': 10,
                'viewpoint_clarity': 10,
                'rationale': 'fine',
            },
            {
                'id': 'collide',
                'safety': 0,
                'task_alignment': 0,
                'efficiency': 0,
                'physical_feasibility': 0,
                'viewpoint_clarity': 0,
                'rationale': 'hits the table',
            },
        ],
    }
    server.script = [{'content': json.dumps(answer)}]
    response = call(_request('loopback'))
    assert response.success and response.backend.startswith('openai_http:test-vlm')
    assert [s.total for s in response.scores] == pytest.approx([1.0, 0.0])
    sent = server.requests[-1]['json']['messages'][-1]['content']
    assert sent[1]['image_url']['url'].startswith('data:image/png;base64,') and 'orange -> clean' in sent[0]['text']

    server.script = [{'content': 'no idea, sorry'}, {'content': '{"view_clarity": 42}'}]
    failed = call(_request('loopback'))
    assert failed.success and 'scoring failed' in failed.message
    assert all(s.failed and s.failure_reason for s in failed.scores)


def test_views_without_images_for_a_scorer_that_reads_none(scoring):
    """twin_critic reads the twin, so a view may come without an image (nothing rendered); an agent that
    reads images is refused such a view with the reason."""
    call, _ = scoring
    request = _request()
    request.views = [RenderedView(camera_name='twin', candidate_ids=['clean', 'collide'])]
    response = call(request)
    assert response.success and response.requests == 1
    clean, collide = response.scores
    assert collide.total < clean.total and clean.views[0].camera_name == 'twin'
    request.backend = 'loopback'
    refused = call(request)
    assert not refused.success and 'views[0].image is empty' in refused.message


@pytest.mark.parametrize(
    'mutate, reason',
    [
        (lambda r: setattr(r, 'task_json', 'not json'), 'invalid request'),
        (lambda r: setattr(r, 'candidates', []), 'at least one candidate'),
        (lambda r: setattr(r, 'backend', 'gpt-99'), 'unknown agent'),
        (lambda r: setattr(r.candidates[0], 'rollout_json', ''), 'needs rollout_json'),
    ],
)
def test_bad_requests_answered_clearly(scoring, mutate, reason):
    call, _ = scoring
    request = _request()
    mutate(request)
    response = call(request)
    assert not response.success and reason in response.message
