"""A chat-completions server on 127.0.0.1 for tests and benchmarks. It speaks the OpenAI protocol
(the hosted VLMs twinloop talks to cannot run here), replays scripted answers or asks a
responder function, adds a configurable latency, and records every request. It is not a VLM and
is never used outside tests and bench/. It serves until stopped (a `with` block).

Each request takes the next step of `script` (a dict; {} when the script is empty):

- status, headers: the HTTP status (200) and extra response headers (e.g. Retry-After, Location);
- delay: seconds to wait before answering (default: the server's latency);
- content, refusal, finish_reason: the assistant message; message: any JSON value sent as the
  message as it is (e.g. a string where the protocol wants an object); raw: a body (str or bytes)
  sent verbatim;
- fault: how the server misbehaves instead of answering well:
  'hang'  accepts the request and never answers (until the server stops);
  'drip'  sends the whole response, status line included, one byte every `interval` seconds (0.2);
  'huge'  streams `size` bytes (200 MB) of JSON whitespace before a valid reply, generated as it is
          sent, with a Content-Length unless `declare_length` is False (then the end of the body
          is the end of the connection);
  'deep'  a body of JSON arrays nested `depth` (100 000) levels deep.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PAD = b' ' * 65536


class ChatServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 with scripted answers and fault modes."""

    def __init__(self, default_content='{}', latency=0.0, responder=None):
        self.requests, self.script = [], []
        self.default_content, self.latency, self.responder = default_content, latency, responder
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                with server.lock:
                    server.requests.append(
                        {
                            'method': self.command,
                            'path': self.path,
                            'headers': dict(self.headers),
                            'json': parsed,
                            't': time.monotonic(),
                        }
                    )
                    step = server.script.pop(0) if server.script else {}
                server.stopping.wait(step.get('delay', server.latency))
                try:
                    self._answer(step, parsed)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out or gave up and left

            do_GET = do_POST  # a redirected client may come back with GET: recorded like a POST

            def _answer(self, step, parsed):
                fault = step.get('fault')
                if fault == 'hang':
                    server.stopping.wait()
                    return
                if fault == 'huge':
                    self._huge(step, parsed)
                    return
                status = step.get('status', 200)
                if fault == 'deep':
                    depth = step.get('depth', 100_000)
                    payload = b'[' * depth + b']' * depth
                elif 'raw' in step:
                    payload = step['raw'] if isinstance(step['raw'], bytes) else step['raw'].encode()
                else:
                    payload = json.dumps(self._reply(step, parsed)).encode()
                head = f'HTTP/1.0 {status} {self.responses.get(status, ("",))[0]}\r\n'
                headers = {'Content-Type': 'application/json', 'Content-Length': str(len(payload))}
                headers.update(step.get('headers', {}))
                head += ''.join(f'{k}: {v}\r\n' for k, v in headers.items()) + '\r\n'
                data = head.encode('latin-1') + payload
                if fault == 'drip':
                    interval = step.get('interval', 0.2)
                    for i in range(len(data)):
                        self.connection.sendall(data[i : i + 1])
                        if server.stopping.wait(interval):
                            return
                else:
                    self.connection.sendall(data)

            def _reply(self, step, parsed):
                content = step.get('content')
                if content is None:
                    content = server.responder(parsed) if server.responder else server.default_content
                message = {'role': 'assistant', 'content': content}
                if 'refusal' in step:
                    message = {'role': 'assistant', 'content': None, 'refusal': step['refusal']}
                if 'message' in step:
                    message = step['message']
                return {
                    'id': 'x',
                    'object': 'chat.completion',
                    'model': 'test-vlm',
                    'choices': [{'index': 0, 'message': message, 'finish_reason': step.get('finish_reason', 'stop')}],
                }

            def _huge(self, step, parsed):
                size = step.get('size', 200 * 2**20)
                tail = json.dumps(self._reply(step, parsed)).encode()
                self.send_response(step.get('status', 200))
                self.send_header('Content-Type', 'application/json')
                if step.get('declare_length', True):
                    self.send_header('Content-Length', str(size + len(tail)))
                self.end_headers()
                sent = 0
                while sent < size and not server.stopping.is_set():
                    chunk = _PAD[: min(len(_PAD), size - sent)]
                    self.wfile.write(chunk)
                    sent += len(chunk)
                self.wfile.write(tail)

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)

    def __enter__(self):
        """Start serving; returns the server."""
        self.thread.start()
        return self

    def __exit__(self, *exc):
        """Stop serving and release any handler still hanging or dripping."""
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
