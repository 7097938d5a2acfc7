"""ExternalPolicy against a loopback policy server speaking the /act protocol."""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from twinloop_vla.policies import PolicyError, load_policy, make_policy

REPLIES = {  # mode -> body the server sends (None: a valid chunk built from the request)
    'ok': None,
    'shape': json.dumps({'actions': [[0.0] * 8] * 3}),
    'ragged': json.dumps({'actions': [[0.0] * 8, [0.0] * 7]}),
    'nan': json.dumps({'actions': [[float('nan')] * 8] * 8}),
    'text': 'Internal thoughts, not JSON',
    'no_actions': json.dumps({'action': [[0.0] * 8] * 8}),
}


class Handler(BaseHTTPRequestHandler):
    """POST /act: decodes the request like a real server, replies as the server's mode says."""

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        self.server.requests.append(request)
        if self.server.mode == 'slow':
            time.sleep(0.5)
        body = REPLIES.get(self.server.mode)
        if body is None:
            views = [np.asarray(Image.open(io.BytesIO(base64.b64decode(i)))) for i in request['images']]
            first = float(views[0][0, 0, 0]) + request['state'][0]
            body = json.dumps({'actions': [[first + t] * 8 for t in range(8)]})
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    httpd.daemon_threads = True
    httpd.mode, httpd.requests = 'ok', []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _policy(server, timeout_s=2.0):
    return make_policy('external', {'url': f'http://127.0.0.1:{server.server_port}/act', 'timeout_s': timeout_s})


def _observation():
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    images[0, 0, 0, 0] = 7
    return {'images': images, 'state': np.arange(8, dtype=np.float32), 'instruction': 'pick up the cube'}


def test_valid_reply_gives_the_chunk(server):
    chunk = _policy(server).select_action_chunk(_observation())
    assert chunk.shape == (8, 8) and chunk.dtype == np.float32
    np.testing.assert_array_equal(chunk[:, 0], 7.0 + np.arange(8))  # the server decoded the PNG and the state
    request = server.requests[-1]
    assert request['instruction'] == 'pick up the cube' and len(request['images']) == 2
    assert request['state'] == list(range(8))


@pytest.mark.parametrize(
    ('mode', 'message'),
    [
        ('shape', r'actions of shape \(3, 8\), expected \(8, 8\)'),
        ('ragged', 'not a numeric array'),
        ('nan', 'NaN or infinity'),
        ('text', 'not JSON'),
        ('no_actions', 'without "actions"'),
    ],
)
def test_malformed_replies_raise_clear_errors(server, mode, message):
    server.mode = mode
    with pytest.raises(PolicyError, match=message):
        _policy(server).select_action_chunk(_observation())


def test_timeout_and_unreachable_server(server):
    server.mode = 'slow'
    started = time.monotonic()
    with pytest.raises(PolicyError, match=r'did not answer within 0.1 s'):
        _policy(server, timeout_s=0.1).select_action_chunk(_observation())
    assert time.monotonic() - started < 0.45
    policy = make_policy('external', {'url': 'http://127.0.0.1:9/act', 'timeout_s': 1.0})
    with pytest.raises(PolicyError, match='cannot be reached'):
        policy.select_action_chunk(_observation())
    with pytest.raises(PolicyError, match='no training loss'):
        policy({})


def test_checkpoint_holds_the_server_settings(tmp_path):
    policy = make_policy('external', {'url': 'http://127.0.0.1:9/act', 'chunk_size': 1, 'timeout_s': 0.5})
    policy.save(tmp_path)
    restored = load_policy(tmp_path)
    assert type(restored).__name__ == 'ExternalPolicy' and restored.config == policy.config
