"""The structured task every engine consumes: an instruction grounded into ordered sub-tasks on
scene object ids, with task-wide constraints. Its JSON form is config/task_schema.json
(version SCHEMA_VERSION); `TaskSpec.to_schema` / `TaskSpec.from_schema` convert."""

from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = '1.0'
CONTAINER_RELATIONS = ('in', 'on')  # into / onto the destination object ('' reads as these)
REGION_RELATIONS = (
    'next_to',
    'left_of',
    'right_of',
    'in_front_of',
    'behind',
    'between',
    'aligned_with',
    'side_by_side',
    'at_distance',
)
RELATIONS = CONTAINER_RELATIONS + REGION_RELATIONS + ('towards',)
ACTIONS = ('pick', 'place', 'push', 'open', 'close', 'reorient', 'pour')
SCHEMA_ACTIONS = ACTIONS + ('stack', 'sort', 'move_relative')  # the last three are kinds of place
SPEEDS = ('normal', 'slow')


@dataclass(frozen=True)
class SubTask:
    """One step: an action on an object, with a destination where the action has one.

    relation '' / in / on: into or onto `destination_id`. A region relation (next_to, left_of,
    between, ...): a spot on the table at `offset` (x, y) [m] from the reference (for between, the
    midpoint of `destination_id` and `reference2_id`), done within `tolerance` [m]; the offset is
    computed once from the perceived footprints (twinloop_core.regions) and follows the reference."""

    action: str  # pick, place, push, open, close, reorient, pour
    object_id: str
    destination_id: str = ''
    relation: str = ''
    reference2_id: str = ''
    offset: tuple = ()
    tolerance: float = 0.0

    @property
    def is_region(self):
        """Whether the destination is a spot beside the reference rather than the reference itself."""
        return self.relation in REGION_RELATIONS

    def describe(self):
        """e.g. 'place red_cube next_to bowl'."""
        where = ''
        if self.destination_id:
            where = f' {self.relation or "in"} {self.destination_id}'
            where += f' and {self.reference2_id}' if self.reference2_id else ''
        return f'{self.action} {self.object_id}{where}'


@dataclass(frozen=True)
class Constraints:
    """Task-wide constraints: objects not to touch or move, a speed preference, keeping things upright."""

    do_not_move: tuple = ()
    speed: str = 'normal'
    keep_upright: bool = False


@dataclass
class TaskSpec:
    """A grounded instruction: its sub-tasks in order, how each phrase was resolved, its constraints,
    and which parser produced it (results name it)."""

    instruction: str
    subtasks: list
    references: dict = field(default_factory=dict)  # phrase -> (object id, similarity)
    constraints: Constraints = Constraints()
    parser: str = ''

    def to_dict(self):
        """A JSON-able form (reports, logs)."""
        return {
            'instruction': self.instruction,
            'parser': self.parser,
            'subtasks': [asdict(s) for s in self.subtasks],
            'constraints': asdict(self.constraints),
            'references': {k: [v[0], round(v[1], 3)] for k, v in self.references.items()},
        }

    def to_schema(self, labels=None):
        """The config/task_schema.json form; labels {id: label} fill the nouns."""
        labels = labels or {}

        def ref(oid):
            return {
                'id': oid,
                'noun': labels.get(oid, oid),
                'attributes': {'colour': '', 'size': '', 'position': '', 'category': ''},
            }

        steps = []
        for s in self.subtasks:
            destination = None
            if s.destination_id:
                destination = {
                    'relation': s.relation or 'in',
                    'reference': ref(s.destination_id),
                    'second_reference': ref(s.reference2_id) if s.reference2_id else None,
                    'distance_m': None,
                }
            steps.append({'action': s.action, 'object': ref(s.object_id), 'destination': destination})
        return {
            'schema_version': SCHEMA_VERSION,
            'steps': steps,
            'constraints': {
                'do_not_move': list(self.constraints.do_not_move),
                'speed': self.constraints.speed,
                'keep_upright': self.constraints.keep_upright,
            },
            'rejection': '',
        }
