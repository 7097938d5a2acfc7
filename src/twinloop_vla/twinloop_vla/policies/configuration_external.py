"""Configuration of ExternalPolicy, a client of an HTTP policy server (OpenVLA's /act style)."""

from dataclasses import dataclass

from twinloop_core.engine import ConfigError
from twinloop_vla.policies.base import PolicyConfig


@dataclass
class ExternalConfig(PolicyConfig):
    """Where the server is, how long to wait, and the chunk shape its replies must have."""

    url: str = 'http://127.0.0.1:8000/act'
    timeout_s: float = 5.0
    chunk_size: int = 8  # rows a reply must have (1 for servers that return one action)
    action_dim: int = 8

    def __post_init__(self):
        if not self.url.startswith(('http://', 'https://')):
            raise ConfigError(f'ExternalConfig: url must start with http:// or https://, got {self.url!r}')
        if self.timeout_s <= 0 or self.chunk_size < 1 or self.action_dim < 1:
            raise ConfigError('ExternalConfig: timeout_s must be > 0, chunk_size and action_dim >= 1')
