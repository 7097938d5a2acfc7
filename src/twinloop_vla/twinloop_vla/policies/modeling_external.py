"""ExternalPolicy: actions from an HTTP policy server, in the style of OpenVLA's `/act` endpoint.

Request (POST, JSON): {"instruction": str, "images": [PNG as base64, one per view], "state": [float]}.
Reply (JSON): {"actions": [[float] * action_dim] * chunk_size}. Every failure - no answer within
timeout_s, an HTTP error status, a reply that is not JSON, without "actions", of the wrong shape or
with non-finite numbers - raises PolicyError saying which, never a half-parsed chunk. The server
trains and holds its own model, so this policy has no training loss and no weights.
"""

import base64
import io

import httpx
import numpy as np
from PIL import Image

from twinloop_vla.policies.base import Policy, PolicyError, register_policy
from twinloop_vla.policies.configuration_external import ExternalConfig


def png_base64(image):
    """uint8 (H, W, 3) -> base64 text of its PNG encoding."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format='PNG')
    return base64.b64encode(buffer.getvalue()).decode('ascii')


@register_policy('external')
class ExternalPolicy(Policy):
    """Forwards each observation to the policy server at config.url and checks its reply."""

    config_class = ExternalConfig

    def __init__(self, config, stats=None):
        super().__init__(config, stats)
        self.client = httpx.Client(timeout=config.timeout_s)

    def forward(self, batch):
        """Not available: the server trains its own model."""
        raise PolicyError('ExternalPolicy has no training loss: the policy server trains its own model')

    def select_action_chunk(self, observation):
        """POST the observation, return the reply's chunk as float32 (chunk_size, action_dim)."""
        c = self.config
        payload = {
            'instruction': observation['instruction'],
            'images': [png_base64(view) for view in observation['images']],
            'state': np.asarray(observation['state'], dtype=float).tolist(),
        }
        try:
            reply = self.client.post(c.url, json=payload)
        except httpx.TimeoutException:
            raise PolicyError(f'policy server {c.url} did not answer within {c.timeout_s} s') from None
        except httpx.HTTPError as exc:
            raise PolicyError(f'policy server {c.url} cannot be reached: {exc}') from None
        if reply.status_code != 200:
            raise PolicyError(f'policy server {c.url} answered HTTP {reply.status_code}: {reply.text[:200]!r}')
        try:
            actions = reply.json()['actions']
        except ValueError:
            raise PolicyError(
                f'policy server {c.url} replied with something that is not JSON: {reply.text[:200]!r}'
            ) from None
        except (KeyError, TypeError):
            raise PolicyError(f'policy server {c.url} replied without "actions": {reply.text[:200]!r}') from None
        try:
            chunk = np.asarray(actions, dtype=np.float32)
        except (ValueError, TypeError):
            raise PolicyError(
                f'policy server {c.url}: "actions" is not a numeric array: {str(actions)[:200]}'
            ) from None
        if chunk.shape != (c.chunk_size, c.action_dim):
            raise PolicyError(
                f'policy server {c.url}: actions of shape {chunk.shape}, expected ({c.chunk_size}, {c.action_dim})'
            )
        if not np.isfinite(chunk).all():
            raise PolicyError(f'policy server {c.url}: actions contain NaN or infinity')
        return chunk
