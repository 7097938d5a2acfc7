"""The LLM instruction parser: any OpenAI-compatible endpoint of config/vlm_agents.yaml (vLLM,
Ollama, OpenAI, ...) is asked, with the scene's object list (and a camera view when the agent
takes images), to fill config/task_schema.json through structured output. The reply is
validated against the schema and the scene; one that does not validate goes back with its
errors for a repair round (config/language.yaml: repair_rounds), then the instruction is
rejected with the errors. Prompts: config/language_prompts.yaml (versioned)."""

import copy
import json

from twinloop_language.scene import Rejected
from twinloop_language.schema import InvalidTask, to_task
from twinloop_language.screen import screen
from twinloop_scoring.vlm import VLMRequest


def _llm_schema(schema):
    """The schema as sent to a model: without the fields twinloop fills itself."""
    sent = copy.deepcopy(schema)
    for key in ('$schema', '$id'):
        sent.pop(key, None)
    sent['$defs']['step']['properties'].pop('done', None)
    return sent


class LLMParser:
    """Instruction -> TaskSpec by a language model behind an OpenAI-compatible endpoint."""

    takes_image = True  # a camera view goes with the object list when the caller has one

    def __init__(self, backend, prompts, schema, repair_rounds=1, max_length=500, temperature=0.0):
        self.backend, self.prompts, self.schema = backend, prompts, schema
        self.repair_rounds, self.max_length, self.temperature = int(repair_rounds), int(max_length), temperature
        self.sent_schema = _llm_schema(schema)
        self.label = f'LLM parser ({backend.label}, model {backend.model}, prompts v{prompts["version"]})'

    def parse(self, instruction, scene, image=None):
        """TaskSpec for an instruction in a Scene; Rejected(reason) when it cannot be done."""
        text = ' '.join(str(instruction).split())
        if not text:
            raise Rejected('empty instruction: no action or object in it')
        if len(text) > self.max_length:
            raise Rejected(f'instruction longer than {self.max_length} characters')
        screen(text.lower())
        prompt = self.prompts['user'].format(
            frame=self.prompts['frame'], objects=json.dumps(scene.object_list()), instruction=text.replace('"', "'")
        )
        images = [image] if image is not None else []
        for attempt in range(self.repair_rounds + 1):
            reply = self.backend.complete([self._request(prompt, images)])[0]
            if not reply:
                raise Rejected(f'{self.label} failed: {reply.reason}')
            try:
                return to_task(_json(reply.text), scene, instruction, self.label, self.schema)
            except InvalidTask as exc:
                errors = exc.errors
            if attempt < self.repair_rounds:
                prompt += '\n\n' + self.prompts['repair'].format(reply=reply.text[:4000], errors='; '.join(errors[:8]))
        raise Rejected(
            f'{self.label}: the reply did not validate after {self.repair_rounds} repair round(s): '
            + '; '.join(errors[:4])
        )

    def _request(self, prompt, images):
        return VLMRequest(prompt, images, self.prompts['system'], self.sent_schema, self.temperature, max_tokens=1500)


def _json(text):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidTask([f'the reply is not JSON ({exc})']) from None
