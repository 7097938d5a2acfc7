"""The OpenAI-compatible HTTP backend against a real chat-completions server on 127.0.0.1."""

import base64
import io
import json
import time

import numpy as np
from PIL import Image

from twinloop_scoring.loopback_server import ChatServer
from twinloop_scoring import vqa
from twinloop_scoring.openai_http import OpenAIHTTPBackend
from twinloop_scoring.vlm import VLMError, VLMReply, VLMRequest

SCHEMA = {'type': 'object', 'properties': {'ok': {'type': 'boolean'}}, 'required': ['ok']}


def _images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)]


def test_request_carries_prompt_images_schema_and_key(monkeypatch):
    monkeypatch.setenv('TEST_VLM_KEY', 'sk-secret-123')
    with ChatServer('{"ok": true}') as server:
        backend = OpenAIHTTPBackend(server.url, 'test-vlm', api_key_env='TEST_VLM_KEY', retries=0)
        images = _images()
        reply = backend.complete([VLMRequest('Which candidate is safest?', images, 'be brief', SCHEMA, 0.2)])[0]
    assert isinstance(reply, VLMReply) and reply.text == '{"ok": true}' and reply.model == 'test-vlm'
    sent = server.requests[0]
    assert sent['path'] == '/v1/chat/completions'
    assert sent['headers']['Authorization'] == 'Bearer sk-secret-123'
    body = sent['json']
    assert body['model'] == 'test-vlm' and body['temperature'] == 0.2
    assert body['messages'][0] == {'role': 'system', 'content': 'be brief'}
    content = body['messages'][1]['content']
    assert content[0] == {'type': 'text', 'text': 'Which candidate is safest?'}
    for part, image in zip(content[1:], images):
        url = part['image_url']['url']
        assert url.startswith('data:image/png;base64,')
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(',', 1)[1]))))
        np.testing.assert_array_equal(decoded, image)
    assert (
        body['response_format']['type'] == 'json_schema' and body['response_format']['json_schema']['schema'] == SCHEMA
    )
    assert 'sk-secret' not in repr(backend.__dict__) and 'sk-secret' not in repr(reply)


def test_retries_then_success_and_errors():
    with ChatServer('{"ok": true}') as server:
        backend = OpenAIHTTPBackend(server.url, 'm', retries=2, backoff=0.01, cache=False)
        server.script = [{'status': 500}, {'status': 429}]
        ok = backend.complete([VLMRequest('a')])[0]
        assert isinstance(ok, VLMReply) and ok.attempts == 3

        server.script = [{'status': 400}]
        bad = backend.complete([VLMRequest('b')])[0]
        assert isinstance(bad, VLMError) and 'HTTP 400' in bad.reason and bad.attempts == 1

        server.script = [{'raw': 'not json'}] * 3
        garbage = backend.complete([VLMRequest('c')])[0]
        assert isinstance(garbage, VLMError) and 'malformed response' in garbage.reason and garbage.attempts == 3

        server.script = [{'refusal': 'I cannot help with that.'}]
        refused = backend.complete([VLMRequest('d')])[0]
        assert isinstance(refused, VLMError) and 'refused' in refused.reason

        server.script = [{'finish_reason': 'length', 'content': '{"ok": tr'}] * 3
        truncated = backend.complete([VLMRequest('e')])[0]
        assert isinstance(truncated, VLMError) and 'truncated' in truncated.reason


def test_timeout_is_retried_then_reported():
    with ChatServer('{"ok": true}') as server:
        backend = OpenAIHTTPBackend(server.url, 'm', timeout=0.3, retries=1, backoff=0.01, cache=False)
        server.script = [{'delay': 1.0}, {'delay': 1.0}]
        started = time.monotonic()
        reply = backend.complete([VLMRequest('slow')])[0]
        assert isinstance(reply, VLMError) and 'network error' in reply.reason and reply.attempts == 2
        assert time.monotonic() - started < 1.5
        assert len(server.requests) == 2


def test_cache_and_concurrency():
    with ChatServer('{"ok": true}', latency=0.3) as server:
        serial = OpenAIHTTPBackend(server.url, 'm', concurrency=1, cache=True)
        parallel = OpenAIHTTPBackend(server.url, 'm', concurrency=4, cache=True)
        requests = [VLMRequest(f'q{i}', _images()[:1]) for i in range(8)]
        t0 = time.monotonic()
        serial.complete(requests)
        t_serial = time.monotonic() - t0
        t0 = time.monotonic()
        parallel.complete(requests)
        t_parallel = time.monotonic() - t0
        assert t_parallel < t_serial / 2, (t_serial, t_parallel)
        before = len(server.requests)
        again = parallel.complete(requests[:3])
        assert all(r.cached for r in again) and len(server.requests) == before


def test_structured_vqa_reports_a_view_failure_and_keeps_the_others(tmp_path):
    config = vqa.PromptConfig.from_yaml('config/vqa_prompts.yaml')
    good = json.dumps(
        {
            'view_clarity': 8,
            'candidates': [
                {
                    'id': c,
                    'safety': s,
                    'task_alignment': s,
                    'efficiency': 5,
                    'physical_feasibility': 9,
                    'viewpoint_clarity': 8,
                    'rationale': 'ok',
                }
                for c, s in (('c0', 9), ('c1', 2))
            ],
        }
    )
    with ChatServer(good) as server:
        views = [vqa.View(name, img, {'c0': 'green', 'c1': 'red'}) for name, img in zip(('front', 'left'), _images())]
        # the second view's first answer is garbage, its retry a refusal: it fails, the first view stands
        server.script = [{}, {'content': 'Sure! The best is c0.'}, {'refusal': 'no'}]
        backend_ordered = OpenAIHTTPBackend(server.url, 'test-vlm', retries=0, concurrency=1)
        result = vqa.score(config, 'push the red cube', views, ['c0', 'c1'], [vqa.Agent(backend_ordered)])
    assert result.failures and result.failures[0][1] == 'left'
    assert result.fused.failed_views.tolist() == [False, True]
    assert result.fused.totals[0] > result.fused.totals[1] > 0
    assert result.requests == 3
