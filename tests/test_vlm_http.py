"""The OpenAI-compatible HTTP backend against a real chat-completions server on 127.0.0.1."""

import base64
import email.utils
import io
import json
import socket
import time

import numpy as np
import pytest
from PIL import Image

from twinloop_scoring.loopback_server import ChatServer
from twinloop_scoring import vqa
from twinloop_scoring.openai_http import OpenAIHTTPBackend, env_proxy
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
        assert isinstance(reply, VLMError) and 'timeout' in reply.reason and reply.attempts == 2
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


# Faults: every one ends as a VLMError value within the deadline (+ MARGIN), its reason naming the problem.
MARGIN = 0.6  # [s] thread start-up and scheduling on a busy 2-core machine


def _fails(backend, needle, within, prompt='x'):
    started = time.monotonic()
    reply = backend.complete([VLMRequest(prompt)])[0]
    elapsed = time.monotonic() - started
    assert isinstance(reply, VLMError), reply
    assert needle in reply.reason.lower(), reply.reason
    assert elapsed < within + MARGIN, (elapsed, reply.reason)
    return reply, elapsed


def test_http_500_is_retried_then_reported():
    with ChatServer() as server:
        server.script = [{'status': 500}] * 3
        backend = OpenAIHTTPBackend(server.url, 'm', retries=2, backoff=0.01, cache=False)
        reply, _ = _fails(backend, 'http 500', 1.0)
    assert reply.attempts == 3 and len(server.requests) == 3


def test_an_error_page_is_quoted_briefly():
    with ChatServer() as server:
        server.script = [{'status': 404, 'raw': 'no such model ' + 'x' * 100_000}]
        backend = OpenAIHTTPBackend(server.url, 'm', retries=2, backoff=0.01, cache=False, max_bytes=1000)
        reply, _ = _fails(backend, 'http 404: no such model', 1.0)
    assert reply.attempts == 1 and len(reply.reason) < 250
    with pytest.raises(ValueError):
        OpenAIHTTPBackend('ftp://127.0.0.1/v1', 'm')


DEEP = 100_000


@pytest.mark.parametrize(
    'step, needle',
    [
        ({'raw': 'not json'}, 'not json'),
        ({'raw': b'{"choices": "\xff"}'}, 'not json'),
        ({'raw': '[1, 2]'}, 'not an object'),
        ({'raw': '{"choices": "many"}'}, 'choices'),
        ({'raw': '{"choices": []}'}, 'choices'),
        ({'raw': '{"choices": [7]}'}, 'choice'),
        ({'message': 'I am a string, not an object'}, 'message'),
        ({'message': ['a', 'list']}, 'message'),
        ({'message': {'role': 'assistant', 'content': 5}}, 'content'),
        ({'message': {'role': 'assistant', 'content': [{'type': 'text', 'text': 7}]}}, 'content'),
        ({'fault': 'deep', 'depth': DEEP}, 'nested'),
        ({'raw': '{"a": ' * DEEP + '0' + '}' * DEEP}, 'nested'),
        ({'raw': '{"error": {"message": "model overloaded"}}'}, 'model overloaded'),
    ],
)
def test_malformed_replies_are_values(step, needle):
    with ChatServer() as server:
        server.script = [step]
        backend = OpenAIHTTPBackend(server.url, 'm', retries=0, cache=False)
        reply, _ = _fails(backend, needle, 2.0)
    assert reply.reason.startswith('malformed response'), reply.reason


def test_content_as_a_list_of_text_parts():
    parts = [{'type': 'text', 'text': '{"ok": '}, {'type': 'text', 'text': 'true}'}]
    with ChatServer() as server:
        server.script = [{'message': {'role': 'assistant', 'content': parts}}]
        reply = OpenAIHTTPBackend(server.url, 'm', retries=0).complete([VLMRequest('x')])[0]
    assert isinstance(reply, VLMReply) and reply.text == '{"ok": true}'


def test_hang_ends_at_the_deadline():
    with ChatServer() as server:
        server.script = [{'fault': 'hang'}] * 5
        backend = OpenAIHTTPBackend(server.url, 'm', timeout=30.0, deadline=1.0, retries=4, backoff=0.01, cache=False)
        reply, elapsed = _fails(backend, 'timeout', 1.0)
    assert elapsed > 0.9 and reply.attempts == 1 and 'deadline' in reply.reason


def test_timeout_bounds_each_attempt_and_deadline_the_retries():
    with ChatServer() as server:
        server.script = [{'fault': 'hang'}] * 5
        backend = OpenAIHTTPBackend(server.url, 'm', timeout=0.4, deadline=1.0, retries=4, backoff=0.01, cache=False)
        reply, elapsed = _fails(backend, 'deadline', 1.0)
    assert 2 <= reply.attempts <= 3 and len(server.requests) == reply.attempts, reply


@pytest.mark.parametrize('interval', [0.2, 0.01])
def test_slow_drip_ends_at_the_deadline(interval):
    # one byte per `interval`, status line and headers included: every read succeeds, the total never ends in time
    with ChatServer() as server:
        server.script = [{'fault': 'drip', 'interval': interval}]
        backend = OpenAIHTTPBackend(server.url, 'm', timeout=1.0, retries=0, cache=False)
        reply, elapsed = _fails(backend, 'timeout', 1.0)
    assert elapsed > 0.9


