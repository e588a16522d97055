"""Generation's prefill on one unpadded row: the KV cache of a left-padded batch without computing the padding.

A batch of prompts of different lengths (Ovis prompts differ by hundreds of visual tokens) is left-padded for
generation, and the LLM's prefill then runs every layer over batch x longest positions, padding included (the
benchmark batch of `benchmarks/generation_speed.py`: 1688 positions for 1010 real tokens). Here the real tokens of
every prompt but the last column are packed into one row, run once with packed sdpa (`packed_attention`: causal
attention within each prompt), and their keys and values are laid out again as the left-padded cache transformers'
`generate` expects; `generate` then computes the last column (every prompt's last token) against that cache and
decodes as usual. Positions are each prompt's own (0 at its first real token), as `generate` numbers them from the
attention mask, and padded cache slots are zeros that the attention mask hides, so each prompt's keys and values are
its unpadded prefill's: the tokens equal the padded prefill's up to float rounding (tests hold greedy answers equal).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import get_layer_types_and_kwargs

from . import kv_room, lean_decode, packed_attention


def applies(llm: nn.Module, attention_mask: torch.Tensor) -> bool:
    """Whether the packed prefill can stand in for the padded one: the LLM runs packed sdpa, every layer keeps a
    full cache (no sliding-window or chunked layers, whose caches transformers crops), and the batch has padding to
    skip and at least one cached token."""
    if not packed_attention.is_enabled(llm):
        return False
    layer_types, _ = get_layer_types_and_kwargs(llm.config.get_text_config(decoder=True))
    if any(kind != "full_attention" for kind in layer_types):
        return False
    return attention_mask.shape[1] > 1 and not bool(attention_mask.all())


@torch.no_grad()
def prefill_cache(
    llm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, room: int = 0,
) -> DynamicCache:
    """The left-padded KV cache [B, H_kv, L - 1, D] of every column but the last of a left-padded batch.

    `inputs_embeds` [B, L, d] (the LLM's inputs, already scaled), `attention_mask` [B, L] with every prompt ending at
    column L - 1. Hand the cache to `llm.generate` with the full `inputs_embeds` and mask: it computes the last column
    only."""
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("the packed prefill needs a left-padded batch: every prompt ends at the last column")
    cached = attention_mask.bool().clone()
    cached[:, -1] = False  # the last column is generate's own first step
    lengths = cached.sum(dim=1).tolist()
    rows, cols = cached.nonzero(as_tuple=True)  # row-major: each prompt's tokens in order, prompts in batch order
    packed = inputs_embeds[rows, cols].unsqueeze(0)  # [1, T, d]
    position_ids = (cached.cumsum(dim=1) - 1)[rows, cols].unsqueeze(0)  # restart at every prompt
    cache = DynamicCache(config=llm.config)
    segments = packed_attention.segment_kwargs([n for n in lengths if n])
    if lean_decode.applies(llm):
        _keys_and_values_only(llm.get_decoder(), packed, position_ids, cache, segments)
    else:
        llm.get_decoder()(inputs_embeds=packed, position_ids=position_ids, cache=cache, use_cache=True, **segments)
    length = cached.shape[1] - 1  # cached positions: every column but the last
    padded = [tuple(_left_padded(t, rows, cols, cached.shape, room) for t in (layer.keys, layer.values))
              for layer in cache.layers]
    if room > 0:  # the buffers have room after the prompt: decode steps write there
        return kv_room.cache_over(padded, llm.config, length)
    return DynamicCache(ddp_cache_data=padded, config=llm.config)


def _keys_and_values_only(decoder: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor, cache: DynamicCache,
                          segments: dict) -> None:
    """The decoder's layers for the cache alone (Llama-structured layers, `lean_decode.applies`): every layer but the
    last runs its own forward; of the last only the keys and values are computed, since nothing reads its output
    here (decoding computes the last column itself). The last layer's queries, attention, output projection and MLP
    over the whole prompt are a quarter of the benchmark LLM's prefill. Same operations as the decoder's forward for
    what it keeps, so the cache is bitwise the same (tested)."""
    position_embeddings = decoder.rotary_emb(hidden, position_ids)
    *layers, last = decoder.layers
    for layer in layers:  # no mask: packed sdpa attends causally within each segment (`segments`)
        hidden = layer(hidden, attention_mask=None, position_ids=position_ids, cache=cache, use_cache=True,
                       position_embeddings=position_embeddings, **segments)
    _, keys, values = lean_decode.projections(last, hidden, position_embeddings, queries=False)
    cache.update(keys, values, len(layers))


def _left_padded(packed: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shape: torch.Size,
                 room: int = 0) -> torch.Tensor:
    """[1, H, T, D] packed keys or values -> [B, H, L - 1 + room, D], each token at its column of the first L - 1,
    zeros at the padding, the last `room` positions left for decoding to fill."""
    batch, length = shape[0], shape[1] - 1
    _, heads, _, dim = packed.shape
    out = packed.new_empty(batch, heads, length + room, dim)
    prompt = out[:, :, :length]
    prompt.zero_()
    prompt.transpose(1, 2)[rows, cols] = packed[0].transpose(0, 1)
    return out
