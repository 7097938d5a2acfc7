"""The embedded instruction parser (the default; NOT a language model): rules over the vocabulary
of config/language.yaml, with object references resolved by meaning through the packaged
all-MiniLM-L6-v2 sentence model ("the fruit" finds the banana) and by what the scene shows
(colours in the labels, perceived sizes and positions).

An instruction goes through these steps:
1. screen: shell commands, prompt injection and speed demands are refused outright;
2. constraints are cut out: "without touching the mug" / "leave the mug alone" (do-not-move),
   "slowly" / "carefully" (slow), "keep it upright";
3. politeness and fillers are dropped; the rest is split into steps ("then", "after that", ";",
   "and" + a verb);
4. each step: a verb (longest match; synonyms map to pick, place, push, sort, open, close,
   reorient), the object phrase and, where there is one, a relation and its reference ("into",
   "on top of", "next to", "left of", "between A and B", "10 cm from", "where recyclables go");
5. object phrases resolve against the scene: anaphora ("it", "the other one", "the blue one
   too"), colours (families: scarlet is red), the noun by sentence similarity, then sizes
   ("the smaller cube"), positions ("the leftmost block", "the nearest one") and relational
   qualifiers ("the bowl between the plate and the ramekin") pick one of equal matches;
6. relations beside an object become spots on the table (twinloop_core.regions).
Anything that names no object of the scene, or two equally, is rejected with the reason."""

import difflib
import re
from dataclasses import dataclass, field, replace

import numpy as np
import yaml

from twinloop_core.sentences import MiniLm
from twinloop_core.regions import SIDES, RegionError, placement_offset, radius
from twinloop_core.task import REGION_RELATIONS, Constraints, SubTask, TaskSpec
from twinloop_language.scene import Rejected
from twinloop_language.screen import screen

LABEL = 'embedded rule parser + all-MiniLM-L6-v2 (not a language model)'
DETERMINERS = r'(?:the|a|an|this|that|these|those|my|your|our|some|any|one of the)'
DISTANCE = re.compile(
    r'\b(\d+(?:\.\d+)?)\s*(cm|centimet(?:er|re)s?|mm|millimet(?:er|re)s?|m|met(?:er|re)s?|inch(?:es)?|in)\s+'
    r'(?:away\s+)?from\s+'
)
UNITS = (('c', 0.01), ('mm', 0.001), ('mil', 0.001), ('in', 0.0254), ('m', 1.0))  # by prefix, in this order
AND_ALSO = r',?\s+and\s+(?=(?:(?!\band\b).)+\b(?:too|as well|also)$)'  # "..., and the small one too"
SYNONYM_WEIGHT = 0.9
SHADES = {
    'dark',
    'light',
    'bright',
    'deep',
    'pale',
    'pitch',
    'jet',
    'navy',
    'sky',
    'lime',
    'cherry',
    'forest',
    'royal',
    'baby',
    'hot',
    'neon',
    'pastel',
    'dull',
    'vivid',
    'blood',
    'fire',
    'grass',
    'ocean',
    'sea',
}
IDIOMS = (  # whole-step phrasings rewritten to the grammar's shape
    (  # "put the book upright on the shelf", "stand the book up on its end on the shelf"
        r'^(?:stand|set|turn|put|place|flip|get)\s+(.+?)\s+(?:back\s+)?(?:upright|up)(?:\s+on\s+(?:its|their)\s+ends?)?'
        r'\s+(?:on|onto|on top of|upon)\s+(.+)$',
        r'reorient \1 onto \2',
    ),
    (
        r'^(?:stand|set|turn|put|flip|get)\s+(.+?)\s+(?:back\s+)?(?:upright|up|right side up|the right way up)$',
        r'reorient \1',
    ),
    (
        r'^give\s+(.+?)\s+(?:a\s+)?(?:(?:little|small|gentle|slight|quick|good)\s+)?(?:push|shove|nudge)\s+(.+)$',
        r'push \1 \2',
    ),
    (r'^line\s+(.+?)\s+up\s+(?:with|against)\s+(.+)$', r'put \1 aligned with \2'),
    (r'^line up\s+(.+?)\s+(?:with|against)\s+(.+)$', r'put \1 aligned with \2'),
)
CONTAINER_OF = (
    r'(?:can|tin|box|bottle|jar|carton|packet|pack|bag|cup|glass|tub|block|stick)\s+of\s+(.+)'  # "can of soup"
)
OPPOSITE_SIDE = {'leftmost': 'right', 'rightmost': 'left'}  # a side said of an object, and the word it excludes
DIRECTIONAL = {'behind': 'behind', 'front': 'in_front_of', 'of': '', 'left': 'left_of', 'right': 'right_of'}
PART_OF = (  # "the top drawer of the cabinet": the cabinet
    r'(?:(?:top|middle|bottom|upper|lower|left|right|front|back|first|second)\s+)?'
    r'(?:drawer|door|lid|handle|top|side|edge|shelf)s?\s+(?:of|on)\s+(.+)'
)
REPEAT = r'(?:do|repeat)\s+(?:the\s+same|that|it|this)(?:\s+(?:thing|again))?\s+(?:with|for|to)\s+(.+)'
ALSO = re.compile(r'\s*,?\s*\b(?:too|as well|also|aswell)$')
SEPARATORS = (
    r'\s*[;.!?]\s+|\s+-+\s+|:\s+|\s*,?\s*\b(?:and\s+)?then\b[\s,]*|\s*,?\s*\bnext\s*,\s*|'
    r'\s*,?\s*\b(?:after that|afterwards|after this|finally|'
    r'and finally|lastly|once (?:that is|that\'s|you are|you\'re|it is|it\'s) done|when (?:that is|that\'s|you are|'
    r'you\'re) done)\b[\s,]*'
)


def _alternation(phrases):
    """A regex alternation of phrases, longest first (so the longest match wins at a position)."""
    return '|'.join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))


