"""A chat-completions server on 127.0.0.1 for tests and benchmarks. It speaks the OpenAI protocol
(the hosted VLMs twinloop talks to cannot run here), replays scripted answers or asks a
responder function, adds a configurable latency, and records every request. It is not a VLM and
is never used outside tests and bench/. It serves until stopped (a `with` block)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, default_content='{}', latency=0.0, responder=None):
        self.requests, self.script = [], []
        self.default_content, self.latency, self.responder = default_content, latency, responder
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                with server.lock:
                    server.requests.append({'path': self.path, 'headers': dict(self.headers), 'json': json.loads(body)})
                    step = server.script.pop(0) if server.script else {}
                time.sleep(step.get('delay', server.latency))
                status = step.get('status', 200)
                if 'raw' in step:
                    payload = step['raw'].encode()
                else:
                    content = step.get('content')
                    if content is None:
                        content = (
                            server.responder(server.requests[-1]['json'])
                            if server.responder
                            else server.default_content
                        )
                    message = {'role': 'assistant', 'content': content}
                    if 'refusal' in step:
                        message = {'role': 'assistant', 'content': None, 'refusal': step['refusal']}
                    payload = json.dumps(
                        {
                            'id': 'x',
                            'object': 'chat.completion',
                            'model': 'test-vlm',
                            'choices': [
                                {'index': 0, 'message': message, 'finish_reason': step.get('finish_reason', 'stop')}
                            ],
                        }
                    ).encode()
                try:
                    self.send_response(status)
                    self.send_header('Content-Type', 'application/json')
                    self.send_header('Content-Length', str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
