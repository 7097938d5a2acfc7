"""Code writers of the IKER engine, by name: who writes `get_interaction_data` for a stage.

In IKER (shared/seeds/002, Sec. III-A and Appendix B) a VLM gets the instruction, the query image
(numbered keypoints and the axes) and, for multi-step tasks, the execution history (the earlier
images and code), and answers with the code. Two writers share one interface,
`write(WriteRequest) -> WrittenCode`, and raise WriterError with a message that says what went
wrong:

- `template`: twinloop_iker.template_writer from the structured task, one sub-task per stage (the
  stage is the number of stages that succeeded so far); labelled 'template writer (not a VLM)'.
- `vlm`: an agent of config/vlm_agents.yaml (twinloop_scoring.agents, any OpenAI-compatible
  server) prompted with config/iker_prompts.yaml; the code is taken from the reply (a ```python
  block, or plain code) and returned as text. Nothing it writes runs here: the engine runs it in
  twinloop_iker.sandbox.

Every WrittenCode names the writer that produced it (results must say which, and whether it was
a VLM).
"""

import os
import re
from dataclasses import dataclass

import yaml

from twinloop_iker import sandbox, template_writer
from twinloop_iker.sandbox_child import FUNCTION, SAFE_BUILTINS
from twinloop_scoring import agents
from twinloop_scoring.vlm import VLMRequest

FENCE = re.compile(r'```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```', re.S)
TOP_LEVEL = re.compile(r'def |#|[A-Za-z_]\w*\s*=')  # top-level lines plain code may continue with
QUOTED = 200  # characters of a reply quoted in an error


class WriterError(Exception):
    """No code for this stage; the message says why (a model error, a reply without code, no template)."""


@dataclass(frozen=True)
class HistoryEntry:
    """An executed stage: the query image the code was written for, the code, and what happened."""

    image: object  # (h, w, 3) uint8
    code: str
    outcome: str  # in words, e.g. 'the box moved 12 cm; the keypoints ended 3 cm from their targets'
    succeeded: bool = True


@dataclass(frozen=True)
class WriteRequest:
    """What a writer gets for one stage."""

    instruction: str  # the person's words
    query: object  # twinloop_iker.query_image.QueryImage of the current scene
    objects: dict  # perceived states {id: (position, quat wxyz, size xyz)}
    task: object = None  # twinloop_core.task.TaskSpec (the template writer needs it)
    history: tuple = ()  # of HistoryEntry, oldest first
    multi_step: bool = False


@dataclass(frozen=True)
class WrittenCode:
    """get_interaction_data source and who wrote it."""

    code: str
    writer: str  # the writer's label
    reply: str = ''  # the model's whole reply (vlm)
    prompt_version: int = 0  # config/iker_prompts.yaml version (vlm; 0: no prompt)


class TemplateWriter:
    """The template writer: code from the structured task, no model."""

    name = 'template'
    label = template_writer.LABEL

    def write(self, request):
        """Code for the next stage: the sub-task after the ones that succeeded."""
        if request.task is None:
            raise WriterError('the template writer needs the structured task (WriteRequest.task)')
        stage = sum(1 for entry in request.history if entry.succeeded)
        try:
            code = template_writer.write_code(
                request.task, request.query.keypoints, request.objects, stage, request.multi_step
            )
        except template_writer.TemplateError as error:
            raise WriterError(f'{self.label}: {error}') from None
        return WrittenCode(code, self.label)


def extract_code(text):
    """The code of a reply: the ```python (or unlabelled) block that defines get_interaction_data,
    else plain code from the first top-level def to the first line of prose; WriterError when there is none."""
    text = text or ''
    blocks = [body for language, body in FENCE.findall(text) if language.lower() in ('', 'python', 'py', 'python3')]
    for body in blocks:
        if f'def {FUNCTION}' in body:
            return body.strip('\n')
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('def ')), None)
    if start is not None and any(line.startswith(f'def {FUNCTION}') for line in lines[start:]):
        code = []
        for line in lines[start:]:
            if line.strip() and not line[0].isspace() and not TOP_LEVEL.match(line):
                break
            code.append(line)
        return '\n'.join(code).strip('\n')
    quoted = text.strip()[:QUOTED] or '(empty)'
    raise WriterError(f'the reply has no Python code defining {FUNCTION}(keypoint_coordinates): {quoted!r}')


