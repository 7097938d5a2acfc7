"""The LLM instruction parser inside the orchestrator, through ROS: its agent points at a loopback
chat-completions server (no model can run here); the request carries the perceived objects and
world_sim's front camera view as an image, and the model's own rejection ends the goal REJECTED
with its reason and the parser's name."""

import base64
import io
import json
import os
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image
from twinloop_interfaces.action import ExecuteInstruction

from twinloop_bringup import graphs, processes
from twinloop_bringup.client import InstructionClient
from twinloop_ros.topics import GROUND_TRUTH_OBJECTS
from twinloop_scoring.loopback_server import ChatServer

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')
Result = ExecuteInstruction.Result
REJECTION = {
    'schema_version': '1.0',
    'steps': [],
    'constraints': {'do_not_move': [], 'speed': 'normal', 'keep_upright': False},
    'rejection': 'the scene has no hammer',
}


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    config = tmp_path_factory.mktemp('config')
    server = ChatServer().__enter__()
    agent = {'backend': 'openai_http', 'base_url': server.url, 'model': 'test-vlm', 'api_key_env': 'NO_KEY'}
    (config / 'vlm_agents.yaml').write_text(yaml.safe_dump({'agents': {'loopback_llm': agent | {'retries': 0}}}))
    for name in ('language.yaml', 'language_prompts.yaml', 'task_schema.json'):
        shutil.copy(os.path.join(ROOT, 'config', name), config)
    (world_sim,) = [spec for spec in graphs.load('sim_arm', {'scene': SCENE}) if spec.name == 'world_sim']
    started = [processes.start_python(world_sim.arguments())]
    parameters = {
        'objects_topic': GROUND_TRUTH_OBJECTS,
        'engine_config_dir': config,
        'runs_dir': tmp_path_factory.mktemp('runs'),
        'language_config': config / 'language.yaml',
        'parser': 'loopback_llm',
        'parser_camera': 'front',
    }
    arguments = ['-m', 'twinloop_planning.orchestrator_node', '--ros-args']
    for key, value in parameters.items():
        arguments += ['-p', f'{key}:={value}']
    started.append(processes.start_python(arguments))
    yield server
    for process in started:
        processes.stop(process)
    server.__exit__(None, None, None)


def _image(part):
    """The RGB array of a data-URL image part of a chat message."""
    url = part['image_url']['url']
    assert url.startswith('data:image/')
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(',', 1)[1]))).convert('RGB'))


@pytest.mark.timeout(300)
def test_the_llm_parser_sees_objects_and_the_camera_view_and_its_rejection_ends_the_goal(graph, ros_node):
    server = graph
    node, executor = ros_node
    client = InstructionClient(node, executor=executor)
    client.wait_for_server(180)
    with server.lock:
        server.script[:] = [{'content': json.dumps(REJECTION)}]
    client.send('hand me the hammer please', timeout=60)
    result = client.wait(60)
    assert result.outcome == Result.OUTCOME_REJECTED, result.reason
    assert 'the scene has no hammer' in result.reason and 'LLM parser' in result.reason, result.reason
    (request,) = server.requests
    content = request['json']['messages'][-1]['content']
    text = ' '.join(part.get('text', '') for part in content)
    images = [_image(part) for part in content if part.get('type') == 'image_url']
    assert 'hand me the hammer' in text and '"id": "red_cube"' in text
    assert len(images) == 1 and images[0].ndim == 3 and images[0].shape[0] >= 64
    assert images[0].std() > 5.0, 'the view is blank'
