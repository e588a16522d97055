"""SDPA that attends within each packed sample only, for training on one row of concatenated samples.

With transformers' own "sdpa", a packed row (position ids restarting at every sample) gets a dense block-diagonal
mask: attention then costs (sum of lengths)^2 per head, and rows must stay short (`packing.pack_rows`), which pads them.
This implementation, registered with transformers as `PACKED_SDPA`, runs causal SDPA on each sample's slice when the
caller passes sample boundaries (`segment_kwargs`: the `cu_seq_lens_*` keywords of flash-attention's varlen API), so
the cost is sum(length^2) and the whole batch fits one row without padding. Every other call (no boundaries:
evaluation, generation, an unpacked batch) goes to transformers' sdpa unchanged, with the mask sdpa would get.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward, use_gqa_in_sdpa
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

PACKED_SDPA = "ovis_packed_sdpa"


def packed_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: q [B, H, L, D], k/v [B, H_kv, L, D] -> ([B, L, H, D], None)."""
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, sliding_window=sliding_window,
            **kwargs,
        )
    if kwargs.get("softcap") is not None:
        raise ValueError("packed sdpa cannot soft-cap attention logits; use the eager implementation")
    if query.shape[2] != key.shape[2]:
        raise ValueError("packed sdpa is for training on whole sequences (no KV cache)")
    sdpa_kwargs = {}
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        if use_gqa_in_sdpa(None, key, value):
            sdpa_kwargs["enable_gqa"] = True
        else:
            key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    causal = getattr(module, "is_causal", True)
    bounds = cu_seq_lens_q.tolist()
    sizes = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    if bounds[0] != 0 or bounds[-1] != query.shape[2]:
        raise ValueError(f"sample boundaries {bounds[0]}..{bounds[-1]} do not cover the row of {query.shape[2]} tokens")
    outputs = []
    # split (not slicing): its backward is one concatenation, where every slice's would be a zero-filled full row
    for q, k, v in zip(*(t.split(sizes, dim=2) for t in (query, key, value))):
        length = q.shape[2]
        if length == 0:
            continue
        mask = None
        if sliding_window is not None and length > sliding_window:
            i = torch.arange(length, device=query.device)
            distance = i[:, None] - i[None, :]  # query i - key j
            # transformers' convention: query i sees key j when 0 <= i - j < sliding_window (|i - j| if not causal)
            mask = (distance >= 0) & (distance < sliding_window) if causal else distance.abs() < sliding_window
        outputs.append(
            F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal and mask is None, scale=scaling,
                **sdpa_kwargs,
            )
        )
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `PACKED_SDPA` a valid `attn_implementation` (idempotent). Its masks are sdpa's, for the unpacked calls."""
    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, sdpa_mask)


def enable(llm: nn.Module) -> bool:
    """Switch an LLM that runs transformers' sdpa to `PACKED_SDPA` (identical unless boundaries are passed)."""
    if getattr(llm.config, "_attn_implementation", None) == "sdpa":
        register()
        llm.config._attn_implementation = PACKED_SDPA
    return is_enabled(llm)


def is_enabled(llm: nn.Module) -> bool:
    return getattr(llm.config, "_attn_implementation", None) == PACKED_SDPA


def public_name(attn_implementation: str | None) -> str | None:
    """The name to report or export: `PACKED_SDPA` is sdpa to every other tool."""
    return "sdpa" if attn_implementation == PACKED_SDPA else attn_implementation


def segment_kwargs(lengths: list[int]) -> dict[str, Any]:
    """Decoder keywords that mark consecutive samples of `lengths` tokens in one packed row (flash-attention's
    varlen names, which transformers passes down to every attention call). The boundaries stay on the host: only
    `packed_sdpa_attention` reads them, in every layer, and a device tensor would cost a sync each time."""
    cu = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    longest = max(lengths)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
