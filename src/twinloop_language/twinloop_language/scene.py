"""What a parser knows of the scene: object ids with their labels and perceived states."""

from dataclasses import dataclass

import numpy as np


class Rejected(ValueError):
    """The instruction cannot become a task in this scene; the message says why (shown to the user)."""


@dataclass
class Scene:
    """Perceived objects: labels {id: label} and states {id: (position, quat wxyz, size xyz)}."""

    labels: dict
    states: dict

    def position(self, oid):
        """The object's position (x, y, z) [m]."""
        return np.asarray(self.states[oid][0], float)

    def volume(self, oid):
        """Bounding-box volume [m^3]."""
        return float(np.prod(self.states[oid][2]))

    def inventory(self, ids=None):
        """'a, b and c': the labels of the given objects (all by default), for messages."""
        names = sorted({self.labels[i] for i in (self.labels if ids is None else ids)})
        return ', '.join(names[:-1]) + (' and ' if len(names) > 1 else '') + names[-1] if names else 'nothing'

    def object_list(self):
        """[{id, label, position, size}] rounded to the millimetre (for prompts and reports)."""
        return [
            {
                'id': oid,
                'label': self.labels[oid],
                'position': [round(float(v), 3) for v in self.states[oid][0]],
                'size': [round(float(v), 3) for v in self.states[oid][2]],
            }
            for oid in sorted(self.labels)
        ]
