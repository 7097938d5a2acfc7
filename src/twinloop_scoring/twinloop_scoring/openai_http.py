"""OpenAI-compatible chat completions over HTTP: vLLM, SGLang, Ollama, LM Studio, OpenAI, ...

Images go as base64 PNG data URLs (several per message); JSON output is requested with
response_format json_schema (json_object when the server does not take schemas); retries with
exponential backoff on 429/5xx/network errors (waiting as long as a Retry-After header asks), a
concurrency limit, and a response cache keyed by the prompt and image hashes. The API key comes
from an environment variable and is never logged or stored in results.

The transport is httpx, and nothing a server does can hold a request longer than its deadline or
make it read more than `max_bytes`:

- `timeout` bounds one attempt as a whole (connect, send, and the whole response: a server that
  drips a byte at a time ends at the timeout, not never); `deadline` bounds the request, all
  attempts and waits included. Every socket read and write is limited to what is left of both;
- the body is streamed and refused once it passes `max_bytes` (8 MB by default);
- redirects are never followed (a redirect is an error naming its status and Location), so the
  API key is only ever sent to `base_url`;
- replies are parsed defensively (any JSON, however nested or oddly typed, becomes a reply or an
  error), and every failure is a VLMError value: nothing escapes complete().
"""

import base64
import email.utils
import ipaddress
import json
import math
import os
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import httpcore
import httpx

from twinloop_scoring.vlm import VLMBackend, VLMError, VLMReply, png_bytes

RETRIABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_BYTES = 8 * 2**20  # default cap on a response body [bytes]
_WRITE_CHUNK = 2**16  # request bodies are sent in pieces, each bounded by the deadline

_attempt_deadline = threading.local()  # .at: time.monotonic() by which this thread's attempt must end


class _DeadlineReached(Exception):
    pass


class _TooLarge(Exception):
    pass


class _Malformed(ValueError):
    pass


def _left(error):
    """Seconds left of this thread's attempt (None: no deadline); raises `error` when none are."""
    at = getattr(_attempt_deadline, 'at', None)
    if at is None:
        return None
    left = at - time.monotonic()
    if left <= 0:
        raise error('deadline reached')
    return left