class VLMWriter:
    """A VLM writes the code: the prompt of config/iker_prompts.yaml with the query image (and, for
    multi-step tasks, the earlier images and code)."""

    name = 'vlm'

    def __init__(self, agent, prompts, agent_name='', max_tokens=2048):
        """agent: a twinloop_scoring.vqa.Agent (backend and temperature); prompts: the parsed
        config/iker_prompts.yaml."""
        if not agent.backend.is_vlm:
            raise ValueError(f'agent {agent_name!r} is {agent.backend.label}: the vlm writer needs a VLM')
        self.agent, self.prompts, self.max_tokens = agent, prompts, max_tokens
        self.label = f'vlm {agent_name} ({agent.label})'.replace(' ()', '')

    def prompt(self, request):
        """The prompt text for a request (the images go with it: the history's, then the current one)."""
        p = self.prompts
        rules = p['rules'].format(
            numpy_names=', '.join(f'np.{n}' for n in sandbox.NUMPY_NAMES),
            builtin_names=', '.join(SAFE_BUILTINS),
            value_attributes=', '.join(sorted(sandbox.VALUE_ATTRIBUTES)),
        )
        axes = p['axes'] + ' ' + p['axes_in_picture'].format(**request.query.axes)
        history = '\n'.join(
            p['history_entry'].format(stage=i + 1, image=i + 1, code=entry.code, outcome=entry.outcome)
            for i, entry in enumerate(request.history)
        )
        text = p['multi_step' if request.multi_step else 'single_step'].format(
            axes=axes,
            rules=rules,
            object_list='\n'.join(f'- {oid}' for oid in request.query.object_ids),
            instruction=request.instruction,
            history=history or p['no_history'],
        )
        numbers = ', '.join(str(n) for n in sorted(request.query.keypoints)) or 'none'
        return text + '\n' + p['keypoint_list'].format(numbers=numbers)

    def write(self, request):
        """The code the VLM wrote for this stage; WriterError for a failed request or a reply without code."""
        images = ([entry.image for entry in request.history] if request.multi_step else []) + [request.query.image]
        vlm_request = VLMRequest(
            self.prompt(request), images, temperature=self.agent.temperature, max_tokens=self.max_tokens
        )
        (reply,) = self.agent.backend.complete([vlm_request])
        if not reply:
            raise WriterError(f'{self.label}: the request failed: {reply.reason}')
        try:
            code = extract_code(reply.text)
        except WriterError as error:
            raise WriterError(f'{self.label}: {error}') from None
        return WrittenCode(code, self.label, reply.text, int(self.prompts['version']))


def _template(config_dir):
    return TemplateWriter()


def _vlm(config_dir, agent, overrides=None, max_tokens=2048):
    (loaded,) = agents.load(os.path.join(config_dir, 'vlm_agents.yaml'), [agent], overrides)
    with open(os.path.join(config_dir, 'iker_prompts.yaml')) as f:
        prompts = yaml.safe_load(f)
    return VLMWriter(loaded, prompts, agent, max_tokens)


WRITERS = {'template': _template, 'vlm': _vlm}


def make_writer(name, config_dir=None, **options):
    """The writer registered under name; options: for vlm, agent (a name in vlm_agents.yaml),
    overrides ({agent: {key: value}}, e.g. a base_url in tests) and max_tokens. config_dir holds
    vlm_agents.yaml and iker_prompts.yaml."""
    if name not in WRITERS:
        raise ValueError(f'unknown code writer {name!r}; known: {sorted(WRITERS)}')
    return WRITERS[name](config_dir, **options)
