"""A VLM server that misbehaves, seen through the whole graph: the scoring node's agent points at a
loopback chat-completions server in a fault mode, the orchestrator plans with it, and every goal
ends within 30 s with OUTCOME_ERROR naming the scorer, while every node stays up; a cancel while
the scorer hangs ends the goal at once."""

import os
import shutil
import time

import pytest
import yaml
from twinloop_interfaces.action import ExecuteInstruction

from twinloop_bringup import graphs, processes
from twinloop_bringup.client import InstructionClient
from twinloop_ros.topics import GROUND_TRUTH_OBJECTS
from twinloop_scoring.loopback_server import ChatServer

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')
Result = ExecuteInstruction.Result
FAULTS = {
    'HTTP 500': {'status': 500, 'content': 'internal error'},
    'garbage': {'raw': 'this is not JSON {{{'},
    'non-object message': {'message': 'hello'},
    'deep JSON': {'fault': 'deep'},
    'hang': {'fault': 'hang'},
    'slow drip': {'fault': 'drip', 'interval': 0.2},
    'huge body': {'fault': 'huge', 'size': 20_000_000},
    'redirect': {'status': 302, 'headers': {'Location': 'http://127.0.0.1:9/steal'}},
}


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    config = tmp_path_factory.mktemp('config')
    server = ChatServer().__enter__()
    agents = {
        'agents': {
            'twin_critic': {'backend': 'twin_critic'},
            'faulty_vlm': {
                'backend': 'openai_http',
                'base_url': server.url,
                'model': 'test-vlm',
                'api_key_env': 'NO_KEY',
                'timeout': 2.0,
                'deadline': 3.0,
                'retries': 0,
                'max_bytes': 1_000_000,
            },
        }
    }
    (config / 'vlm_agents.yaml').write_text(yaml.safe_dump(agents))
    shutil.copy(os.path.join(ROOT, 'config', 'anti_grounding.yaml'), config)
    started = [
        processes.start_python(
            spec.arguments()
            + (['-p', f'agents_file:={config}/vlm_agents.yaml'] if spec.name == 'trajectory_scoring' else [])
        )
        for spec in graphs.load('sim_twin_scoring', {'scene': SCENE})
    ]
    started.append(
        processes.start_python(
            [
                '-m',
                'twinloop_planning.orchestrator_node',
                '--ros-args',
                '-p',
                f'objects_topic:={GROUND_TRUTH_OBJECTS}',
                '-p',
                f'engine_config_dir:={config}',
                '-p',
                f'runs_dir:={tmp_path_factory.mktemp("runs")}',
                '-p',
                f'categories_file:={ROOT}/config/waste_categories.yaml',
                '-p',
                f'language_config:={ROOT}/config/language.yaml',
            ]
        )
    )
    yield server, started
    for process in started:
        processes.stop(process)
    server.__exit__(None, None, None)


@pytest.mark.timeout(600)
def test_every_vlm_fault_ends_the_goal_naming_the_scorer(graph, ros_node):
    server, started = graph
    node, executor = ros_node
    client = InstructionClient(node, executor=executor)
    client.wait_for_server(180)
    took = {}
    for name, step in FAULTS.items():
        with server.lock:
            server.script[:] = [dict(step) for _ in range(500)]
        begun = time.monotonic()
        client.send('pick up the red cube', num_candidates=4, scorer_backend='faulty_vlm', timeout=120)
        result = client.wait(90)
        took[name] = round(time.monotonic() - begun, 1)
        assert result.outcome == Result.OUTCOME_ERROR, (name, result.reason)
        assert 'scorer failed on every candidate' in result.reason and 'openai_http' in result.reason, (
            name,
            result.reason,
        )
        assert took[name] < 30, (name, took[name], result.reason)
        assert all(p.poll() is None for p in started), f'a node died on the {name} fault'
    # cancel while the scorer hangs: the goal ends CANCELED at once, the arm never moved
    with server.lock:
        server.script[:] = [{'fault': 'hang'} for _ in range(50)]
    stages = []
    client.send(
        'pick up the red cube',
        num_candidates=4,
        scorer_backend='faulty_vlm',
        timeout=120,
        on_feedback=lambda f: stages.append(f.stage),
    )
    client.spin_until(lambda: 'score' in stages, 60, 'the scoring stage')
    time.sleep(0.5)
    begun = time.monotonic()
    client.cancel()
    result = client.wait(10)
    took['cancel while scoring'] = round(time.monotonic() - begun, 2)
    assert result.outcome == Result.OUTCOME_CANCELED and took['cancel while scoring'] < 1.5, (took, result.reason)
    with server.lock:
        server.script.clear()
    print('VLM faults, seconds to the end of the goal:', took)
