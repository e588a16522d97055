"""The visual embedding table: a visual token's embedding is the expectation of table rows under its distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ExpectedEmbeddingAndRows(torch.autograd.Function):
    """(probs @ table[:w], table[rows]) with one [V, d] gradient written in place.

    Through autograd, `table[:w]` and `table.split` give the table's gradient as a slice or split backward: a
    second [V, d] tensor (zero-filled or concatenated) on top of the matmul's [w, d] one. Here the matmul writes
    straight into the top rows of the gradient and the looked-up rows are added below.
    """

    @staticmethod
    def forward(ctx, probs: torch.Tensor, rows: torch.Tensor, table: torch.Tensor):
        ctx.save_for_backward(probs, rows, table)
        return torch.matmul(probs, table[: probs.shape[-1]]), F.embedding(rows, table)

    @staticmethod
    def backward(ctx, grad_expected: torch.Tensor, grad_rows: torch.Tensor):
        probs, rows, table = ctx.saved_tensors
        width, dim = probs.shape[-1], table.shape[1]
        grad_probs = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_probs = torch.matmul(grad_expected, table[:width].t())
        if ctx.needs_input_grad[2]:
            grad_table = table.new_empty(table.shape)
            torch.mm(probs.reshape(-1, width).t(), grad_expected.reshape(-1, dim), out=grad_table[:width])
            grad_table[width:].zero_()
            grad_table.index_add_(0, rows.reshape(-1), grad_rows.reshape(-1, dim))
        return grad_probs, None, grad_table


class VisualEmbedding(nn.Embedding):
    """V x d table. Float input (probabilities) -> probs @ table; integer input (ids) -> row lookup.

    Probabilities may cover only the first V - n_indicators words (the indicator columns are zero by construction):
    then only those rows take part, so a [tokens, V] zero-padded copy is never materialised.
    """

    def __init__(self, vocab_size: int, embed_dim: int, **factory):
        super().__init__(vocab_size, embed_dim, **factory)  # nn.Embedding initialises N(0, 1), as the original

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None):
        """Probabilities [..., w] -> probs @ table[:w]; integer ids -> their rows.

        With probabilities *and* `ids` (rows at or past w: the indicators) returns both, from one table read, so
        backward builds a single [V, d] gradient.
        """
        if not x.is_floating_point():
            if ids is not None:
                raise ValueError("pass ids alone, or probabilities together with ids")
            return super().forward(x)
        width = x.shape[-1]
        if width > self.num_embeddings:
            raise ValueError(f"visual tokens have {width} words, the table only {self.num_embeddings}")
        rows = ids if ids is not None else torch.empty(0, dtype=torch.long, device=x.device)
        expected, looked_up = _ExpectedEmbeddingAndRows.apply(x.to(self.weight.dtype), rows, self.weight)
        return expected if ids is None else (expected, looked_up)

    @torch.no_grad()
    def reinit_like(self, text_embedding: torch.Tensor) -> None:
        """Re-draw the table from N(mean, std) of the LLM's text embedding table (the original's vte_re_init)."""
        mean = text_embedding.float().mean().item()
        std = text_embedding.float().std().item()
        self.weight.normal_(mean=mean, std=std)
