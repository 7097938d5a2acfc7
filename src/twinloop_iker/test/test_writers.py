"""Code writers by name. The vlm writer against a loopback chat-completions server (no model runs
here): the request carries the query image as a base64 PNG and the versioned prompt with the
keypoint numbers and the axes; the code is taken from a fenced or a plain reply; a reply without
code and a failed request are clear errors; a multi-step request carries the history (earlier
images first, their code and outcomes). The template writer follows the successful stages."""

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from twinloop_core.task import SubTask, TaskSpec
from twinloop_iker import sandbox, template_writer
from twinloop_iker.query_image import QueryImage
from twinloop_iker.writers import HistoryEntry, WriteRequest, WriterError, extract_code, make_writer
from twinloop_scoring.loopback_server import ChatServer

CONFIG = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3])) / 'config'
CODE = """def get_interaction_data(keypoint_coordinates):
    \"\"\"Put the box on the tray.\"\"\"
    target = keypoint_coordinates[5] + np.array([0.0, 0.0, 0.05])
    return {'object_id': 'box', 'grasp': True, 'keypoint_indices': [1], 'target_positions': [target.tolist()]}"""
KEYPOINTS = {1: ('box', (0.5, -0.1, 0.05)), 2: ('box', (0.6, -0.1, 0.05)), 5: ('tray', (0.4, 0.2, 0.02))}
STATES = {
    'box': ((0.55, -0.1, 0.0), (1.0, 0.0, 0.0, 0.0), (0.1, 0.05, 0.05)),
    'tray': ((0.4, 0.2, 0.0), (1.0, 0.0, 0.0, 0.0), (0.2, 0.15, 0.02)),
}


def picture(value):
    image = np.zeros((24, 32, 3), np.uint8)
    image[4:10, 6:12] = value
    return image


QUERY = QueryImage(
    picture(200),
    KEYPOINTS,
    {1: (8.0, 6.0), 2: (12.0, 6.0), 5: (20.0, 15.0)},
    {'x': 'down', 'y': 'right', 'z': 'up'},
    ('box', 'tray'),
)


@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


def vlm(server):
    overrides = {'local_vllm': {'base_url': server.url, 'retries': 0, 'timeout': 10.0}}
    return make_writer('vlm', CONFIG, agent='local_vllm', overrides=overrides)


def sent(server):
    """(prompt text, decoded images) of the last request."""
    content = server.requests[-1]['json']['messages'][-1]['content']
    text = ''.join(part['text'] for part in content if part['type'] == 'text')
    images = []
    for part in content:
        if part['type'] == 'image_url':
            url = part['image_url']['url']
            assert url.startswith('data:image/png;base64,')
            images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(',', 1)[1]))).convert('RGB')))
    return text, images


def request(**changes):
    values = {'instruction': 'put the box on the tray', 'query': QUERY, 'objects': STATES}
    return WriteRequest(**{**values, **changes})


def test_vlm_request_carries_image_and_prompt_and_fenced_code_is_extracted(server):
    server.script.append({'content': f'The box goes on the tray.\n```python\n{CODE}\n```\nThat is all.'})
    written = vlm(server).write(request())
    assert written.code == CODE
    sandbox.check_code(written.code)
    assert written.writer.startswith('vlm local_vllm (openai_http:') and 'not a VLM' not in written.writer
    with open(CONFIG / 'iker_prompts.yaml') as f:
        assert written.prompt_version == yaml.safe_load(f)['version']
    assert 'The box goes on the tray' in written.reply
    text, images = sent(server)
    assert len(images) == 1 and np.array_equal(images[0], QUERY.image)
    assert '"put the box on the tray"' in text and '- box\n- tray' in text
    assert 'Keypoint numbers drawn in the picture: 1, 2, 5.' in text
    assert 'In this picture +x points down, +y points right and +z points up.' in text
    assert 'np.linalg.norm' in text and 'Stages so far' not in text


def test_plain_code_reply_is_extracted(server):
    server.script.append({'content': f'Here is the function:\n\n{CODE}\n\nIt lifts keypoint 1 above the tray.'})
    assert vlm(server).write(request()).code == CODE


