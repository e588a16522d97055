"""Per-device memory estimate of a training config: parameters, gradients, optimiser state, FSDP gather buffers
and activations (with and without activation checkpointing), from a weightless (meta-device) build.

Activations are counted per token per layer from what autograd keeps for backward (the inputs of each matmul,
norm and activation), in the compute dtype:
- decoder layer: ~ 8·h + 2·kv + 4·I values (norm inputs/outputs, q/k/v, attention output, o-proj input, residual;
  gate, up, activation, down-proj input), plus a·s attention probabilities per token when attention is eager,
  plus 2·(q + kv) for Qwen3's q/k norms;
- ViT encoder layer: the same with I the MLP width, kv = h and eager attention over the crop's patches (native
  resolution, Ovis2.5: an image's patches, hidden_stride² per visual token);
- full checkpointing keeps only each layer's input (h per token), plus one layer's full set during recompute;
- selective checkpointing keeps the matmul and attention outputs (decoder ~ 5·h + 2·kv + 2·I: input, q, k, v,
  attention output, o-proj, gate, up, down; ViT 7·h + 2·I), plus one layer's full set during recompute.
The loss computes logits only at supervised positions (fp32, with their softmax gradient).

LoRA / QLoRA (`lora`, model/lora.py): the adapted parts' weights are frozen (no gradient, no optimiser state); the
adapters (r·(in + out) per adapted projection) and whatever else the stage trains (head, visual table) have
gradients and AdamW states. QLoRA stores each adapted projection's weight in 4-bit NF4 with bitsandbytes' double-
quantized block scales (0.5 + 1/64 + 4/16384 bytes per weight) and dequantizes one weight at a time to compute
(counted with the buffers). Adapter activations per token and adapted projection: the rank-r intermediate, plus,
with dropout and no checkpointing, the dropped-out copy of the projection's input that lora_A keeps (checkpointing
recomputes it: dropout output is no matmul output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..model import packed_attention
from ..model.build import as_dtype, build_ovis
from ..model.checkpointing import MODES, checkpoint_mode
from ..model.lora import LoraSettings, target_module_names
from .freezing import apply_trainable, matches, resolve_pattern
from .sharding import shard_units

GiB = 1024**3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights, 8-bit scales per 64, fp32 scale per 256 scales


def _bytes(dtype) -> int:
    return as_dtype(dtype).itemsize


@dataclass
class Workload:
    batch_size: int  # samples per device per micro-batch
    text_tokens: int  # text tokens per sample
    crops: int  # crops per sample (native resolution, Ovis2.5: images per sample)
    supervised_fraction: float = 0.25  # share of text tokens with labels
    # native resolution (Ovis2.5): visual tokens per image (its pixels / (patch * hidden_stride)^2); the ViT sees
    # hidden_stride^2 patches per token. Crop models have a fixed count per crop and ignore this.
    tokens_per_image: int | None = None


def visual_shape(model, work: Workload) -> tuple[int, int]:
    """(visual tokens, ViT patches) per crop or, at native resolution, per image."""
    vt = model.visual_tokenizer
    if vt.native_resolution:
        if not work.tokens_per_image:
            raise ValueError("a native-resolution model (Ovis2.5) needs Workload.tokens_per_image")
        return work.tokens_per_image, work.tokens_per_image * vt.hidden_stride**2
    cfg = vt.backbone.config
    return vt.tokens_per_crop(), (cfg.image_size // cfg.patch_size) ** 2


@dataclass
class Plan:
    parameters: float
    gradients: float
    optimizer: float
    gather_buffers: float  # FSDP's gathered units; QLoRA's dequantized weight
    activations: float  # with the configured checkpointing
    checkpointing: dict[str, str]  # {"vision": mode, "llm": mode}
    activations_by_mode: dict[str, float]  # the same mode on both parts, for comparison
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.parameters + self.gradients + self.optimizer + self.gather_buffers + self.activations

    def table(self, gpu_gib: float | None = None) -> str:
        ac = self.checkpointing
        label = ac["vision"] if ac["vision"] == ac["llm"] else f"vit {ac['vision']}, llm {ac['llm']}"
        rows = [
            ("parameters", self.parameters),
            ("gradients", self.gradients),
            ("optimizer (AdamW)", self.optimizer),
            ("FSDP gather / QLoRA dequantize buffers", self.gather_buffers),
            (f"activations (checkpointing: {label})", self.activations),
            ("total", self.total),
        ]
        lines = [f"{name:<44}{value / GiB:>10.2f} GiB" for name, value in rows]
        for mode, value in self.activations_by_mode.items():
            lines.append(f"{'  (activations, checkpointing ' + mode + ')':<44}{value / GiB:>10.2f} GiB")
        if gpu_gib is not None:
            verdict = "fits" if self.total <= 0.9 * gpu_gib * GiB else "does NOT fit"
            lines.append(f"{verdict} a {gpu_gib:g} GiB device (10% kept for the allocator and CUDA context)")
        return "\n".join(lines)


def _per_token(mode: str, full: float, selective: float, kept_input: float) -> float:
    return {"none": full, "selective": selective, "full": kept_input}[mode]


def activation_bytes(
    model, work: Workload, compute_bytes: int, eager_llm: bool, eager_vit: bool, vision: str = "none", llm: str = "none"
) -> float:
    """Saved activations of one micro-batch with the given checkpointing mode per part."""
    llm_cfg = model.llm.config
    vit_cfg = model.visual_tokenizer.backbone.config
    tpc, patches = visual_shape(model, work)
    seq = work.text_tokens + work.crops * tpc  # LLM tokens per sample
    b = work.batch_size

    h, inter = llm_cfg.hidden_size, llm_cfg.intermediate_size
    heads = llm_cfg.num_attention_heads
    head_dim = getattr(llm_cfg, "head_dim", None) or h // heads
    kv = llm_cfg.num_key_value_heads * head_dim
    probs = heads * seq if eager_llm else 0  # eager attention keeps its [heads, seq] scores per token
    # Qwen3 (Ovis2.5) normalises q and k per head before RoPE: their norm inputs and outputs are kept too
    qk_norm = 2 * (heads * head_dim + kv) if llm_cfg.model_type in ("qwen3", "qwen3_moe") else 0
    full = 8 * h + 2 * kv + 4 * inter + probs + qk_norm
    llm_tokens = b * seq * compute_bytes
    llm_bytes = llm_cfg.num_hidden_layers * llm_tokens * _per_token(
        llm, full, 5 * h + 2 * kv + 2 * inter + probs + qk_norm // 2, h)
    if llm != "none":
        llm_bytes += llm_tokens * full  # one layer's full set while it is recomputed

    vh, vi, vheads = vit_cfg.hidden_size, vit_cfg.intermediate_size, vit_cfg.num_attention_heads
    vprobs = vheads * patches if eager_vit else 0  # (the NaViT's windowed layers attend to fewer: an upper bound)
    vfull = 10 * vh + 4 * vi + vprobs
    vit_tokens = b * work.crops * patches * compute_bytes
    vit_bytes = vit_cfg.num_hidden_layers * vit_tokens * _per_token(vision, vfull, 7 * vh + 2 * vi + vprobs, vh)
    if vision != "none":
        vit_bytes += vit_tokens * vfull

    # visual head + softmax + expectation over the table, per visual token (fp32 softmax)
    vocab = model.visual_tokenizer.vocab_size
    visual = b * work.crops * tpc * (3 * vocab * 4 + h * compute_bytes)
    supervised = b * work.text_tokens * work.supervised_fraction
    logits = supervised * llm_cfg.vocab_size * 4 * 2
    embeds = b * seq * h * compute_bytes * 2
    return llm_bytes + vit_bytes + visual + logits + embeds


def plan(
    spec: dict[str, Any],
    trainable: list[str],
    work: Workload,
    world: int = 1,
    sharded: bool = False,
    compute_dtype: str = "bfloat16",
    master_dtype: str | None = None,
    checkpointing: bool | str | dict[str, bool | str] = False,
    lora: LoraSettings | dict[str, Any] | None = None,
    frozen_dtype: str | None = None,
) -> Plan:
    """Estimate per-device bytes. `sharded`: FSDP (parameters, gradients and optimiser state divided by `world`);
    otherwise DDP (replicated). `master_dtype`: the stored parameter dtype (default: the spec's dtype).
    `checkpointing`: one mode for both parts, or {"vision": mode, "llm": mode} (see model/checkpointing.py).
    `lora`: LoRA / QLoRA adapters (model.lora), None for full training of what the stage trains. `frozen_dtype`:
    the stored dtype of frozen parameters, when it is not the trainable ones' (e.g. a bf16 base under fp32
    adapters)."""
    model = build_ovis(spec, device="meta")
    settings = lora if isinstance(lora, LoraSettings) or lora is None else LoraSettings.from_config(lora)
    apply_trainable(model, trainable)
    adapted: list[nn.Linear] = []
    n_adapters = 0
    if settings is not None:  # counted, not injected (the same numbers, without building peft's layers)
        adapted = [model.get_submodule(n) for n in target_module_names(model, settings)]
        n_adapters = sum(settings.r * (m.in_features + m.out_features) for m in adapted)
        trained_adapters = sum(settings.r * (m.in_features + m.out_features) for m in adapted
                               if m.weight.requires_grad)  # the stage trains the projection's part
        prefixes = [resolve_pattern(model, p) for p in settings.target]
        for name, param in model.named_parameters():  # the adapted parts train through their adapters only
            if any(matches(name, p) for p in prefixes):
                param.requires_grad_(False)
    stored = _bytes(master_dtype or spec.get("dtype") or "float32")
    frozen_stored = _bytes(frozen_dtype) if frozen_dtype else stored
    compute = _bytes(compute_dtype)
    n_all = sum(p.numel() for p in model.parameters()) + n_adapters
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad) + (trained_adapters if settings else 0)
    n_quantized = sum(m.weight.numel() for m in adapted) if settings is not None and settings.quantize else 0
    shard = world if sharded else 1
    n_frozen = n_all - n_train - n_quantized
    parameters = (n_train * stored + n_frozen * frozen_stored + n_quantized * NF4_BYTES) / shard
    gradients = n_train * stored / shard
    optimizer = 2 * n_train * stored / shard  # AdamW: exp_avg and exp_avg_sq in the parameters' dtype
    gather = 0.0
    if sharded:  # the largest unit gathered in compute dtype, twice (the current one and the prefetched next)
        largest = max(sum(p.numel() for p in unit.parameters()) for unit in shard_units(model))
        root = sum(p.numel() for p in model.llm.get_input_embeddings().parameters())
        gather = (2 * largest + root) * compute
    if n_quantized:  # the weight being dequantized for its matmul (forward, and backward for the input gradient)
        gather += max(m.weight.numel() for m in adapted) * compute
    attn = packed_attention.public_name(getattr(model.llm.config, "_attn_implementation", "sdpa"))
    vit_attn = getattr(model.visual_tokenizer.backbone.config, "_attn_implementation", "sdpa")
    parts = checkpointing if isinstance(checkpointing, dict) else {"vision": checkpointing, "llm": checkpointing}
    modes = {part: checkpoint_mode(parts.get(part)) for part in ("vision", "llm")}
    eager = (attn == "eager", vit_attn == "eager")
    activations = activation_bytes(model, work, compute, *eager, **modes)
    by_mode = {m: activation_bytes(model, work, compute, *eager, vision=m, llm=m) for m in MODES}
    if settings is not None:
        activations += adapter_activation_bytes(model, adapted, settings, work, compute, **modes)
        by_mode = {m: v + adapter_activation_bytes(model, adapted, settings, work, compute, m, m)
                   for m, v in by_mode.items()}
    return Plan(parameters, gradients, optimizer, gather, activations, modes, by_mode,
                {"parameters": n_all, "trainable": n_train, "world": world, "sharded": sharded,
                 "adapters": n_adapters,
                 "quantized": n_quantized})


def adapter_activation_bytes(model, adapted: list, settings: LoraSettings, work: Workload, compute_bytes: int,
                             vision: str = "none", llm: str = "none") -> float:
    """What the adapters add to the saved activations: per token and adapted projection, lora_A's rank-r output
    (a matmul output: kept unless the layer is fully checkpointed) and, with dropout, the dropped-out input
    (kept only without checkpointing)."""
    tpc, patches = visual_shape(model, work)
    tokens = {"llm": work.batch_size * (work.text_tokens + work.crops * tpc),
              "vision": work.batch_size * work.crops * patches}
    modes = {"llm": llm, "vision": vision}
    llm_ids = {id(m) for m in model.llm.modules()}
    total = 0.0
    for linear in adapted:
        part = "llm" if id(linear) in llm_ids else "vision"
        per_token = 0
        if modes[part] != "full":
            per_token += settings.r
        if modes[part] == "none" and settings.dropout:
            per_token += linear.in_features
        total += tokens[part] * per_token * compute_bytes
    return total
