"""The structured task's JSON form (config/task_schema.json): validation against the schema and
against the scene, and conversion to the TaskSpec every engine consumes. Parsers that write JSON
(the LLM parser) go through here; its errors are worded for a repair round."""

import json

import jsonschema

from twinloop_core.regions import RegionError, placement_offset
from twinloop_core.task import REGION_RELATIONS, SCHEMA_VERSION, Constraints, SubTask, TaskSpec
from twinloop_language.scene import Rejected

PLACE_KINDS = ('place', 'stack', 'sort', 'move_relative')  # all become place sub-tasks
NEEDS_DESTINATION = PLACE_KINDS + ('pour',)
TAKES_DESTINATION = NEEDS_DESTINATION + ('push',)  # a push without one goes aside


class InvalidTask(ValueError):
    """A task that does not validate; `errors` lists every problem, one sentence each."""

    def __init__(self, errors):
        super().__init__('; '.join(errors))
        self.errors = errors


def load_schema(path):
    """The schema, checked to be a valid JSON schema of the version twinloop reads."""
    with open(path) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    version = schema['properties']['schema_version'].get('const')
    if version != SCHEMA_VERSION:
        raise ValueError(f'{path} is task schema {version}; this twinloop reads {SCHEMA_VERSION}')
    return schema


def schema_errors(data, schema):
    """Every way `data` breaks the schema, as 'at steps/0/action: ...' sentences."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f'at {"/".join(map(str, e.absolute_path)) or "the top level"}: {e.message[:300]}' for e in errors]


def to_task(data, scene, instruction, parser_label, schema):
    """TaskSpec from the JSON form; Rejected when it carries a rejection, InvalidTask when it does not
    validate against the schema or the scene (unknown ids, a destination missing or itself, no spot)."""
    if not isinstance(data, dict):
        raise InvalidTask([f'the reply must be a JSON object, not {type(data).__name__}'])
    errors = schema_errors(data, schema)
    if errors:
        raise InvalidTask(errors)
    if data['rejection'].strip():
        raise Rejected(f'{parser_label} declined: {data["rejection"].strip()}')
    if not data['steps']:
        raise InvalidTask(['steps is empty and rejection gives no reason'])
    subtasks, references = [], {}
    for index, step in enumerate(data['steps']):
        try:
            subtasks.append(_subtask(step, scene, references))
        except InvalidTask as exc:
            errors += [f'step {index}: {e}' for e in exc.errors]
    constraints = data['constraints']
    errors += [
        f'constraints: unknown object id {oid!r}' for oid in constraints['do_not_move'] if oid not in scene.labels
    ]
    if errors:
        raise InvalidTask(errors)
    return TaskSpec(
        instruction,
        subtasks,
        references,
        Constraints(tuple(constraints['do_not_move']), constraints['speed'], constraints['keep_upright']),
        parser_label,
    )


def _subtask(step, scene, references):
    ids = scene.labels
    errors = []
    for ref in [step['object']] + ([step['destination']['reference']] if step['destination'] else []):
        if ref['id'] not in ids:
            errors.append(f'unknown object id {ref["id"]!r} (the scene has {", ".join(sorted(ids))})')
    destination, action = step['destination'], step['action']
    if action in NEEDS_DESTINATION and destination is None:
        errors.append(f'{action} needs a destination')
    if action not in TAKES_DESTINATION and destination is not None:
        errors.append(f'{action} takes no destination')
    second = destination and destination['second_reference']
    if destination and destination['relation'] == 'between' and not second:
        errors.append('between needs second_reference')
    if second and second['id'] not in ids:
        errors.append(f'unknown object id {second["id"]!r}')
    if errors:
        raise InvalidTask(errors)
    oid = step['object']['id']
    references[step['object']['noun'] or oid] = (oid, 1.0)
    if destination is None:
        return SubTask(action, oid)
    target, relation = destination['reference']['id'], destination['relation']
    if oid in (target, second and second['id']):
        raise InvalidTask([f'{oid} cannot be its own destination'])
    action = 'place' if action in PLACE_KINDS else action
    if action == 'place' and relation in ('in', 'towards'):
        relation = ''  # into the destination (the default); 'on' stays: onto its top, not its floor
    offset = ()
    if relation in REGION_RELATIONS:
        refs = [target] + ([second['id']] if second else [])
        try:
            offset = placement_offset(relation, oid, refs, scene.states, destination['distance_m'])
        except RegionError as exc:
            raise Rejected(str(exc)) from None
    return SubTask(action, oid, target, relation, second['id'] if second else '', offset)