def _inflections(phrase):
    """A verb phrase and its -s and -ing forms ("drop up" -> "drops up", "dropping up"; "place" -> "placing")."""
    verb, _, tail = phrase.partition(' ')
    forms = {verb, verb + 's', verb + 'ing'}
    if verb.endswith('e'):
        forms.add(verb[:-1] + 'ing')
    if re.fullmatch(r'[^aeiou]*[aeiou][bdgmnpt]', verb):
        forms.add(verb + verb[-1] + 'ing')
    return {f'{f} {tail}'.strip() for f in forms}


@dataclass
class Lexicon:
    """The vocabulary of config/language.yaml, compiled to regular expressions."""

    words: dict

    def __post_init__(self):
        w = self.words
        self.verb_action = {
            form: action for action, phrases in w['verbs'].items() for p in phrases for form in _inflections(p)
        }
        self.pick_forms = {f for p in w['verbs']['pick'] for f in _inflections(p)}
        self.place_forms = {f for p in w['verbs']['place'] for f in _inflections(p)}
        self.relation_of = {p: rel for rel, phrases in w['relations'].items() for p in phrases}
        self.colour_of = {p: colour for colour, phrases in w['colours'].items() for p in phrases}
        self.size_of = {p: size for size, phrases in w['sizes'].items() for p in phrases}
        self.position_of = {p: pos for pos, phrases in w['positions'].items() for p in phrases}
        self.leading = re.compile(rf'^(?:(?:{_alternation(w["leading_fillers"])})\b[\s,:!-]*)+')
        self.trailing = re.compile(rf'(?:[\s,]*\b(?:{_alternation(w["trailing_fillers"])}))+$')
        self.verb = re.compile(rf'^({_alternation(self.verb_action)})\b\s*')
        self.relation = re.compile(rf'\b({_alternation(self.relation_of)})\b')
        self.aside = re.compile(rf'^(.+?)\s+(?:{_alternation(w["aside"])})$')
        self.verb_ahead = re.compile(
            rf',?\s+and\s+(?=(?:{_alternation(self.verb_action)})\b)|,\s+(?=(?:'
            rf'{_alternation(self.verb_action)})\b)'
        )
        self.slow = re.compile(rf'[\s,]*\b(?:{_alternation(w["slow_words"])})\b')
        avoid = _alternation(w['avoid_verbs'])
        clause_end = rf'(?=\s*(?:[,;.!?]|$|\bthen\b|\band\s+(?:then|{_alternation(self.verb_action)})\b|\bplease\b))'
        self.avoid = re.compile(  # "don't" and "never" need a verb ("don't touch X"; "don't mind" is no constraint)
            r'[\s,]*\b(?:(?:but|and|while)\s+)?(?:(?:without|avoid(?:ing)?|steer(?:ing)? clear of|'
            rf'stay(?:ing)? away from|keep(?:ing)? (?:away|clear) (?:from|of))\s+(?:(?:{avoid})\s+)?|'
            r'(?:while not|not|don\'t|do not|dont|never|careful not to|be careful not to|try not to|'
            r'making sure not to|make sure (?:you )?(?:don\'t|do not))\s+'
            rf'(?:{avoid})\s+)([^,;.!?]+?){clause_end}'
        )
        self.leave = re.compile(
            r'[\s,]*\b(?:(?:but|and)\s+)?(?:leave|leaving)\s+([^,;.!?]+?)\s+(?:alone|where it is|where they are|'
            r'in place|untouched|as it is|as they are|be)\b|'
            r'[\s,;]*\b([^,;.!?]+?)\s+(?:must|should|has to|needs to|have to)\s+(?:stay|remain)\s+'
            r'(?:put|where it is|where they are|in place|still|untouched)\b'
        )
        self.upright = re.compile(
            r'[\s,]*\b(?:(?:and|while|but)\s+)?(?:keep(?:ing)? (?:it|them) (?:upright|standing|level)|'
            r'without (?:tipping|tilting|spilling) (?:it|them)(?: over)?|(?:and |while )?(?:staying|kept) upright)\b'
        )
        self.waste = re.compile(rf'\b(?:{_alternation(w["waste_phrases"])})\b')
        self.generic, self.anaphora = set(w['generic_nouns']), set(w['anaphora'])
        self.not_objects, self.openable = set(w['not_objects']), set(w['openable_words'])
        self.categories = w.get('categories', {})
        self.synonyms = {
            word: [o for o in group if o != word] for group in w.get('noun_synonyms', []) for word in group
        }


@dataclass
class _Reference:
    """An object phrase taken apart: the noun and the words that choose among equal matches."""

    text: str
    noun: str = ''
    colour: str = ''
    size: str = ''
    position: str = ''
    anchors: list = field(default_factory=list)  # phrases of objects it is next to / between
    far: bool = False  # the one farthest from the anchors, not nearest
    side: str = ''  # behind / in_front_of / left_of / right_of the anchor: only candidates on that side


@dataclass
class _Context:
    """What earlier steps of the same instruction said (for "it", "the other one", "too")."""

    last_object: str = ''
    last_step: SubTask = None
    last_sorted: bool = False  # the last step chose its bin by waste category
    mentioned: list = field(default_factory=list)  # ids in the order they were named
    references: dict = field(default_factory=dict)
    redundant: int = 0  # qualifiers that chose among one candidate (a reading that needs fewer is better)

    def copy(self):
        """An independent copy (to try one reading of a step without touching this one)."""
        return replace(self, mentioned=list(self.mentioned), references=dict(self.references))