def test_reply_without_code_is_a_clear_error(server):
    server.script.append({'content': 'I cannot see a tray in this picture.'})
    with pytest.raises(WriterError, match=r"no Python code defining get_interaction_data.*'I cannot see a tray"):
        vlm(server).write(request())


def test_failed_request_is_a_clear_error(server):
    server.script.append({'status': 400, 'raw': '{"error": "bad image"}'})
    with pytest.raises(WriterError, match='the request failed: HTTP 400'):
        vlm(server).write(request())


def test_multi_step_prompt_carries_the_history(server):
    history = (
        HistoryEntry(
            picture(50), 'def get_interaction_data(keypoint_coordinates):\n    return {"done": False}', 'pushed'
        ),
        HistoryEntry(picture(100), CODE, 'the box is 12 cm from its target', succeeded=False),
    )
    server.script.append({'content': f'```py\n{CODE}\n```'})
    vlm(server).write(request(history=history, multi_step=True))
    text, images = sent(server)
    assert [int(image[5, 7, 0]) for image in images] == [50, 100, 200], 'earlier pictures first, the latest last'
    assert 'Stage 1: picture 1' in text and 'Outcome: pushed' in text
    assert 'Stage 2: picture 2' in text and CODE in text and 'Outcome: the box is 12 cm from its target' in text
    assert 'done = True only when the latest picture' in text
    server.script.append({'content': f'```python\n{CODE}\n```'})
    vlm(server).write(request(multi_step=True))
    text, images = sent(server)
    assert 'Stages so far:\nnone yet' in text and len(images) == 1


def test_extract_code_picks_the_block_defining_the_function():
    reply = f'```\npip install nothing\n```\n```python\nx = 1\n```\n```python\n{CODE}\n```'
    assert extract_code(reply) == CODE
    helper = f'LIMIT = 0.1\n\n\ndef lift(p):\n    return p + LIMIT\n\n\n{CODE}'
    assert extract_code(f'Plan: lift it.\n{helper}\nDone.').startswith('def lift(p)')
    with pytest.raises(WriterError, match='empty'):
        extract_code('')


def test_a_scorer_that_is_not_a_vlm_cannot_write_code():
    with pytest.raises(ValueError, match='needs a VLM'):
        make_writer('vlm', CONFIG, agent='twin_critic')
    with pytest.raises(ValueError, match=r"unknown code writer 'gpt'; known: \['template', 'vlm'\]"):
        make_writer('gpt', CONFIG)


def test_template_writer_writes_the_stage_after_the_successful_ones():
    task = TaskSpec(
        'put the box on the tray, then lift it',
        [SubTask('place', 'box', 'tray', 'on'), SubTask('pick', 'box')],
        parser='test',
    )
    writer = make_writer('template', CONFIG)
    assert writer.label == template_writer.LABEL == 'template writer (not a VLM)'
    positions = {n: xyz for n, (_, xyz) in KEYPOINTS.items()}
    objects = {'box': [1, 2], 'tray': [5]}
    workspace = ((-0.5, -0.7, -0.01), (1.0, 0.7, 1.0))

    def run(history):
        written = writer.write(request(task=task, history=history, multi_step=True))
        assert written.writer == template_writer.LABEL and template_writer.LABEL in written.code
        return sandbox.run_interaction_code(written.code, positions, objects, workspace)

    assert run(()).plan.endswith('Stage 1 of 2: place box on tray.')
    failed = HistoryEntry(QUERY.image, '', 'dropped', succeeded=False)
    assert run((failed,)).plan.endswith('Stage 1 of 2: place box on tray.'), 'a failed stage is written again'
    done = HistoryEntry(QUERY.image, '', 'placed')
    assert run((failed, done)).plan.endswith('Stage 2 of 2: pick box.')
    assert run((done, done)).done
    with pytest.raises(WriterError, match='needs the structured task'):
        writer.write(request())
    with pytest.raises(WriterError, match=r'template writer \(not a VLM\): open has no keypoint template'):
        writer.write(request(task=TaskSpec('open the tray', [SubTask('open', 'tray')])))
