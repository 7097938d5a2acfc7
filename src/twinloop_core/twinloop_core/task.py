"""The structured task every engine consumes: the instruction grounded into ordered sub-tasks."""

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class SubTask:
    """One step of a task: an action on an object, with a destination where the action has one."""

    action: str  # pick, place, push, open, close
    object_id: str
    destination_id: str = ''


@dataclass
class TaskSpec:
    """A grounded instruction: its sub-tasks in order and how each phrase was resolved."""

    instruction: str
    subtasks: list
    references: dict = field(default_factory=dict)  # phrase -> (object id, similarity)

    def to_dict(self):
        """A JSON-able form (reports, logs)."""
        return {
            'instruction': self.instruction,
            'subtasks': [asdict(s) for s in self.subtasks],
            'references': {k: [v[0], round(v[1], 3)] for k, v in self.references.items()},
        }
