"""Generation's decode steps in a plain loop over the LLM's own modules, without transformers' per-step Python.

A decode step of a small LLM on a CPU is a few milliseconds of matmuls: the benchmark's
(`benchmarks/generation_speed.py`: Qwen2, 4 layers at 512 wide, 8 prompts) ~9 ms at 2 threads with
`packed_weights`. transformers' decoder forward adds ~2-3 ms around them at every step: its decorators (config
defaults, output capture, argument renaming), the causal-mask builder, the attention-function lookup and each
module's call machinery. `lean_decode_steps` replaces the decoder's `forward` while `generate` runs: a call for
one new position per prompt (a decode step) runs `decode_step`, any other call (a prefill, or one asking for
attentions or hidden states) the decoder's own forward.

`decode_step` runs the same operations in the same order as the decoder it stands in for: each layer's norms,
projections and MLP through their own `forward`, the model file's own `apply_rotary_pos_emb`, the configured
attention function, the cache's own `update`; the logits are bitwise those of the full forward (tested for each
supported decoder). What it leaves out is only what a decode step does not need: for one query position that sees
every cached position the causal mask is the padding mask, so the mask is the attention mask itself
(`[B, 1, 1, kv]` booleans, or none where nothing is padded: what `create_causal_mask` returns for such a step).

Supported: decoder layers of the Llama structure - pre-norm attention, then pre-norm MLP, each added to the residual -
as Qwen2 (Ovis2), Qwen3 (Ovis2.5; with its per-head q/k norms) and Llama write them, full attention in every layer.
Other LLMs (Gemma 2's soft-capping and sliding windows, for Ovis 1.6) keep transformers' forward.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from . import packed_attention
from .instance_forward import forwards_replaced

# decoder-layer class -> whether its attention norms each head's queries and keys (Qwen3's q_norm / k_norm)
_SUPPORTED_LAYERS = {"Qwen2DecoderLayer": False, "LlamaDecoderLayer": False, "Qwen3DecoderLayer": True}
_BOOLEAN_MASK_ATTENTION = ("sdpa", packed_attention.PACKED_SDPA)


def applies(llm: nn.Module) -> bool:
    """Whether `decode_step` can stand in for `llm`'s decoder: supported layer classes, full attention everywhere, the
    rotary embedding computed by the decoder, an attention implementation that transformers can look up."""
    decoder = llm.get_decoder()
    config = decoder.config
    layers = getattr(decoder, "layers", None)
    if layers is None or not hasattr(decoder, "rotary_emb") or not hasattr(decoder, "norm"):
        return False
    if any(type(layer).__name__ not in _SUPPORTED_LAYERS for layer in layers):
        return False
    if len(layers) != config.num_hidden_layers:
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ["full_attention"]):
        return False
    # sdpa-style attention functions take the boolean mask built here; eager takes an additive float mask
    return config._attn_implementation in _BOOLEAN_MASK_ATTENTION


@contextlib.contextmanager
def lean_decode_steps(llm: nn.Module) -> Iterator[None]:
    """While inside, the decoder's decode steps run `decode_step` (the caller checks `applies(llm)` first)."""
    decoder = llm.get_decoder()
    full_forward = decoder.forward

    def forward(input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, **kwargs):
        if _is_decode_step(input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache, kwargs):
            if inputs_embeds is None:  # the decoder's own embedding (these decoders do not scale it)
                inputs_embeds = decoder.embed_tokens(input_ids)
            return decode_step(decoder, inputs_embeds, attention_mask, position_ids, cache)
        return full_forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)

    with forwards_replaced([(decoder, forward)]):
        yield


def _is_decode_step(input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache, kwargs) -> bool:
    """One position per prompt against a non-empty cache, the 2D padding mask covering cache + new position (or no
    mask: `generate` passes none for an unpadded batch), and no extra outputs asked for (anything else takes the
    full forward)."""
    if (input_ids is None) == (inputs_embeds is None) or not isinstance(cache, Cache) or use_cache is False:
        return False
    if any(kwargs.get(k) for k in ("output_attentions", "output_hidden_states")) or kwargs.get("return_dict") is False:
        return False
    if any(k not in ("output_attentions", "output_hidden_states", "return_dict") for k in kwargs):
        return False  # e.g. packed-sequence boundaries or other attention keywords
    new = input_ids if input_ids is not None else inputs_embeds
    if new.shape[1] != 1 or position_ids is None:
        return False
    cached = cache.get_seq_length()
    if attention_mask is not None and (attention_mask.dim() != 2 or attention_mask.shape[1] != cached + 1):
        return False
    return cached > 0


def decode_step(decoder: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor, cache: Cache) -> BaseModelOutputWithPast:
    """One decode step: `hidden` [B, 1, d] (the new positions' input embeddings), `attention_mask` [B, kv] over the
    cache and the new position (or None: nothing padded), `position_ids` [B, 1]. Appends each layer's keys and values
    to `cache` and returns the final-normed hidden states, as the decoder's forward does."""
    mask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
    position_embeddings = decoder.rotary_emb(hidden, position_ids)
    attention = ALL_ATTENTION_FUNCTIONS[decoder.config._attn_implementation]
    for index, layer in enumerate(decoder.layers):
        hidden = _layer_step(layer, hidden, position_embeddings, mask, cache, index, attention)
    return BaseModelOutputWithPast(last_hidden_state=decoder.norm(hidden), cache=cache)


def projections(layer: nn.Module, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                queries: bool = True):
    """A Llama-structured layer's rotated queries and keys and its values [B, H, L, D] for the layer's input `hidden`
    [B, L, d] (its `forward` up to the cache update: input norm, projections, Qwen3's head norms, rotary).
    `queries=False`: the keys and values alone (queries None), each bitwise as with the queries."""
    attn = layer.self_attn
    hidden = layer.input_layernorm(hidden)
    heads = (*hidden.shape[:-1], -1, attn.head_dim)
    key = attn.k_proj(hidden).view(heads)
    query = attn.q_proj(hidden).view(heads) if queries else None
    if _SUPPORTED_LAYERS[type(layer).__name__]:
        key = attn.k_norm(key)
        query = attn.q_norm(query) if queries else None
    key = key.transpose(1, 2)
    value = attn.v_proj(hidden).view(heads).transpose(1, 2)
    cos, sin = position_embeddings
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    if not queries:  # the model file's rotary takes queries and keys together; it rotates each on its own
        return None, rotary(key, key, cos, sin)[1], value
    query, key = rotary(query.transpose(1, 2), key, cos, sin)
    return query, key, value


def _layer_step(layer: nn.Module, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None, cache: Cache, index: int, attention) -> torch.Tensor:
    """A Llama-structured layer's `forward` for one position, less its keyword plumbing: same operations, same order."""
    attn = layer.self_attn
    query, key, value = projections(layer, hidden, position_embeddings)
    key, value = cache.update(key, value, index)
    out, _ = attention(attn, query, key, value, mask, dropout=0.0, scaling=attn.scaling, sliding_window=None)
    hidden = hidden + attn.o_proj(out.reshape(*hidden.shape[:-1], -1).contiguous())
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))