class EmbeddedParser:
    """Instruction -> TaskSpec over a Scene, or Rejected with the reason. Thread-compatible (no state between calls)."""

    label = LABEL
    takes_image = False

    def __init__(self, config, categories_file=None, encoder=None):
        self.lexicon = Lexicon(config['lexicon'])
        self.threshold = float(config.get('similarity_threshold', 0.5))
        self.margin = float(config.get('similarity_margin', 0.03))
        self.confident = float(config.get('confident_similarity', 0.7))
        self.loose_margin = float(config.get('loose_margin', 0.1))
        self.max_length = int(config.get('max_length', 500))
        self.encoder = encoder or MiniLm()
        self.categories = {}
        if categories_file:
            with open(categories_file) as f:
                self.categories = (yaml.safe_load(f) or {}).get('categories', {})
        self._cache = {}

    # --- embeddings -------------------------------------------------------------------------------
    def _embed(self, texts):
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, vector in zip(missing, self.encoder.encode(missing, normalize_embeddings=True)):
                self._cache[text] = vector
        return np.array([self._cache[t] for t in texts])

    def _similarity(self, noun, names):
        """Cosine similarity of a noun phrase to each name, or to its head noun (last word) where higher."""
        query = self._embed([noun])
        return np.maximum(query @ self._embed(names).T, query @ self._embed([n.split()[-1] for n in names]).T)[0]

    # --- the pipeline -----------------------------------------------------------------------------
    def parse(self, instruction, scene, image=None):
        """TaskSpec for an instruction in a Scene; Rejected(reason) when it cannot be done (reads no image)."""
        text = ' '.join(str(instruction).lower().replace('\u2019', "'").split()).strip(' .!?')
        if not text:
            raise Rejected('empty instruction: no action or object in it')
        if len(text) > self.max_length:
            raise Rejected(f'instruction longer than {self.max_length} characters')
        screen(text)
        text, constraint_phrases, speed, upright = self._constraints(text)
        ctx = _Context()
        subtasks = []
        for step in self._steps(text):
            subtasks += self._step(step, scene, ctx)
        if not subtasks:
            raise Rejected(
                f'"{instruction}" does not say what to do '
                '(no action in it; actions: pick, place, push, sort, open, close)'
            )
        subtasks = _merge_pick_then_place(subtasks)
        phrases = [
            q
            for p in constraint_phrases
            for q in re.split(r',\s*(?:or\s+|and\s+|nor\s+)?|\s+(?:or|and|nor)\s+', p)
            if q
        ]
        avoid = tuple(dict.fromkeys(oid for p in phrases for oid in self._resolve_all(p, scene, ctx)))
        involved = {s.object_id for s in subtasks} | {s.destination_id for s in subtasks}
        if clash := sorted(set(avoid) & involved):
            raise Rejected(f'the task must move or use {scene.inventory(clash)} and also not touch it')
        return TaskSpec(
            instruction,
            subtasks,
            ctx.references,
            Constraints(avoid, 'slow' if speed else 'normal', upright),
            self.label,
        )

    def _constraints(self, text):
        """(text without them, do-not-move phrases, slow?, keep upright?)."""
        lex = self.lexicon
        upright = bool(lex.upright.search(text))
        text = lex.upright.sub('', text)
        avoid = [m.group(1) for m in lex.avoid.finditer(text)]
        avoid += [re.split(r'\b(?:and|but|while|so)\b', m.group(1) or m.group(2))[-1] for m in lex.leave.finditer(text)]
        text = lex.leave.sub('', lex.avoid.sub('', text))
        slow = bool(lex.slow.search(text))
        text = lex.slow.sub('', text)
        return text.strip(' ,'), avoid, slow, upright

    def _steps(self, text):
        """The instruction split into step phrases, fillers removed, in the order they are to be done."""
        text = re.sub(r'^(?:first(?:\s+of\s+all)?|to start|start by|begin by)\b[\s,]*', '', self._strip_fillers(text))
        before = re.fullmatch(r'before\s+(?:you\s+)?(.+?),\s*(.+)', text)  # "before you X, Y": Y then X
        if before:
            text = f'{before.group(2)}, then {before.group(1)}'
        after = re.fullmatch(r'after\s+(?:you\s+)?(.+?),\s*(.+)', text)  # "after you X, Y": X then Y
        if after:
            text = f'{after.group(1)}, then {after.group(2)}'
        first = re.fullmatch(r'(.+?),?\s+but\s+first,?\s+(.+)', text)  # "X, but first Y": Y then X
        if first:
            text = f'{first.group(2)}, then {first.group(1)}'
        text = re.sub(r',?\s+and\s+(?=(?:do|repeat)\s+(?:the\s+)?same\b)', ', then ', text)
        steps = []
        for part in re.split(SEPARATORS, text):
            pieces = [q for p in self.lexicon.verb_ahead.split(part) for q in re.split(AND_ALSO, p)]
            for piece in [r for q in pieces for r in self._split_placements(q)]:
                piece = self._strip_fillers(piece)
                if piece:
                    steps.append(piece)
        return steps

    def _split_placements(self, text):
        """ "put A in B and C on D" -> "put A in B", "C on D" (both sides name a destination; not a between)."""
        for m in re.finditer(r',?\s+and\s+', text):
            left, right = text[: m.start()], text[m.end() :]
            relations = list(self.lexicon.relation.finditer(left))
            if (
                relations
                and self.lexicon.relation.search(right)
                and self.lexicon.relation_of[relations[-1].group(1)] != 'between'
            ):
                if relations[-1].end() < len(left):  # the left side's destination is complete
                    return [left, *self._split_placements(right)]
        return [text]

    def _strip_fillers(self, text):
        previous = None
        while previous != text:
            previous = text
            text = self.lexicon.trailing.sub('', self.lexicon.leading.sub('', text.strip(' ,.:;!?'))).strip(' ,.:;!?')
        return text

    # --- one step ---------------------------------------------------------------------------------
    def _step(self, step, scene, ctx):
        step = re.sub(
            r'^(pick|lift|throw|toss|chuck|put|clean|tidy|clear|pull|push)\s+(.+?)\s+(up|away|out|open|closed|shut)$',
            r'\1 \3 \2',
            step,
        )  # "pick the cube up" -> "pick up the cube"
        for pattern, replacement in IDIOMS:
            step = re.sub(pattern, replacement, step)
        m = self.lexicon.verb.match(step) or self.lexicon.verb.match(self._verb_spelling(step))
        if m and m.string != step:
            step = m.string
        if not m:
            return self._verbless(step, scene, ctx)
        phrase, rest = m.group(1), step[m.end() :].strip()
        action = self.lexicon.verb_action[phrase]
        ctx.last_sorted = False
        rest = re.sub(r'^(?:down|back|up)\s+', '', rest)
        if not re.sub(rf'^(?:{DETERMINERS}\b\s*)+', '', rest):
            raise Rejected(f'incomplete instruction "{step}": {phrase} what?')
        if action == 'sort':
            return self._done(ctx, self._sort(rest, scene, ctx))
        if action in ('open', 'close', 'reorient'):
            openable = [i for i in ctx.mentioned if set(scene.labels[i].split()) & self.lexicon.openable]
            if action != 'reorient' and rest in self.lexicon.anaphora and openable:
                ctx.last_object = openable[-1]  # "put the block in the box, then close it": the box
            onto = re.match(r'(.+?)\s+onto\s+(.+)$', rest) if action == 'reorient' else None
            if onto:  # stood up on something
                oid = self._object(onto.group(1), scene, ctx)
                return self._done(ctx, [SubTask(action, oid, self._object(onto.group(2), scene, ctx), 'on')])
            oid = self._object(rest, scene, ctx)
            if action != 'reorient' and not set(scene.labels[oid].split()) & self.lexicon.openable:
                raise Rejected(f'the {scene.labels[oid]} cannot be {"opened" if action == "open" else "closed"}')
            return self._done(ctx, [SubTask(action, oid)])
        if action == 'pick' and not (phrase in self.lexicon.place_forms and self._has_destination(rest)):
            return self._done(ctx, [SubTask('pick', self._object(re.sub(r'\s+up$', '', rest), scene, ctx))])
        try:
            return self._done(ctx, self._placement(action, phrase, rest, scene, ctx))
        except Rejected:
            if phrase not in self.lexicon.pick_forms:
                raise
            return self._done(ctx, [SubTask('pick', self._object(rest, scene, ctx))])  # "take the bowl next to the box"

    def _verb_spelling(self, step):
        """The step with its first word replaced by the closest one-word verb ("recylce" -> "recycle")."""
        first, _, rest = step.partition(' ')
        if len(first) < 4 or first in self.lexicon.colour_of or first in self.lexicon.size_of:
            return step  # "see", "orange": words, not misspelt verbs
        verbs = [v for v in self.lexicon.verb_action if ' ' not in v]
        match = difflib.get_close_matches(first, verbs, 1, 0.75)
        return f'{match[0]} {rest}' if match else step

    def _done(self, ctx, subtasks):
        ctx.last_step = subtasks[-1]
        return subtasks

    def _has_destination(self, rest):
        return bool(self.lexicon.relation.search(rest) or DISTANCE.search(rest))

    def _verbless(self, step, scene, ctx):
        """A step without a verb: "the blue one too" / "do the same with X" repeat the last step on
        another object; "X into Y" / "X goes on Y" is a placement (the last step's kind, else place);
        a bare object phrase is the topic of what follows ("the blue cube - put it on the plate")."""
        m = re.fullmatch(REPEAT, step)
        phrase = m.group(1) if m else ALSO.sub('', step)
        phrase = re.sub(
            r'\s+(?:goes|go|belongs|belong|should go|needs to go|has to go|must go|should be)\b', '', phrase
        )
        previous = ctx.last_step
        if not m and self._has_destination(phrase):
            action = previous.action if previous and previous.action in ('place', 'push') else 'place'
            try:
                return self._done(ctx, self._placement(action, action, phrase, scene, ctx))
            except Rejected as exc:
                if previous is not None:
                    raise
                try:  # a topic: "the bowl by the stove - pick that one up"
                    self._object(phrase, scene, ctx)
                    return []
                except Rejected:
                    raise Rejected(f'"{step}" does not say what to do (no action in it: {exc})') from None
        if previous is not None:
            oid = self._object(phrase, scene, ctx, exclude=(previous.destination_id,))
            if ctx.last_sorted:  # "sort the can, then do the same with the peel": the peel's own bin
                return self._done(
                    ctx, [replace(previous, object_id=oid, destination_id=self._right_bin(oid, scene, ctx))]
                )
            offset = previous.offset
            if previous.is_region:  # a new object gets its own spot
                refs = [previous.destination_id] + ([previous.reference2_id] if previous.reference2_id else [])
                offset = self._region(previous.relation, oid, refs, scene, None)
            return self._done(ctx, [replace(previous, object_id=oid, offset=offset)])
        try:
            self._object(phrase, scene, ctx)
        except Rejected as exc:
            raise Rejected(f'"{step}" does not say what to do (no action in it: {exc})') from None
        return []

    def _sort(self, rest, scene, ctx):
        """sort / throw away / recycle X (, Y and Z) [into B]: B, or the bin each item's waste category belongs in."""
        split = self._split_destination(rest)
        if split:
            obj_text, _, dest_text = split
            oid = self._object(obj_text, scene, ctx)
            return [SubTask('place', oid, self._destination(dest_text, scene, ctx, oid))]
        items = [p for p in re.split(r',?\s+and\s+|,\s+', rest) if p]
        return [
            SubTask('place', oid, self._right_bin(oid, scene, ctx))
            for oid in (self._object(p, scene, ctx) for p in items)
        ]

    def _split_destination(self, rest, last=True):
        """(object phrase, relation, destination phrase) at the last (or first) relation word, or None."""
        found = [
            (m.start(), m.end(), self.lexicon.relation_of[m.group(1)]) for m in self.lexicon.relation.finditer(rest)
        ]
        found += [(m.start(), m.end(), 'at_distance') for m in DISTANCE.finditer(rest)]
        found = [f for f in found if f[0] > 0]
        if not found:
            return None
        start, end, relation = max(found) if last else min(found)
        return rest[:start].strip(' ,'), relation, rest[end:].strip(' ,')

    def _placement(self, action, verb, rest, scene, ctx):
        """place/push <objects> <relation> <destination>. Where several relation words could start the
        destination ("the bowl by the stove on the plate"), the reading whose object phrases need all
        their qualifiers wins (a qualifier that picks among one candidate is needless)."""
        rest = re.sub(r'\s+(?:inside|in there|into it|in it)$', ' in it', rest)  # "put the bowl inside"
        found = sorted(
            [(m.start(), m.end(), self.lexicon.relation_of[m.group(1)]) for m in self.lexicon.relation.finditer(rest)]
            + [(m.start(), m.end(), 'at_distance') for m in DISTANCE.finditer(rest)],
            reverse=True,
        )
        found = [f for f in found if f[0] > 0 and rest[f[1] :].strip()]
        aside = self.lexicon.aside.match(rest)
        if action == 'push' and aside:  # "push the box aside": no destination
            return [SubTask('push', self._object(aside.group(1), scene, ctx))]
        if not found:
            if action == 'place' and verb in self.lexicon.pick_forms:
                return [SubTask('pick', self._object(rest, scene, ctx))]
            raise Rejected(f'"{verb} {rest}": {verb} it where?')
        error, readings = None, []
        for start, end, relation in found:  # which relation word starts the destination: try each
            trial = ctx.copy()
            try:
                subtasks = self._place_at(
                    action, rest[:start].strip(' ,'), relation, rest[start:end], rest[end:].strip(' ,'), scene, trial
                )
            except Rejected as exc:
                error = error or exc
                continue
            readings.append((trial.redundant, -start, subtasks, trial))
        if not readings:
            raise error
        _, _, subtasks, trial = min(readings, key=lambda r: r[:2])  # fewest needless qualifiers, then the last word
        ctx.__dict__.update(trial.__dict__)
        return subtasks

    def _place_at(self, action, obj_text, relation, relation_words, dest_text, scene, ctx):
        if not obj_text:
            raise Rejected(f'"{relation_words} {dest_text}": which object?')
        distance = None
        if relation == 'at_distance':
            m = DISTANCE.match(relation_words)
            unit = m.group(2)
            distance = float(m.group(1)) * next(v for k, v in UNITS if unit.startswith(k))
            if not 0.0 < distance <= 0.5:
                raise Rejected(f'{relation_words.strip()}: a distance on the table is between 0 and 50 cm')
        phrases = [obj_text] if 'between' in obj_text else [p for p in re.split(r',?\s+and\s+|,\s+', obj_text) if p]
        references, reference2 = self._references(relation, dest_text, scene, ctx, phrases)
        if action == 'place' and relation == 'towards':
            relation = 'in'
        into = relation == 'in'
        if relation == 'in' and action == 'place':
            relation = (
                ''  # into the destination (the default); 'on' stays: onto its top, not its floor (IKER's targets)
            )
        subtasks = []
        for phrase in phrases:
            try:
                oid = self._object(phrase, scene, ctx, exclude=tuple(r for r in (references, reference2) if r))
            except Rejected:
                oid = self._object(phrase, scene, ctx)  # the reason: unknown, or the destination itself
                raise Rejected(f'cannot put the {scene.labels[oid]} {relation_words.strip()} itself') from None
            if into and radius(scene.states[oid][2]) > radius(scene.states[references][2]):
                raise Rejected(
                    f'the {scene.labels[oid]} does not fit {relation_words.strip()} the {scene.labels[references]} '
                    '(it is bigger); impossible'
                )
            offset = ()
            if relation in REGION_RELATIONS:
                refs = [references] + ([reference2] if reference2 else [])
                offset = self._region(relation, oid, refs, scene, distance)
            if action == 'push':
                relation = relation or 'towards'
            subtasks.append(SubTask(action, oid, references, relation, reference2 or '', offset))
        return subtasks

    def _references(self, relation, dest_text, scene, ctx, phrases):
        """(reference id, second reference id or None) of a destination phrase."""
        if relation == 'between':
            parts = re.split(r'\s+and\s+|\s*,\s*', dest_text, maxsplit=1)
            if len(parts) != 2:
                raise Rejected(f'"between {dest_text}": between which two objects?')
            first = self._resolve(parts[0], scene, ctx, role='destination')
            return first, self._resolve(parts[1], scene, ctx, role='destination', exclude=(first,))
        subject = None
        if len(phrases) == 1 and self.lexicon.waste.search(dest_text):
            subject = self._object(phrases[0], scene, ctx)
        return self._destination(dest_text, scene, ctx, subject), None

    def _destination(self, dest_text, scene, ctx, subject=None):
        """The destination of a phrase; waste words ("the right bin", "the recycling") choose a bin by meaning."""
        if subject is not None and self.lexicon.waste.search(dest_text):
            return self._right_bin(subject, scene, ctx)
        category = self._waste_category_word(dest_text)
        if category and not self.lexicon.relation.search(dest_text):  # "where recyclables go", "the food waste bin"
            return self._bin_for(category, scene, ctx, dest_text)
        try:
            destination = self._resolve(dest_text, scene, ctx, role='destination')
        except Rejected as exc:
            bins = [i for i in getattr(exc, 'tied', ()) if 'bin' in scene.labels[i]]
            if subject is not None and bins and len(bins) == len(exc.tied):
                return self._right_bin(subject, scene, ctx)
            raise
        ctx.mentioned.append(destination)
        return destination

    def _waste_category_word(self, text):
        m = re.search(
            r'\b(recycl\w*|compost\w*|organic\w*|food (?:waste|scraps)|bio ?waste|trash|garbage|rubbish|landfill|'
            r'general waste|residual waste)\b',
            text,
        )
        return m.group(1) if m and self.categories else ''

    def _bin_for(self, word, scene, ctx, phrase):
        """The bin serving the waste category a word names ("food waste" -> compost), by name or example."""
        bins = {i: label for i, label in scene.labels.items() if 'bin' in label.split()}
        if not bins:
            raise Rejected(f'"{phrase}": there is no bin in the scene (it has {scene.inventory()})')
        names = list(self.categories)
        query = self._embed([word])
        fit = [float((query @ self._embed([n, *self.categories[n]]).T).max()) for n in names]
        category = names[int(np.argmax(fit))]
        ids = list(bins)
        chosen = ids[int(np.argmax(self._similarity(category, [bins[i] for i in ids])))]
        ctx.references[phrase] = (chosen, 1.0)
        return chosen

    def _right_bin(self, oid, scene, ctx):
        """The bin for an item: its waste category by example similarity, then the bin serving it."""
        if not self.categories:
            raise Rejected('no waste categories are configured for sorting')
        bins = {i: label for i, label in scene.labels.items() if 'bin' in label.split()}
        if not bins:
            raise Rejected(f'there is no bin in the scene to sort the {scene.labels[oid]} into')
        names = list(self.categories)
        item = self._embed([scene.labels[oid]])
        category = names[int(np.argmax([(item @ self._embed(self.categories[n]).T).max() for n in names]))]
        ids = list(bins)
        chosen = ids[int(np.argmax(self._similarity(category, [bins[i] for i in ids])))]
        ctx.references[f'{category} bin'] = (chosen, 1.0)
        ctx.last_sorted = True  # a repeat ("then do the same with the peel") finds the next item's own bin
        return chosen

    def _region(self, relation, oid, refs, scene, distance):
        try:
            return placement_offset(relation, oid, refs, scene.states, distance)
        except RegionError as exc:
            raise Rejected(str(exc)) from None

    # --- object references ------------------------------------------------------------------------
    def _object(self, phrase, scene, ctx, exclude=()):
        oid = self._resolve(phrase, scene, ctx, role='object', exclude=exclude)
        ctx.last_object = oid
        ctx.mentioned.append(oid)
        return oid

    def _resolve_all(self, phrase, scene, ctx):
        """Ids a constraint phrase names: one object, or every one of a kind ("both bowls", "all the cubes")."""
        plural = re.fullmatch(r'(?:both|all|all of|the two|the)\s+(?:the\s+|of the\s+)?(.+?)s', phrase.strip())
        if plural and not plural.group(1).endswith('s'):
            noun = plural.group(1)
            ids = list(scene.labels)
            similarity = self._noun_similarity(noun, ids, scene)
            best = similarity.max()
            chosen = [i for i, v in zip(ids, similarity) if v >= self.threshold and best - v < self.margin]
            if len(chosen) > 1:
                return chosen
        return [self._resolve(phrase, scene, ctx, role='avoid')]

    def _resolve(self, phrase, scene, ctx, role, exclude=()):
        """The id a phrase names, or Rejected saying why not (unknown, ambiguous, not an object)."""
        text = ALSO.sub('', re.sub(rf'^(?:{DETERMINERS}\s+)+', '', phrase.strip(' ,'))).strip()
        text = re.sub(r'\s+(?:up|down|away|again|back)$', '', text)
        if not text:
            raise Rejected(f'"{phrase}" names no object')
        if text in self.lexicon.anaphora:
            if not ctx.last_object:
                raise Rejected(f'"{phrase}" refers to nothing said before')
            return ctx.last_object
        text = re.sub(r'^whichever\s+(.+?)\s+is\s+', r'\1 ', text)
        text = re.sub(r'\b(?:furthest|farthest|most|far)\s+to\s+the\s+(left|right)\b', r'\1most', text)
        text = re.sub(r'\b(?:that|which)\s+(?:is|\'s)\s+|\bthat\'s\s+|\s+away\b', ' ', text).strip()
        text = re.sub(
            r'\b(closest|nearest|farthest|furthest|near|far|closer|nearer|farther|further)\s+(?:to|from)\s+'
            r'(?:you|me|us|the robot)\b',
            r'\1',
            text,
        )
        if text in self.lexicon.not_objects or text.split()[-1] in self.lexicon.not_objects:
            what = 'moved or used as a destination' if role != 'avoid' else 'avoided as an object'
            raise Rejected(
                f'the {text} is not an object in the scene that can be {what}; the scene has {scene.inventory()}'
            )
        text = re.sub(CONTAINER_OF, r'\1', text)
        part = re.fullmatch(PART_OF, text)
        if part:  # "the top drawer of the cabinet" is the cabinet
            text = re.sub(rf'^(?:{DETERMINERS}\s+)+', '', part.group(1))
        candidates = [i for i in scene.labels if i not in exclude]
        exact = [i for i in candidates if scene.labels[i].lower() == text]
        if len(exact) == 1:  # a label said as it is names its object ("the left slipper" is not the leftmost one)
            ctx.references[phrase.strip()] = (exact[0], 1.0)
            return exact[0]
        ref = self._parse_reference(text)
        other = re.fullmatch(r'other(?:\s+(.+))?', ref.noun)
        if other:  # "the other one" / "the other cube": like the last object, but not it
            if not ctx.last_object:
                raise Rejected(f'"{phrase}": other than what?')
            ref.noun = other.group(1) or ''
            if not ref.noun or ref.noun in self.lexicon.generic:
                ref.noun = _noun_of(scene.labels[ctx.last_object], self.lexicon)
            candidates = [i for i in candidates if i != ctx.last_object]
        elif ref.noun in self.lexicon.generic and ctx.last_object and not ref.anchors and (ref.colour or ref.size):
            last = scene.labels[ctx.last_object]  # "the blue one", "the small one" (of the same kind)
            ref.noun = _noun_of(last, self.lexicon)
            if not ref.colour:
                ref.colour = next(iter(_colours(last, self.lexicon)), '')
                candidates = [i for i in candidates if i != ctx.last_object]
        chosen = self._choose(ref, phrase, candidates, scene, ctx)
        ctx.references[phrase.strip()] = chosen
        return chosen[0]

    def _parse_reference(self, text):
        lex = self.lexicon
        ref = _Reference(text)
        m = re.fullmatch(
            r'(.+?)\s+(?:that is |which is |that\'s |sitting |lying |standing )?between\s+(.+?)\s+and\s+(.+)', text
        )
        n = re.fullmatch(
            r'(.+?)\s+(?:that is |which is |that\'s |sitting |lying |standing )?(?:next to|near|nearest to|closest to|'
            r'beside|by|on|in|from|at|inside|on top of|in front of|behind|left of|right of|to the left of|'
            r'to the right of)\s+(.+)',
            text,
        )
        side = re.fullmatch(
            r'(.+?)\s+(?:on|to|at|in)\s+(?:the\s+)?(far left|far right|left|right|front|back)(?:\s+side)?', text
        )
        far = re.fullmatch(r'(.+?)\s+(?:farther|further|farthest|furthest)\s+from\s+(.+)', text)
        if side:
            text, ref.position = side.group(1), lex.position_of[side.group(2)]
        elif far:
            text, ref.anchors, ref.far = far.group(1), [far.group(2)], True
        elif m:
            text, ref.anchors = m.group(1), [m.group(2), m.group(3)]
        elif n and n.group(2).split()[-1] not in lex.position_of:
            text, ref.anchors = n.group(1), [n.group(2)]
            ref.side = DIRECTIONAL.get(n.group(0)[len(n.group(1)) :].split(n.group(2))[0].strip().split()[-1], '')
        words = text.split()
        rest = []
        for i, word in enumerate(words):
            last = i == len(words) - 1
            following = words[i + 1] if not last else ''
            if word in SHADES and (
                following in lex.colour_of or f'{following} {words[i + 2 : i + 3]}' in lex.colour_of
            ):
                continue  # "jet black", "dark blue": the colour follows
            if not last and f'{word} {following}' in lex.colour_of and not ref.colour:
                ref.colour = lex.colour_of[f'{word} {following}']
                words[i + 1] = '-most'  # consumed
            elif word in lex.colour_of and (not last or len(words) == 1) and not ref.colour:
                ref.colour = lex.colour_of[word]
            elif word in lex.size_of and (not last or rest):
                ref.size = lex.size_of[word]
            elif word in lex.position_of and (not last or rest):
                ref.position = lex.position_of[word]
            elif word.endswith('-most') or word in ('most',) or (word in lex.colour_of and ref.colour and not last):
                continue
            else:
                rest.append(word)
        rest = [w for w in rest if w not in ('colored', 'coloured', 'color', 'colour', 'sized', 'size', 'one')] or [
            'one'
        ]
        ref.noun = ' '.join(rest)
        return ref

    def _noun_similarity(self, noun, ids, scene):
        """How well a noun names each object: its label (or the label without colours) by meaning, a
        synonym of it, or a category it belongs to ("the drink" -> the soda can); 0 where the nouns
        agree but their modifiers disagree ("bbq sauce" is not the "tomato sauce")."""
        if noun in self.lexicon.generic:
            return np.ones(len(ids))
        labels = [scene.labels[i] for i in ids]
        nouns = [_noun_of(label, self.lexicon) or label for label in labels]

        def match(word):
            return np.maximum(self._similarity(word, labels), self._similarity(word, nouns))

        similarity = match(noun)
        for synonym in self.lexicon.synonyms.get(noun, []):  # a synonym counts a little less than the word itself
            similarity = np.maximum(similarity, SYNONYM_WEIGHT * match(synonym))
        for members in self._categories(noun):
            similarity = np.maximum(similarity, (self._embed(members) @ self._embed(nouns).T).max(axis=0) >= 0.6)
        conflicts = [self._modifiers_disagree(noun, n) for n in nouns]
        return np.where(conflicts, 0.0, similarity)

    def _categories(self, noun):
        """Member lists of the categories a noun names (by word, or by meaning at 0.8)."""
        found = []
        for category in self.lexicon.categories.values():
            words = category['words']
            if noun in words or float((self._embed([noun]) @ self._embed(words).T).max()) >= 0.8:
                found.append(category['members'])
        return found

    def _modifiers_disagree(self, noun, label_noun):
        p, q = noun.split(), label_noun.split()
        if len(p) < 2 or len(q) < 2 or p[-1] != q[-1] or set(p[:-1]) & set(q[:-1]):
            return False
        return float((self._embed([' '.join(p[:-1])]) @ self._embed([' '.join(q[:-1])]).T)[0, 0]) < 0.5

    def _spelling(self, noun, scene):
        """The noun with each word the scene's labels do not have replaced by its closest label word (typos)."""
        vocabulary = sorted({w for label in scene.labels.values() for w in label.split()})
        fixed = [
            w if w in vocabulary else (difflib.get_close_matches(w, vocabulary, 1, 0.75) or [w])[0]
            for w in noun.split()
        ]
        return ' '.join(fixed)

    def _choose(self, ref, phrase, candidates, scene, ctx):
        """(id, similarity) among candidates for a parsed reference."""
        if not candidates:
            raise Rejected(f'no object is left for "{phrase}"')
        ids = list(candidates)
        similarity = self._noun_similarity(ref.noun, ids, scene)
        if similarity.max() < self.threshold and (corrected := self._spelling(ref.noun, scene)) != ref.noun:
            ref.noun, similarity = corrected, self._noun_similarity(corrected, ids, scene)  # "plaet" -> "plate"
        keep = [(i, s) for i, s in zip(ids, similarity) if s >= self.threshold]
        described = ' '.join(
            w for w in (ref.colour, ref.noun if ref.noun not in self.lexicon.generic else 'object') if w
        )
        if not keep:
            best = ids[int(np.argmax(similarity))]
            raise Rejected(
                f'the scene has no {described} (closest: {scene.labels[best]}, similarity {similarity.max():.2f}); '
                f'it has {scene.inventory()}'
            )
        head = ref.noun.split()[-1]
        if any(_words(scene.labels[i])[-1] == head for i, _ in keep):  # "the shoe" is a shoe, not the shoe box
            keep = [
                (i, s) for i, s in keep if _words(scene.labels[i])[-1] == head or head not in _words(scene.labels[i])
            ]
        if ref.colour:
            coloured = [(i, s) for i, s in keep if _colours(scene.labels[i], self.lexicon) == {ref.colour}]
            uncoloured = [(i, s) for i, s in keep if not _colours(scene.labels[i], self.lexicon)]
            keep = coloured or uncoloured
            if not keep:
                raise Rejected(f'the scene has no {described}; it has {scene.inventory()}')
        opposite = OPPOSITE_SIDE.get(ref.position)
        if opposite:  # "the left shoe" is the leftmost of the shoes, but never one named the right shoe
            keep = [(i, s) for i, s in keep if opposite not in _words(scene.labels[i])]
            if not keep:
                side = ref.position.replace('most', '')
                raise Rejected(f'the scene has no {side} {described}; it has {scene.inventory()}')
        best = max(s for _, s in keep)
        tied = [i for i, s in keep if best - s < self.margin]
        ranked = sorted(similarity, reverse=True)
        if best < self.confident and len(ranked) > 1 and ranked[0] - ranked[1] < self.loose_margin and len(tied) == 1:
            raise Rejected(  # a loose match in a crowd of similar things ("chocolate pudding" vs the groceries)
                f'the scene has no {described} (nothing matches it clearly: {scene.labels[tied[0]]} at {best:.2f}); '
                f'it has {scene.inventory()}'
            )
        if len(tied) == 1 and (ref.anchors or ref.size or ref.position):
            ctx.redundant += 1
        score = dict(keep)
        if ref.anchors:
            anchor_ids = [self._resolve(a, scene, ctx, role='anchor') for a in ref.anchors]
            pool = [i for i in tied if i not in anchor_ids] or [i for i, _ in keep if i not in anchor_ids]
            if not pool:
                raise Rejected(f'"{phrase}": no object other than the ones it is described by')
            target = np.mean([scene.position(a)[:2] for a in anchor_ids], axis=0)
            if ref.side:  # "the block behind the red cube": on that side of it first
                direction = np.asarray(SIDES[ref.side])
                pool = [i for i in pool if (scene.position(i)[:2] - target) @ direction > 0.01] or pool
            sign = -1 if ref.far else 1
            tied = [_unique(pool, lambda i: sign * np.linalg.norm(scene.position(i)[:2] - target), 0.01, phrase, scene)]
        if len(tied) > 1 and ref.size:
            sign = 1 if ref.size == 'small' else -1
            tied = [_unique(tied, lambda i: sign * scene.volume(i) ** (1 / 3), 0.003, phrase, scene)]
        if len(tied) > 1 and ref.position:
            key = {
                'leftmost': lambda i: -scene.position(i)[1],
                'rightmost': lambda i: scene.position(i)[1],
                'nearest': lambda i: np.linalg.norm(scene.position(i)[:2]),
                'farthest': lambda i: -np.linalg.norm(scene.position(i)[:2]),
            }[ref.position]
            tied = [_unique(tied, key, 0.01, phrase, scene)]
        if len(tied) > 1:
            error = Rejected(
                f'"{phrase.strip()}" is ambiguous: it could be the {" or the ".join(scene.labels[i] for i in tied[:3])}'
                ' (which one? say its colour, size or where it is)'
                if len({scene.labels[i] for i in tied}) > 1
                else f'"{phrase.strip()}" is ambiguous: there are {len(tied)} {scene.labels[tied[0]]}s (which one? say '
                'where it is, e.g. the leftmost or the one next to ...)'
            )
            error.tied = tied
            raise error
        return tied[0], float(score.get(tied[0], best))


