"""Per-device memory estimate of a training config: parameters, gradients, optimiser state, FSDP gather buffers
and activations (with and without activation checkpointing), from a weightless (meta-device) build.

Activations are counted per token per layer from what autograd keeps for backward (the inputs of each matmul,
norm and activation), in the compute dtype:
- decoder layer: ~ 8·h + 2·kv + 4·I values (norm inputs/outputs, q/k/v, attention output, o-proj input, residual;
  gate, up, activation, down-proj input), plus a·s attention probabilities per token when attention is eager;
- ViT encoder layer: the same with I the MLP width, kv = h and eager attention over the crop's patches;
- with checkpointing only each layer's input (h per token) is kept, plus one layer's full set during recompute.
The loss computes logits only at supervised positions (fp32, with their softmax gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model.build import as_dtype, build_ovis
from .freezing import apply_trainable
from .sharding import shard_units

GiB = 1024**3


def _bytes(dtype) -> int:
    return as_dtype(dtype).itemsize


@dataclass
class Workload:
    batch_size: int  # samples per device per micro-batch
    text_tokens: int  # text tokens per sample
    crops: int  # crops per sample
    supervised_fraction: float = 0.25  # share of text tokens with labels


@dataclass
class Plan:
    parameters: float
    gradients: float
    optimizer: float
    gather_buffers: float
    activations: float
    activations_checkpointed: float
    checkpointing: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        act = self.activations_checkpointed if self.checkpointing else self.activations
        return self.parameters + self.gradients + self.optimizer + self.gather_buffers + act

    def table(self, gpu_gib: float | None = None) -> str:
        rows = [
            ("parameters", self.parameters),
            ("gradients", self.gradients),
            ("optimizer (AdamW)", self.optimizer),
            ("FSDP gather buffers", self.gather_buffers),
            ("activations" + (" (checkpointed)" if self.checkpointing else ""),
             self.activations_checkpointed if self.checkpointing else self.activations),
            ("total", self.total),
        ]
        lines = [f"{name:<34}{value / GiB:>10.2f} GiB" for name, value in rows]
        other = self.activations if self.checkpointing else self.activations_checkpointed
        lines.append(f"{'(activations ' + ('without' if self.checkpointing else 'with') + ' checkpointing)':<34}"
                     f"{other / GiB:>10.2f} GiB")
        if gpu_gib is not None:
            verdict = "fits" if self.total <= 0.9 * gpu_gib * GiB else "does NOT fit"
            lines.append(f"{verdict} a {gpu_gib:g} GiB device (10% kept for the allocator and CUDA context)")
        return "\n".join(lines)


def activation_bytes(model, work: Workload, compute_bytes: int, eager_llm: bool, eager_vit: bool) -> tuple[float, float]:
    """(without, with) activation checkpointing, for one micro-batch."""
    llm_cfg = model.llm.config
    vit_cfg = model.visual_tokenizer.backbone.config
    tpc = model.visual_tokenizer.tokens_per_crop()
    patches = (vit_cfg.image_size // vit_cfg.patch_size) ** 2
    seq = work.text_tokens + work.crops * tpc  # LLM tokens per sample
    b = work.batch_size

    h, inter = llm_cfg.hidden_size, llm_cfg.intermediate_size
    heads = llm_cfg.num_attention_heads
    head_dim = getattr(llm_cfg, "head_dim", None) or h // heads
    kv = llm_cfg.num_key_value_heads * head_dim
    per_token = 8 * h + 2 * kv + 4 * inter + (heads * seq if eager_llm else 0)
    llm_layer = b * seq * per_token * compute_bytes
    n_llm = llm_cfg.num_hidden_layers

    vh, vi, vheads = vit_cfg.hidden_size, vit_cfg.intermediate_size, vit_cfg.num_attention_heads
    vit_per_token = 10 * vh + 4 * vi + (vheads * patches if eager_vit else 0)
    vit_layer = b * work.crops * patches * vit_per_token * compute_bytes
    n_vit = vit_cfg.num_hidden_layers

    # visual head + softmax + expectation over the table, per visual token (fp32 softmax)
    vocab = model.visual_tokenizer.vocab_size
    visual = b * work.crops * tpc * (3 * vocab * 4 + h * compute_bytes)
    supervised = b * work.text_tokens * work.supervised_fraction
    logits = supervised * llm_cfg.vocab_size * 4 * 2
    embeds = b * seq * h * compute_bytes * 2

    full = n_llm * llm_layer + n_vit * vit_layer + visual + logits + embeds
    checkpointed = (
        n_llm * b * seq * h * compute_bytes + llm_layer
        + n_vit * b * work.crops * patches * vh * compute_bytes + vit_layer
        + visual + logits + embeds
    )
    return full, checkpointed


def plan(
    spec: dict[str, Any],
    trainable: list[str],
    work: Workload,
    world: int = 1,
    sharded: bool = False,
    compute_dtype: str = "bfloat16",
    master_dtype: str | None = None,
    checkpointing: bool = False,
) -> Plan:
    """Estimate per-device bytes. `sharded`: FSDP (parameters, gradients and optimiser state divided by `world`);
    otherwise DDP (replicated). `master_dtype`: the stored parameter dtype (default: the spec's dtype)."""
    model = build_ovis(spec, device="meta")
    apply_trainable(model, trainable)
    stored = _bytes(master_dtype or spec.get("dtype") or "float32")
    compute = _bytes(compute_dtype)
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shard = world if sharded else 1
    parameters = n_all * stored / shard
    gradients = n_train * stored / shard
    optimizer = 2 * n_train * stored / shard  # AdamW: exp_avg and exp_avg_sq in the parameters' dtype
    gather = 0.0
    if sharded:  # the largest unit gathered in compute dtype, twice (the current one and the prefetched next)
        largest = max(sum(p.numel() for p in unit.parameters()) for unit in shard_units(model))
        root = sum(p.numel() for p in model.llm.get_input_embeddings().parameters())
        gather = (2 * largest + root) * compute
    attn = getattr(model.llm.config, "_attn_implementation", "sdpa")
    vit_attn = getattr(model.visual_tokenizer.backbone.config, "_attn_implementation", "sdpa")
    full, ckpt = activation_bytes(model, work, compute, attn == "eager", vit_attn == "eager")
    return Plan(parameters, gradients, optimizer, gather, full, ckpt, checkpointing,
                {"parameters": n_all, "trainable": n_train, "world": world, "sharded": sharded})
