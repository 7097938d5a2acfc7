"""A small instruction grammar for the scripted demo planner.

  pick [up] <object>                      -> lift the object
  put|place|move <object> in|into|on|onto <destination>

Objects are resolved against the scene's labels by word overlap; an instruction that names no
known object, or names one ambiguously, is rejected with the reason, never guessed.
"""
import re
from dataclasses import dataclass

PLACE = re.compile(r'^(?:please\s+)?(?:put|place|move|drop)\s+(?P<obj>.+?)\s+(?:in|into|on|onto|inside)\s+(?P<dest>.+?)\.?$')
PICK = re.compile(r'^(?:please\s+)?(?:pick(?:\s+up)?|lift|grab)\s+(?P<obj>.+?)(?:\s+up)?\.?$')
STOP_WORDS = {'the', 'a', 'an', 'this', 'that'}


class GroundingError(ValueError):
    """The instruction cannot be turned into a goal; the message says why."""


@dataclass(frozen=True)
class PickPlaceGoal:
    object_id: str
    destination_id: str = ''   # empty: pick and lift only


def _words(text):
    return {w for w in re.findall(r'[a-z0-9]+', text.lower()) if w not in STOP_WORDS}


def resolve(reference, labels):
    """The id whose label best matches the reference; labels: {id: label}."""
    wanted = _words(reference)
    scores = {oid: len(wanted & _words(label)) / max(1, len(wanted | _words(label))) for oid, label in labels.items()}
    best = max(scores.values(), default=0.0)
    if best == 0.0:
        raise GroundingError(f'no object matches "{reference}"; the scene has: {", ".join(sorted(labels.values()))}')
    winners = [oid for oid, s in scores.items() if s == best]
    if len(winners) > 1:
        raise GroundingError(f'"{reference}" is ambiguous: {", ".join(labels[w] for w in winners)}')
    return winners[0]


def ground(instruction, labels):
    text = ' '.join(instruction.lower().split())
    if not text:
        raise GroundingError('empty instruction')
    if m := PLACE.match(text):
        obj, dest = resolve(m['obj'], labels), resolve(m['dest'], labels)
        if obj == dest:
            raise GroundingError(f'object and destination are the same ({labels[obj]})')
        return PickPlaceGoal(obj, dest)
    if m := PICK.match(text):
        return PickPlaceGoal(resolve(m['obj'], labels))
    raise GroundingError('the demo planner understands "pick up <object>" and "put <object> in|on <destination>"')