def _bounded(timeout, error):
    left = _left(error)
    return timeout if left is None else left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the attempt's deadline."""

    def __init__(self, stream):
        self._stream = stream

    def read(self, max_bytes, timeout=None):
        """Read up to max_bytes within the time left."""
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer, timeout=None):
        """Write the buffer in pieces, each within the time left (a slow reader cannot stretch it)."""
        for i in range(0, len(buffer), _WRITE_CHUNK):
            self._stream.write(buffer[i : i + _WRITE_CHUNK], _bounded(timeout, httpcore.WriteTimeout))

    def close(self):
        """Close the socket."""
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        """TLS over this stream, the handshake within the time left."""
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info):
        """The wrapped stream's extra information (socket, is_readable, ...)."""
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's synchronous sockets, with every operation bounded by the calling thread's attempt deadline."""

    def __init__(self):
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        """A TCP connection opened within the time left."""
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        """A Unix socket connection opened within the time left."""
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds):
        """Sleep (httpcore's connect retries; unused here)."""
        self._backend.sleep(seconds)


class _Body(httpx.SyncByteStream):
    def __init__(self, stream):
        self._stream = stream

    def __iter__(self):
        yield from self._stream

    def close(self):
        if hasattr(self._stream, 'close'):
            self._stream.close()


class _Transport(httpx.BaseTransport):
    """httpx over an httpcore pool on the deadline-bounded sockets (httpcore errors pass through unmapped)."""

    def __init__(self, pool):
        self._pool = pool

    def handle_request(self, request):
        """Send one request through the pool."""
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = self._pool.handle_request(core)
        return httpx.Response(
            response.status, headers=response.headers, stream=_Body(response.stream), extensions=response.extensions
        )

    def close(self):
        """Close every pooled connection."""
        self._pool.close()


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return host.lower() == 'localhost'


def env_proxy(url):
    """The proxy the environment names for `url` (http_proxy, https_proxy, no_proxy), as urllib would use;
    None for loopback servers, bypassed hosts and non-HTTP proxies."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ''
    if _is_loopback(host) or urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    return proxy if proxy and urllib.parse.urlsplit(proxy).scheme in ('http', 'https') else None


def _connection_pool(url, connections):
    backend = _DeadlineBackend()
    limits = {'max_connections': connections, 'max_keepalive_connections': connections}
    proxy = env_proxy(url)
    tls = httpx.create_ssl_context() if url.startswith('https:') or (proxy or '').startswith('https:') else None
    if proxy is None:
        return httpcore.ConnectionPool(ssl_context=tls, network_backend=backend, **limits)
    proxy = httpx.Proxy(proxy)
    return httpcore.HTTPProxy(
        proxy_url=httpcore.URL(
            scheme=proxy.url.raw_scheme, host=proxy.url.raw_host, port=proxy.url.port, target=proxy.url.raw_path
        ),
        proxy_auth=proxy.raw_auth,
        proxy_headers=proxy.headers.raw,
        ssl_context=tls,
        proxy_ssl_context=proxy.ssl_context,
        network_backend=backend,
        **limits,
    )


def retry_after_seconds(value, now=None):
    """Seconds a Retry-After header value asks to wait (delay-seconds or an HTTP date); None if unreadable."""
    value = (value or '').strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _head(response, size):
    """The first `size` bytes of the body (an error page's start), the rest left unread."""
    head = b''
    for chunk in response.iter_bytes():
        head += chunk[: size - len(head)]
        if len(head) >= size:
            break
    return head


def _type(value):
    return type(value).__name__


def parse_reply(body):
    """(text, model, finish_reason, refusal) from a chat-completions body; raises ValueError naming what is wrong."""
    try:
        answer = json.loads(body)
    except RecursionError:
        raise _Malformed('JSON nested too deeply') from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise _Malformed(f'not JSON ({str(exc)[:120]})') from None
    if not isinstance(answer, dict):
        raise _Malformed(f'the reply is a JSON {_type(answer)}, not an object')
    choices = answer.get('choices')
    if choices is None and 'error' in answer:
        error = answer['error']
        message = error.get('message') if isinstance(error, dict) else error
        raise _Malformed(f'an error object instead of choices: {str(message)[:200]}')
    if not isinstance(choices, list) or not choices:
        raise _Malformed(f"'choices' is {_type(choices) if choices != [] else 'empty'}, not a non-empty list")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _Malformed(f"'choices[0]' is {_type(choice)}, not an object")
    message = choice.get('message')
    if not isinstance(message, dict):
        raise _Malformed(f"'message' is {_type(message)}, not an object")
    content = message.get('content')
    if content is None:
        text = ''
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise _Malformed(f"'content' part {i} is {_type(part)}, not an object")
            if part.get('type', 'text') == 'text':
                if not isinstance(part.get('text'), str):
                    raise _Malformed(f"'content' part {i} has no text string")
                texts.append(part['text'])
        text = ''.join(texts)
    else:
        raise _Malformed(f"'content' is {_type(content)}, not a string or a list of parts")
    refusal = message.get('refusal')
    model = answer.get('model')
    return (
        text,
        model if isinstance(model, str) else None,
        choice.get('finish_reason'),
        str(refusal)[:500] if refusal else None,
    )


class OpenAIHTTPBackend(VLMBackend):
    """A VLM behind an OpenAI-compatible chat-completions endpoint (`base_url` + /chat/completions).

    timeout: seconds one attempt may take as a whole; deadline: seconds the request may take, all
    attempts, backoff and Retry-After waits included (None: timeout x attempts + the backoff, as
    long as the retry schedule can take); max_bytes: the largest response body read.
    """

    name = 'openai_http'
    is_vlm = True

    def __init__(
        self,
        base_url,
        model,
        api_key_env='OPENAI_API_KEY',
        timeout=60.0,
        retries=3,
        backoff=1.0,
        concurrency=4,
        json_mode='json_schema',
        cache=True,
        deadline=None,
        max_bytes=MAX_BYTES,
    ):
        if json_mode not in ('json_schema', 'json_object', 'none'):
            raise ValueError(f'json_mode must be json_schema, json_object or none, not {json_mode!r}')
        if not float(timeout) > 0 or (deadline is not None and not float(deadline) > 0):
            raise ValueError(f'timeout and deadline must be positive, not {timeout!r} and {deadline!r}')
        if int(max_bytes) < 1 or int(retries) < 0 or int(concurrency) < 1:
            raise ValueError('max_bytes and concurrency must be at least 1, retries at least 0')
        if urllib.parse.urlsplit(base_url).scheme not in ('http', 'https'):
            raise ValueError(f'base_url must be an http:// or https:// URL, not {base_url!r}')
        self.url = base_url.rstrip('/') + '/chat/completions'
        self.model, self.timeout, self.retries, self.backoff = model, float(timeout), int(retries), float(backoff)
        if deadline is None:
            deadline = self.timeout * (self.retries + 1) + self.backoff * (2**self.retries - 1)
        self.deadline, self.max_bytes = float(deadline), int(max_bytes)
        self.json_mode = json_mode
        self._api_key_env = api_key_env
        self._pool = ThreadPoolExecutor(max_workers=int(concurrency), thread_name_prefix='vlm')
        self._client = httpx.Client(
            transport=_Transport(_connection_pool(self.url, int(concurrency))),
            follow_redirects=False,
            trust_env=False,  # proxies come from env_proxy; no other environment settings apply
            timeout=self.timeout,
        )
        self._cache = {} if cache else None
        self._cache_lock = threading.Lock()
        self.requests_sent = 0

    def payload(self, request):
        """The chat-completions JSON body for a VLMRequest."""
        content = [{'type': 'text', 'text': request.prompt}]
        for image in request.images:
            data = base64.b64encode(png_bytes(image)).decode()
            content.append({'type': 'image_url', 'image_url': {'url': f'data:image/png;base64,{data}'}})
        messages = ([{'role': 'system', 'content': request.system}] if request.system else []) + [
            {'role': 'user', 'content': content}
        ]
        body = {
            'model': self.model,
            'messages': messages,
            'temperature': request.temperature,
            'max_tokens': request.max_tokens,
        }
        if request.json_schema is not None and self.json_mode == 'json_schema':
            body['response_format'] = {
                'type': 'json_schema',
                'json_schema': {'name': 'reply', 'schema': request.json_schema, 'strict': True},
            }
        elif request.json_schema is not None and self.json_mode == 'json_object':
            body['response_format'] = {'type': 'json_object'}
        return body

    def _read(self, response, cap):
        """The body, refused once past `cap` bytes (the sockets end it at the deadline)."""
        declared = response.headers.get('content-length', '')
        if declared.isdigit() and int(declared) > cap:
            raise _TooLarge(f'Content-Length {declared} bytes exceeds max_bytes={cap}')
        parts, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise _TooLarge(f'more than max_bytes={cap} bytes')
            parts.append(chunk)
            _left(_DeadlineReached)
        return b''.join(parts)

    def _attempt(self, data, headers, limit):
        """One POST that ends within `limit` seconds: (body, None, False, None) on a 2xx answer, else
        (None, reason, retriable, Retry-After seconds or None)."""
        _attempt_deadline.at = time.monotonic() + limit
        try:
            with self._client.stream('POST', self.url, content=data, headers=headers, timeout=limit) as response:
                status = response.status_code
                if 300 <= status < 400:
                    location = response.headers.get('location', '(no Location)')[:300]
                    reason = f'redirect refused: HTTP {status} to {location} (redirects are not followed)'
                    return None, reason, False, None
                if not 200 <= status < 300:
                    if status in RETRIABLE_STATUS:
                        return None, f'HTTP {status}', True, retry_after_seconds(response.headers.get('retry-after'))
                    snippet = _head(response, 200).decode(errors='replace')
                    return None, f'HTTP {status}: {snippet}', False, None
                return self._read(response, self.max_bytes), None, False, None
        except _TooLarge as exc:
            return None, f'response too large: {exc}', False, None
        except (_DeadlineReached, httpcore.TimeoutException, httpx.TimeoutException):
            return None, f'timeout: no complete response within {limit:.3g} s', True, None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError, httpx.HTTPError, OSError) as exc:
            return None, f'network error: {type(exc).__name__}: {str(exc)[:200] or "connection failed"}', True, None
        finally:
            _attempt_deadline.at = None

    def _headers(self):
        headers = {'Content-Type': 'application/json', 'Accept-Encoding': 'identity'}
        key = os.environ.get(self._api_key_env, '')
        if key:
            headers['Authorization'] = f'Bearer {key}'
        return headers

    def _request(self, request, key):
        """One request through its retries and waits, within the deadline: a VLMReply or a VLMError."""
        data = json.dumps(self.payload(request)).encode()
        headers = self._headers()
        end = time.monotonic() + self.deadline
        reason, attempt = '', 0
        for attempt in range(1, self.retries + 2):
            started = time.monotonic()
            limit = min(self.timeout, end - started)
            if limit <= 0:
                reason = f'{reason}; deadline of {self.deadline:.3g} s reached after {attempt - 1} attempts'
                return VLMError(reason, self.name, self.model, attempt - 1)
            with self._cache_lock:
                self.requests_sent += 1
            body, reason, retriable, retry_after = self._attempt(data, headers, limit)
            if limit < 0.95 * self.timeout and reason and reason.startswith('timeout'):
                reason += ' (the request deadline)'
            if body is not None:
                try:
                    text, model, finish_reason, refusal = parse_reply(body)
                except _Malformed as exc:
                    reason, retriable = f'malformed response: {exc}', True
                else:
                    if refusal:
                        return VLMError(f'model refused: {refusal}', self.name, self.model, attempt)
                    if finish_reason != 'length':
                        if key is not None:
                            with self._cache_lock:
                                self._cache[key] = text
                        latency = time.monotonic() - started
                        return VLMReply(text, self.name, model or self.model, latency, attempts=attempt)
                    reason, retriable = 'reply truncated (finish_reason=length)', True
            if not retriable:
                return VLMError(reason, self.name, self.model, attempt)
            if attempt > self.retries:
                break
            wait = self.backoff * 2 ** (attempt - 1) if retry_after is None else retry_after
            left = end - time.monotonic()
            if retry_after is not None and wait >= left:
                return VLMError(
                    f'{reason}; Retry-After asks for {wait:.3g} s, past the deadline ({max(left, 0):.3g} s left)',
                    self.name,
                    self.model,
                    attempt,
                )
            if wait >= left:
                return VLMError(
                    f'{reason}; deadline of {self.deadline:.3g} s reached after {attempt} attempts',
                    self.name,
                    self.model,
                    attempt,
                )
            time.sleep(wait)
        return VLMError(f'{reason} after {attempt} attempts', self.name, self.model, attempt)

    def _one(self, request):
        try:
            key = request.cache_key(self.model) if self._cache is not None else None
            if key is not None:
                with self._cache_lock:
                    hit = self._cache.get(key)
                if hit is not None:
                    return VLMReply(hit, self.name, self.model, cached=True, attempts=0)
            result = self._request(request, key)
        except Exception as exc:  # the contract: failures are values, whatever went wrong
            result = VLMError(f'internal error: {type(exc).__name__}: {str(exc)[:200]}', self.name, self.model, 0)
        secret = os.environ.get(self._api_key_env, '')
        if isinstance(result, VLMError) and secret and secret in result.reason:
            result.reason = result.reason.replace(secret, '[api key]')
        return result

    def complete(self, requests):
        """One VLMReply or VLMError per request, same order; never raises for a failed request."""
        return list(self._pool.map(self._one, requests))

    def close(self):
        """Close the connections and the worker threads (the backend is not used afterwards)."""
        self._pool.shutdown(wait=True)
        self._client.close()
