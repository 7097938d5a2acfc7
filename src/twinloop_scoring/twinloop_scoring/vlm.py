"""The VLM client interface every decision engine uses.

A backend answers VLMRequests (a prompt, any number of images, optionally a JSON schema the
reply must follow) with VLMReplies that always name the backend and model that produced them.
Failures are values (VLMError), never exceptions that escape a batch: one bad view must not
lose the others.
"""

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class VLMRequest:
    """A prompt with images (and optionally a JSON schema) for a backend to answer."""

    prompt: str
    images: list = field(default_factory=list)  # (h, w, 3) uint8 arrays
    system: str = ''
    json_schema: dict = None  # the reply must be JSON following it (None: free text)
    temperature: float = 0.0
    max_tokens: int = 1024
    facts: dict = field(default_factory=dict)  # for non-visual critics (rollout data); never sent to a VLM

    def cache_key(self, model):
        """Stable hash of everything that determines the answer: model, prompts, schema, images."""
        h = hashlib.sha256()
        for part in (
            model,
            self.system,
            self.prompt,
            repr(self.json_schema),
            f'{self.temperature:.3f}',
            str(self.max_tokens),
        ):
            h.update(part.encode())
            h.update(b'\0')
        for image in self.images:
            h.update(hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest())
            h.update(repr(image.shape).encode())
        return h.hexdigest()


@dataclass
class VLMReply:
    """A backend's answer text, naming the backend and model that produced it."""

    text: str
    backend: str
    model: str
    latency: float = 0.0  # [s]
    cached: bool = False
    attempts: int = 1


@dataclass
class VLMError:
    """A failed request as a value (falsy): the reason and the backend and model that failed."""

    reason: str
    backend: str
    model: str
    attempts: int = 1

    def __bool__(self):
        return False


def png_bytes(image):
    """PNG encoding of an (h, w, 3) image as uint8."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format='PNG')
    return buffer.getvalue()


class VLMBackend:
    """Base of all backends. `is_vlm` says whether a vision-language model answers (results must say)."""

    name = 'base'
    is_vlm = True
    model = ''

    @property
    def label(self):
        """The backend's name, marked '(not a VLM)' where no vision-language model answers."""
        return self.name if self.is_vlm else f'{self.name} (not a VLM)'

    def complete(self, requests):
        """One reply or VLMError per request, same order."""
        raise NotImplementedError
