"""The visual embedding table: a visual token's embedding is the expectation of table rows under its distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VisualEmbedding(nn.Embedding):
    """V x d table. Float input (probabilities) -> probs @ table; integer input (ids) -> row lookup.

    Probabilities may cover only the first V - n_indicators words (the indicator columns are zero by construction):
    then only those rows take part, so a [tokens, V] zero-padded copy is never materialised.
    """

    def __init__(self, vocab_size: int, embed_dim: int, **factory):
        super().__init__(vocab_size, embed_dim, **factory)  # nn.Embedding initialises N(0, 1), as the original

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None):
        """Probabilities [..., w] -> probs @ table[:w]; integer ids -> their rows.

        With probabilities *and* `ids` (rows at or past w: the indicators) returns both, read from one split of the
        table, so backward assembles a single [V, d] gradient (two separate reads would each zero-fill one).
        """
        if not x.is_floating_point():
            if ids is not None:
                raise ValueError("pass ids alone, or probabilities together with ids")
            return super().forward(x)
        width = x.shape[-1]
        if width > self.num_embeddings:
            raise ValueError(f"visual tokens have {width} words, the table only {self.num_embeddings}")
        if ids is None:
            return torch.matmul(x.to(self.weight.dtype), self.weight[:width])
        image_rows, other_rows = self.weight.split([width, self.num_embeddings - width])
        return torch.matmul(x.to(self.weight.dtype), image_rows), F.embedding(ids - width, other_rows)

    @torch.no_grad()
    def reinit_like(self, text_embedding: torch.Tensor) -> None:
        """Re-draw the table from N(mean, std) of the LLM's text embedding table (the original's vte_re_init)."""
        mean = text_embedding.float().mean().item()
        std = text_embedding.float().std().item()
        self.weight.normal_(mean=mean, std=std)
