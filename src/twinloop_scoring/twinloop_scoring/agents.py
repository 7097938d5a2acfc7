"""Scorer agents from config/vlm_agents.yaml: a registry of backend constructors by name."""

import yaml

from twinloop_scoring import vqa
from twinloop_scoring.openai_http import OpenAIHTTPBackend
from twinloop_scoring.twin_critic import TwinCritic


def _openai(entry):
    keys = ('timeout', 'deadline', 'max_bytes', 'backoff', 'retries', 'concurrency', 'json_mode', 'api_key_env')
    return OpenAIHTTPBackend(entry['base_url'], entry['model'], **{k: entry[k] for k in keys if k in entry})


def _transformers(entry):
    from twinloop_scoring.transformers_backend import TransformersBackend

    return TransformersBackend(entry['model_dir'])


BACKENDS = {'twin_critic': lambda entry: TwinCritic(), 'openai_http': _openai, 'transformers': _transformers}


def load(agents_file, names, overrides=None):
    """vqa.Agents for the named entries; overrides: {name: {key: value}} (e.g. a base_url in tests)."""
    with open(agents_file) as f:
        entries = (yaml.safe_load(f) or {}).get('agents', {})
    agents = []
    for name in names:
        if name not in entries:
            raise ValueError(f'unknown agent {name!r}; {agents_file} defines {sorted(entries)}')
        entry = {**entries[name], **(overrides or {}).get(name, {})}
        if entry.get('backend') not in BACKENDS:
            raise ValueError(f'agent {name!r}: backend must be one of {sorted(BACKENDS)}')
        agents.append(vqa.Agent(BACKENDS[entry['backend']](entry), float(entry.get('temperature', 0.0))))
    return agents
