"""Greedy decoding in a plain loop: transformers' greedy search without `generate`'s per-step machinery.

`generate` wraps every step's forward in about a millisecond of Python and small tensor ops - input preparation,
keyword updates, a copy of the logits, logits processors, stopping criteria - ~20 ms of a ~640 ms batch in
`benchmarks/generation_speed.py` (16 steps, 2 threads). Its `torch.argmax` over a row of logits is also slow on a CPU
(not vectorised along the row: [8, 32000] float32 ~0.31 ms, [8, 151936] ~1.4 ms a step), where `first_argmax`, the
same index from vectorised block maxima, takes ~0.07 and ~0.16 ms.

`greedy_tokens` is the same search for the one case it covers, plain greedy decoding (`plan` says when): each step
the LLM's own forward on the positions not yet cached (the cache, attention mask and position ids as `generate`
builds them), EOS suppressed before `min_new_tokens`, the first highest-scoring token, the pad id after a sequence's
EOS, a stop when every sequence has ended or `max_new_tokens` are made. The tokens are `generate`'s (tested for every
stopping case). Any other setting - sampling, beams, penalties, forced or suppressed tokens, stop strings, streamers,
extra outputs, a setting this module does not name - leaves the call to `generate`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import Cache
from transformers.generation.configuration_utils import GenerationMode

# generation settings that greedy search reads; every other setting must be off (`_is_off`)
_GREEDY_SETTINGS = {"max_new_tokens", "min_new_tokens", "max_length", "do_sample", "num_beams", "use_cache",
                    "pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id",
                    "transformers_version", "_from_model_config"}
# read only when sampling (`_get_logits_processor`) or by beam search, so a greedy call may carry any of them
_OTHER_MODES_ONLY = {"temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
                     "length_penalty", "early_stopping"}
# settings whose value turns their processor or output off (None and False are off for every setting); `generate`
# unsets a "hybrid" cache (what Gemma 2 checkpoints name) and runs its dynamic cache, as the loop does
_OFF_VALUES = {"repetition_penalty": 1.0, "min_length": 0, "no_repeat_ngram_size": 0, "num_return_sequences": 1,
               "cache_implementation": "hybrid"}


def _is_off(name: str, value) -> bool:
    return value is None or value is False or (name in _OFF_VALUES and value == _OFF_VALUES[name])


@dataclass(frozen=True)
class GreedyPlan:
    max_new_tokens: int
    min_new_tokens: int
    eos_token_ids: tuple[int, ...]  # empty: no early stop
    pad_token_id: int | None  # the token written after a sequence's EOS


def plan(llm: nn.Module, generate_kwargs: dict) -> GreedyPlan | None:
    """What greedy search `llm.generate(**generate_kwargs)` would run, or None where it would run anything else.

    The settings resolve as `generate` resolves them: the LLM's generation config, then the call's keywords."""
    config = copy.deepcopy(llm.generation_config)
    extra = config.update(**generate_kwargs)
    if extra or config.get_generation_mode() != GenerationMode.GREEDY_SEARCH:
        return None  # model keywords (a streamer, a cache, ...) or another decoding mode
    if any(not _is_off(name, value) for name, value in config.to_diff_dict().items()
           if name not in _GREEDY_SETTINGS | _OTHER_MODES_ONLY):
        return None  # a logits processor, a stopping criterion or an output that greedy search alone does not have
    if config.max_new_tokens is None or config.max_new_tokens < 1 or config.use_cache is False:
        return None
    eos = config.eos_token_id
    eos = () if eos is None else tuple(int(e) for e in ([eos] if isinstance(eos, int) else eos))
    if eos and config.pad_token_id is None:
        return None  # `generate` substitutes an EOS id for the pad (with a warning); leave that to it
    return GreedyPlan(int(config.max_new_tokens), int(config.min_new_tokens or 0), eos, config.pad_token_id)


def first_argmax(scores: torch.Tensor, block: int = 128) -> torch.Tensor:
    """`scores.argmax(-1)` of [B, V] scores - the first highest index, NaN counting as highest - from block maxima:
    the first block holding the row's maximum, then the first maximum within it. Rows not a whole number of blocks
    take `torch.argmax` itself."""
    rows, width = scores.shape
    if width % block:
        return scores.argmax(-1)
    blocks = scores.view(rows, width // block, block)
    best = blocks.amax(-1).argmax(-1)  # amax propagates NaN as argmax ranks it: the same first block
    within = blocks[torch.arange(rows, device=scores.device), best].argmax(-1)
    return best * block + within


@torch.no_grad()
def greedy_tokens(llm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, plan: GreedyPlan,
                  cache: Cache | None = None) -> torch.Tensor:
    """The new tokens [B, n] of greedy search from a left-padded batch: `inputs_embeds` [B, L, d] (the LLM's inputs,
    already scaled), `attention_mask` [B, L]; `cache` may already hold the first positions (a packed prefill)."""
    cache = DynamicCache(config=llm.config) if cache is None else cache
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # `generate`'s numbering
    start = cache.get_seq_length()
    inputs = {"inputs_embeds": inputs_embeds[:, start:]}
    positions = positions[:, start:]
    batch = inputs_embeds.shape[0]
    eos = torch.tensor(plan.eos_token_ids, dtype=torch.long, device=inputs_embeds.device)
    running = torch.ones(batch, dtype=torch.bool, device=inputs_embeds.device)
    new = []
    for step in range(plan.max_new_tokens):
        logits = llm(**inputs, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                     logits_to_keep=1).logits[:, -1].float()  # `generate` scores in float32
        if len(eos) and step < plan.min_new_tokens:  # `MinNewTokensLengthLogitsProcessor`
            logits = logits.index_fill(-1, eos, -float("inf"))
        tokens = first_argmax(logits)
        if len(eos):  # ended sequences continue with the pad id; a sequence ends at its first EOS
            tokens = torch.where(running, tokens, plan.pad_token_id)
            running &= ~torch.isin(tokens, eos)
        new.append(tokens)
        if len(eos) and not bool(running.any()):  # (a host sync: only where a sequence can end)
            break
        inputs = {"input_ids": tokens[:, None]}
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)
        positions = positions[:, -1:] + 1
    return torch.stack(new, dim=1)
