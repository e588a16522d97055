"""The visual embedding table: a visual token's embedding is the expectation of table rows under its distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _table_gradient(table: torch.Tensor, probs: torch.Tensor, grad_expected: torch.Tensor, rows: torch.Tensor,
                    grad_rows: torch.Tensor | None) -> torch.Tensor:
    """One [V, d] gradient: the matmul writes its [w, d] part in place, the looked-up rows are added below."""
    width, dim = probs.shape[-1], table.shape[1]
    grad = table.new_empty(table.shape)
    torch.mm(probs.reshape(-1, width).t(), grad_expected.reshape(-1, dim), out=grad[:width])
    grad[width:].zero_()
    if grad_rows is not None:
        grad.index_add_(0, rows.reshape(-1), grad_rows.reshape(-1, dim))
    return grad


class _ExpectedEmbeddingAndRows(torch.autograd.Function):
    """(probs @ table[:w], table[rows]) with one [V, d] gradient.

    Through autograd, `table[:w]` and `table.split` give the table's gradient as a slice or split backward: a
    second [V, d] tensor (zero-filled or concatenated) on top of the matmul's [w, d] one.
    """

    @staticmethod
    def forward(ctx, probs: torch.Tensor, rows: torch.Tensor, table: torch.Tensor):
        ctx.save_for_backward(probs, rows, table)
        return torch.matmul(probs, table[: probs.shape[-1]]), F.embedding(rows, table)

    @staticmethod
    def backward(ctx, grad_expected: torch.Tensor, grad_rows: torch.Tensor):
        probs, rows, table = ctx.saved_tensors
        grad_probs = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_probs = torch.matmul(grad_expected, table[: probs.shape[-1]].t())
        if ctx.needs_input_grad[2]:
            grad_table = _table_gradient(table, probs, grad_expected, rows, grad_rows)
        return grad_probs, None, grad_table


class _SoftmaxExpectedEmbeddingAndRows(torch.autograd.Function):
    """(softmax(logits), softmax(logits) @ table[:w], table[rows]): the softmax fused in, for its backward.

    The gradient w.r.t. the probabilities is a fresh [tokens, w] buffer this function computes itself, so the
    softmax backward can overwrite it: at V = 65k that is one [tokens, 65k] buffer (and its page faults)
    fewer at the head's backward, the step's peak of live memory. float32/float64 only: in lower precision the
    softmax runs in float32 and is cast back (as `tokenize` does), so `VisualEmbedding` composes autograd's ops.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, rows: torch.Tensor, table: torch.Tensor, overwrite: bool):
        ctx.set_materialize_grads(False)
        if overwrite:
            # The probabilities overwrite the logits (the caller's temporary): one fresh [tokens, w] buffer fewer.
            # The kernel finishes reading a row before it writes that row, as in the backward.
            ctx.mark_dirty(logits)
            probs = torch.ops.aten._softmax.out(logits, -1, False, out=logits)
        else:
            probs = torch.softmax(logits, dim=-1)
        ctx.save_for_backward(probs, rows, table)
        return probs, torch.matmul(probs, table[: probs.shape[-1]]), F.embedding(rows, table)

    @staticmethod
    def backward(ctx, grad_probs: torch.Tensor | None, grad_expected: torch.Tensor | None,
                 grad_rows: torch.Tensor | None):
        probs, rows, table = ctx.saved_tensors
        width = probs.shape[-1]
        if grad_expected is None:
            grad_expected = probs.new_zeros(*probs.shape[:-1], table.shape[1])
        grad_logits = grad_table = None
        if ctx.needs_input_grad[0]:
            grad = torch.matmul(grad_expected, table[:width].t())  # w.r.t. probs, in a buffer owned here
            if grad_probs is not None:
                grad += grad_probs
            # Softmax backward, p * (g - <p, g>), written over g: autograd's own kernel reads each row's g for the
            # dot product before it writes that row (tested against finite differences and out-of-place).
            grad_logits = torch.ops.aten._softmax_backward_data.out(grad, probs, -1, probs.dtype, grad_input=grad)
        if ctx.needs_input_grad[2]:
            grad_table = _table_gradient(table, probs, grad_expected, rows, grad_rows)
        return grad_logits, None, grad_table, None


class VisualEmbedding(nn.Embedding):
    """V x d table. Float input (visual tokens) -> tokens @ table; integer input (ids) -> row lookup.

    Visual tokens may cover only the first V - n_indicators words (the indicator columns are zero by construction):
    then only those rows take part, so a [tokens, V] zero-padded copy is never materialised.
    """

    def __init__(self, vocab_size: int, embed_dim: int, **factory):
        super().__init__(vocab_size, embed_dim, **factory)  # nn.Embedding initialises N(0, 1), as the original

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None, fused: bool = True, softmax: bool = False):
        """Visual tokens [..., w] -> tokens @ table[:w] (the expectation of the rows); integer ids -> their rows.

        With tokens *and* `ids` (rows at or past w: the indicators) returns both. `fused` (the model's fast path)
        reads the table once for both in one autograd function, so backward builds a single [V, d] gradient;
        otherwise plain autograd ops. `softmax=True` (fast path only, see `fuses_softmax`): `x` holds logits and the
        result is (softmax(x), its embeddings, the rows of `ids` or None), the softmax fused into the table read;
        the probabilities are written over `x` where autograd allows it: pass logits nothing else reads.
        """
        if not x.is_floating_point():
            if ids is not None or softmax:
                raise ValueError("pass ids alone, or visual tokens (or logits) together with ids")
            return super().forward(x)
        width = x.shape[-1]
        if width > self.num_embeddings:
            raise ValueError(f"visual tokens have {width} words, the table only {self.num_embeddings}")
        if softmax:
            if not self.fuses_softmax(x):
                raise ValueError(f"the fused softmax needs float32/float64 logits in the table's dtype, got {x.dtype}")
            rows = ids if ids is not None else torch.empty(0, dtype=torch.long, device=x.device)
            # autograd forbids writing over a leaf that requires grad, and over a view (FSDP's hooks make the
            # head's output one) in a function with several outputs
            overwrite = x.is_contiguous() and x._base is None and not (x.is_leaf and x.requires_grad)
            probs, expected, looked_up = _SoftmaxExpectedEmbeddingAndRows.apply(x, rows, self.weight, overwrite)
            return probs, expected, (looked_up if ids is not None else None)
        x = x.to(self.weight.dtype)
        if not fused:  # the definition: each visual token's embedding is its expectation over the table rows
            expected = torch.matmul(x, self.weight[:width])
            return expected if ids is None else (expected, F.embedding(ids, self.weight))
        rows = ids if ids is not None else torch.empty(0, dtype=torch.long, device=x.device)
        expected, looked_up = _ExpectedEmbeddingAndRows.apply(x, rows, self.weight)
        return expected if ids is None else (expected, looked_up)

    def fuses_softmax(self, logits: torch.Tensor) -> bool:
        """Whether `forward(logits, softmax=True)` computes exactly `tokenize(logits, "softmax")` @ table: in float32
        and float64 (lower precisions take the softmax in float32 and round the probabilities, as `tokenize` does)."""
        return logits.dtype == self.weight.dtype and logits.dtype in (torch.float32, torch.float64)

    @torch.no_grad()
    def reinit_like(self, text_embedding: torch.Tensor) -> None:
        """Re-draw the table from N(mean, std) of the LLM's text embedding table (the original's vte_re_init)."""
        mean = text_embedding.float().mean().item()
        std = text_embedding.float().std().item()
        self.weight.normal_(mean=mean, std=std)