@pytest.mark.parametrize('declare_length', [True, False])
def test_huge_body_is_refused_at_the_cap(declare_length):
    # the server streams 200 MB of JSON whitespace (generated as sent) before a valid reply
    with ChatServer('{"ok": true}') as server:
        server.script = [{'fault': 'huge', 'size': 200 * 2**20, 'declare_length': declare_length}]
        backend = OpenAIHTTPBackend(server.url, 'm', timeout=5.0, retries=0, cache=False, max_bytes=2**20)
        reply, _ = _fails(backend, 'too large', 5.0)
    assert reply.attempts == 1 and str(2**20) in reply.reason


def test_default_cap_is_8_mb():
    with ChatServer('{"ok": true}') as server:
        server.script = [{'fault': 'huge', 'size': 9 * 2**20, 'declare_length': False}]
        backend = OpenAIHTTPBackend(server.url, 'm', timeout=5.0, retries=0, cache=False)
        _fails(backend, 'too large', 5.0)
        server.script = [{'fault': 'huge', 'size': 2**20, 'declare_length': False}]
        ok = backend.complete([VLMRequest('y')])[0]
    assert isinstance(ok, VLMReply) and ok.text == '{"ok": true}'


@pytest.mark.parametrize('status', [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_and_credentials_stay(status, monkeypatch):
    monkeypatch.setenv('TEST_VLM_KEY', 'sk-secret-456')
    with ChatServer('{"ok": true}') as elsewhere, ChatServer() as server:
        target = elsewhere.url + '/chat/completions'
        server.script = [{'status': status, 'headers': {'Location': target}}]
        backend = OpenAIHTTPBackend(server.url, 'm', api_key_env='TEST_VLM_KEY', retries=2, backoff=0.01, cache=False)
        reply, _ = _fails(backend, 'redirect', 1.0)
    assert f'HTTP {status}' in reply.reason and target in reply.reason and reply.attempts == 1
    assert server.requests[0]['headers']['Authorization'] == 'Bearer sk-secret-456'
    assert elsewhere.requests == [], 'the client followed the redirect'
    assert 'sk-secret' not in reply.reason


def test_retry_after_seconds_is_waited_for():
    with ChatServer('{"ok": true}') as server:
        server.script = [{'status': 429, 'headers': {'Retry-After': '1'}}]
        backend = OpenAIHTTPBackend(server.url, 'm', retries=2, backoff=0.01, cache=False)
        reply = backend.complete([VLMRequest('x')])[0]
    assert isinstance(reply, VLMReply) and reply.attempts == 2, reply
    gap = server.requests[1]['t'] - server.requests[0]['t']
    assert 0.95 < gap < 1.5, gap


def test_retry_after_http_date_is_waited_for():
    with ChatServer('{"ok": true}') as server:
        when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: the wait is 1..2 s
        server.script = [{'status': 503, 'headers': {'Retry-After': when}}]
        backend = OpenAIHTTPBackend(server.url, 'm', retries=1, backoff=0.01, cache=False)
        reply = backend.complete([VLMRequest('x')])[0]
    assert isinstance(reply, VLMReply) and reply.attempts == 2, reply
    gap = server.requests[1]['t'] - server.requests[0]['t']
    assert 0.9 < gap < 2.5, gap


def test_retry_after_beyond_the_deadline_fails_at_once():
    with ChatServer('{"ok": true}') as server:
        server.script = [{'status': 429, 'headers': {'Retry-After': '30'}}]
        backend = OpenAIHTTPBackend(server.url, 'm', retries=3, backoff=0.01, deadline=1.5, cache=False)
        reply, elapsed = _fails(backend, 'retry-after', 0.0)
    assert 'HTTP 429' in reply.reason and len(server.requests) == 1 and elapsed < 0.5


def test_connection_refused_is_a_value():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    backend = OpenAIHTTPBackend(f'http://127.0.0.1:{port}/v1', 'm', retries=1, backoff=0.01, deadline=1.0)
    reply, _ = _fails(backend, 'network error', 1.0)
    assert reply.attempts == 2


def test_a_batch_with_faults_keeps_the_good_replies():
    with ChatServer('{"ok": true}') as server:
        server.script = [{}, {'message': 'not an object'}, {'fault': 'deep'}, {'fault': 'hang'}, {}]
        backend = OpenAIHTTPBackend(server.url, 'm', retries=0, concurrency=1, deadline=1.0, cache=False)
        started = time.monotonic()
        replies = backend.complete([VLMRequest(f'q{i}') for i in range(5)])
        elapsed = time.monotonic() - started
    assert [type(r).__name__ for r in replies] == ['VLMReply', 'VLMError', 'VLMError', 'VLMError', 'VLMReply']
    assert elapsed < 1.0 + 3 * MARGIN, elapsed


def test_environment_proxies_apply_to_remote_servers_only(monkeypatch):
    # no connection is made: which proxy (if any) a base_url would go through
    for name in ('http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('https_proxy', 'http://127.0.0.1:3128')
    monkeypatch.setenv('no_proxy', 'internal.example')
    assert env_proxy('https://api.example.com/v1') == 'http://127.0.0.1:3128'
    assert env_proxy('https://vlm.internal.example/v1') is None
    assert env_proxy('http://127.0.0.1:8000/v1') is None and env_proxy('http://localhost:8000/v1') is None
    monkeypatch.setenv('https_proxy', 'socks5://127.0.0.1:1080')
    assert env_proxy('https://api.example.com/v1') is None
