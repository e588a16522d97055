"""Activation checkpointing modes for the ViT and the LLM layers: none, full or selective.

- full: keep only each layer's input, re-run the whole layer in backward (least memory, one extra forward);
- selective: keep the outputs of matmuls and attention, recompute everything else in backward (norms,
  activations, RoPE, residual adds). No matmul runs twice, so it costs little time, and it drops the
  elementwise intermediates that make up about half of a layer's saved activations (measured in
  `benchmarks/model_step.py`).
Both go through `torch.utils.checkpoint` (non-reentrant) via transformers' `activation_checkpointing_enable`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

MODES = ("none", "selective", "full")

_aten = torch.ops.aten
# Ops whose outputs are worth keeping: recomputing them would cost real FLOPs.
_KEEP = {
    _aten.mm.default,
    _aten.addmm.default,
    _aten.bmm.default,
    _aten.baddbmm.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
}


def checkpoint_mode(value: bool | str | None) -> str:
    """Normalise a config value: true/false (the older boolean form) or one of MODES."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "full"
    if value not in MODES:
        raise ValueError(f"activation checkpointing must be one of {MODES} (or true/false), got {value!r}")
    return value


def _keep_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _KEEP else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_kwargs(mode: str) -> dict[str, Any]:
    """kwargs for `torch.utils.checkpoint.checkpoint` that implement `mode` ("full" or "selective")."""
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _keep_matmuls)
    elif mode != "full":
        raise ValueError(f"no checkpoint kwargs for mode {mode!r}")
    return kwargs
