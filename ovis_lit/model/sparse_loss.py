"""The fast path's training loss: next-token cross-entropy with logits computed only at supervised positions.

With long visual runs and short answers most positions carry no label: skipping their [vocab]-wide logits is most
of the LLM head's time and memory. This needs logits that are exactly lm_head(hidden) (`has_sparse_logits`); other
LLM families go through their own forward (OvisModel.forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import IGNORE_ID
from . import packed_attention
from .packing import pack_rows

# LLM families whose logits are exactly lm_head(hidden) (optionally soft-capped, see `output_logits`).
SPARSE_LOGITS_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"}
)


def has_sparse_logits(llm: nn.Module) -> bool:
    return llm.config.model_type in SPARSE_LOGITS_MODEL_TYPES


def output_logits(llm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LLM head on hidden states, including Gemma 2/3's final logit soft-capping."""
    logits = llm.get_output_embeddings()(hidden)
    cap = getattr(llm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def next_token_loss(
    llm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean next-token CE over supervised positions, computing logits only there.

    The batch's real tokens are first packed: into one unpadded row when the LLM runs packed sdpa (attention within
    each sample), else into rows of 1-2x its longest sample (see `packing.plan_rows`), so padding costs little.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_ID)  # next-token target of each position
    decoder = llm.get_decoder()
    if attention_mask.shape[0] > 1:
        one_row = packed_attention.is_enabled(llm)
        lengths = attention_mask.sum(dim=1).tolist()
        embeds, position_ids, targets = pack_rows(inputs_embeds, attention_mask, targets, one_row, lengths)
        # Restarting position_ids make transformers build a block-diagonal causal mask (varlen on flash-attn);
        # packed sdpa instead attends within each sample's slice of the row, given the samples' boundaries.
        segments = packed_attention.segment_kwargs(lengths) if one_row else {}
        hidden = decoder(inputs_embeds=embeds, position_ids=position_ids, use_cache=False, **segments).last_hidden_state
    else:
        hidden = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
    supervised = targets != IGNORE_ID
    logits = output_logits(llm, hidden[supervised])
    # Sum / count rather than mean so an all-masked batch gives 0 (with a graph) instead of NaN.
    loss = F.cross_entropy(logits.float(), targets[supervised], reduction="sum")
    return loss / supervised.sum().clamp(min=1)