def _unique(ids, key, margin, phrase, scene):
    """The id with the smallest key, if it beats the runner-up by the margin; otherwise ambiguous."""
    ordered = sorted(ids, key=key)
    if len(ordered) > 1 and key(ordered[1]) - key(ordered[0]) < margin:
        error = Rejected(
            f'"{phrase.strip()}" is ambiguous: the {scene.labels[ordered[0]]} and the {scene.labels[ordered[1]]} '
            'fit it equally'
        )
        error.tied = ordered[:2]
        raise error
    return ordered[0]


def _colours(label, lexicon):
    words = label.split()
    return {lexicon.colour_of[w] for w in words[:-1] if w in lexicon.colour_of}


def _words(label):
    """A label's words, lower case ('Left_Shoe' -> ['left', 'shoe'])."""
    return re.split(r'[\s_-]+', label.lower().strip())


def _noun_of(label, lexicon):
    """A label without its colour words ('blue recycling bin' -> 'recycling bin')."""
    words = label.split()
    return ' '.join(w for i, w in enumerate(words) if not (w in lexicon.colour_of and i < len(words) - 1))


def _merge_pick_then_place(subtasks):
    """'pick up X and put it in Y' is one place: a pick directly followed by a placement of the same object."""
    out = []
    for s in subtasks:
        if out and out[-1].action == 'pick' and s.object_id == out[-1].object_id and s.action in ('place', 'push'):
            out[-1] = s
        else:
            out.append(s)
    return out
