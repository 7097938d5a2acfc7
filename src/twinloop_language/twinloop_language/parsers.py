"""The parser config/language.yaml names: `embedded` or an agent of config/vlm_agents.yaml."""

import os

import yaml

from twinloop_language.embedded import EmbeddedParser
from twinloop_language.llm import LLMParser
from twinloop_language.schema import load_schema


def make_parser(config_file, categories_file=None, agents_file=None, parser=None, overrides=None, encoder=None):
    """The configured parser (`parser` overrides the file's choice; overrides: {agent: {key: value}})."""
    with open(config_file) as f:
        config = yaml.safe_load(f)
    here = os.path.dirname(os.path.abspath(config_file))
    name = parser or config.get('parser', 'embedded')
    if name == 'embedded':
        return EmbeddedParser(config, categories_file, encoder)
    from twinloop_scoring import agents

    (agent,) = agents.load(agents_file or os.path.join(here, 'vlm_agents.yaml'), [name], overrides)
    if not agent.backend.is_vlm:
        raise ValueError(f'agent {name!r} is {agent.backend.label}: the LLM parser needs a language model')
    with open(os.path.join(here, config['prompts_file'])) as f:
        prompts = yaml.safe_load(f)
    return LLMParser(
        agent.backend,
        prompts,
        load_schema(os.path.join(here, config['schema_file'])),
        config.get('repair_rounds', 1),
        config.get('max_length', 500),
        agent.temperature,
    )
