"""OpenAI-compatible chat completions over HTTP: vLLM, SGLang, Ollama, LM Studio, OpenAI, ...

Images go as base64 PNG data URLs (several per message); JSON output is requested with
response_format json_schema (json_object when the server does not take schemas); timeouts,
retries with exponential backoff on 429/5xx/network errors, a concurrency limit, and a
response cache keyed by the prompt and image hashes. The API key comes from an environment
variable and is never logged or stored in results.
"""

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from twinloop_scoring.vlm import VLMBackend, VLMError, VLMReply, png_bytes

RETRIABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIHTTPBackend(VLMBackend):
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
    ):
        if json_mode not in ('json_schema', 'json_object', 'none'):
            raise ValueError(f'json_mode must be json_schema, json_object or none, not {json_mode!r}')
        self.url = base_url.rstrip('/') + '/chat/completions'
        self.model, self.timeout, self.retries, self.backoff = model, timeout, retries, backoff
        self.json_mode = json_mode
        self._api_key_env = api_key_env
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix='vlm')
        self._cache = {} if cache else None
        self._cache_lock = threading.Lock()
        self.requests_sent = 0

    def payload(self, request):
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

    def _post(self, body):
        headers = {'Content-Type': 'application/json'}
        key = os.environ.get(self._api_key_env, '')
        if key:
            headers['Authorization'] = f'Bearer {key}'
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method='POST')
        with urllib.request.urlopen(req, timeout=self.timeout) as response:
            return json.loads(response.read().decode())

    def _one(self, request):
        key = request.cache_key(self.model) if self._cache is not None else None
        if key is not None:
            with self._cache_lock:
                hit = self._cache.get(key)
            if hit is not None:
                return VLMReply(hit, self.name, self.model, cached=True, attempts=0)
        body = self.payload(request)
        reason = ''
        for attempt in range(1, self.retries + 2):
            started = time.monotonic()
            try:
                self.requests_sent += 1
                answer = self._post(body)
                choice = answer['choices'][0]
                text = choice['message'].get('content') or ''
                if choice.get('finish_reason') == 'length':
                    reason = 'reply truncated (finish_reason=length)'
                elif choice['message'].get('refusal'):
                    return VLMError(f'model refused: {choice["message"]["refusal"]}', self.name, self.model, attempt)
                else:
                    if key is not None:
                        with self._cache_lock:
                            self._cache[key] = text
                    return VLMReply(
                        text, self.name, answer.get('model', self.model), time.monotonic() - started, attempts=attempt
                    )
            except urllib.error.HTTPError as exc:
                reason = f'HTTP {exc.code}'
                if exc.code not in RETRIABLE_STATUS:
                    return VLMError(
                        f'{reason}: {exc.read()[:200].decode(errors="replace")}', self.name, self.model, attempt
                    )
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = f'network error: {getattr(exc, "reason", exc)}'
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                reason = f'malformed response: {exc}'
            if attempt <= self.retries:
                time.sleep(self.backoff * 2 ** (attempt - 1))
        return VLMError(f'{reason} after {self.retries + 1} attempts', self.name, self.model, self.retries + 1)

    def complete(self, requests):
        return list(self._pool.map(self._one, requests))
