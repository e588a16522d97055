"""AIMv2 as the original Ovis2 checkpoints store it <-> transformers' `Aimv2VisionModel`.

The original Ovis2 code ships its own AIMv2 (config `model_type: aimv2`) with these parameter names under
`visual_tokenizer.backbone.`:
  preprocessor.patchifier.proj.{weight,bias}   Conv2d patch embedding
  preprocessor.patchifier.norm.weight          RMSNorm of the patch embeddings (before the position embedding)
  preprocessor.pos_embed                       [1, patches, d] learned position embedding
  trunk.blocks.N.norm_1 / norm_2               pre-attention / pre-MLP RMSNorms
  trunk.blocks.N.attn.qkv                      q, k and v stacked in that order along the output dimension
  trunk.blocks.N.attn.proj                     attention output projection
  trunk.blocks.N.mlp.fc1 / fc2 / fc3           SwiGLU: fc2(silu(fc1 x) * fc3 x)
  trunk.post_trunk_norm.weight                 final RMSNorm (Ovis2 takes its features BEFORE it)
transformers' `Aimv2VisionModel` computes the same function with other names (q/k/v split, gate/up/down MLP,
position embedding as an nn.Embedding), so ovis-lit runs transformers' module and converts names and shapes here,
at the checkpoint boundary only. Both directions are exact (reshapes and concatenations, no arithmetic).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import torch
import transformers

from .legacy_config import LEGACY_COMMON_FIELDS

log = logging.getLogger(__name__)

ORIGINAL_MODEL_TYPE = "aimv2"

# Per block: original module path -> ours (q/k/v handled separately: one original tensor, three of ours).
_BLOCK_MODULES = {
    "norm_1": "rms_norm1",
    "norm_2": "rms_norm2",
    "attn.proj": "attention.out_proj",
    "mlp.fc1": "ffn.gate_proj",  # the SiLU-gated branch
    "mlp.fc3": "ffn.up_proj",  # the linear branch
    "mlp.fc2": "ffn.down_proj",
}
_TOP_MODULES = {
    "preprocessor.patchifier.proj": "embeddings.patch_embed",
    "preprocessor.patchifier.norm": "embeddings.rms_norm",
    "trunk.post_trunk_norm": "rms_norm",
}
_POS_ORIGINAL = "preprocessor.pos_embed"
_POS_OURS = "embeddings.position_embedding.weight"
_QKV = ("q_proj", "k_proj", "v_proj")

_ORIGINAL_BLOCK = re.compile(r"trunk\.blocks\.(\d+)\.(.+)\.(weight|bias)")
_OURS_BLOCK = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
_LEAF = re.compile(r"(.+)\.(weight|bias)")


# ----------------------------------------------------------------------------------------------------- weights
def state_to_ours(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AIMv2 tensors (names without the `visual_tokenizer.backbone.` prefix) -> Aimv2VisionModel's."""
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in original.items():
        if name == _POS_ORIGINAL:
            if tensor.dim() != 3 or tensor.shape[0] != 1:
                raise ValueError(f"AIMv2 {name} should be [1, patches, d], got {tuple(tensor.shape)}")
            ours[_POS_OURS] = tensor[0]
            continue
        block = _ORIGINAL_BLOCK.fullmatch(name)
        if block:
            i, module, kind = block.groups()
            if module == "attn.qkv":
                if tensor.shape[0] % 3:
                    raise ValueError(f"AIMv2 {name} has {tensor.shape[0]} rows, not q, k and v stacked")
                for part, chunk in zip(_QKV, tensor.chunk(3, dim=0)):
                    ours[f"encoder.layers.{i}.attention.{part}.{kind}"] = chunk
                continue
            if module in _BLOCK_MODULES:
                ours[f"encoder.layers.{i}.{_BLOCK_MODULES[module]}.{kind}"] = tensor
                continue
        leaf = _LEAF.fullmatch(name)
        if leaf and leaf.group(1) in _TOP_MODULES:
            ours[f"{_TOP_MODULES[leaf.group(1)]}.{leaf.group(2)}"] = tensor
            continue
        raise ValueError(f"unknown AIMv2 parameter {name!r} in the original Ovis2 layout")
    return ours


def state_to_original(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `state_to_ours` (also maps gradients, which have the parameters' names and shapes)."""
    inverse_block = {v: k for k, v in _BLOCK_MODULES.items()}
    inverse_top = {v: k for k, v in _TOP_MODULES.items()}
    original: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in ours.items():
        if name == _POS_OURS:
            original[_POS_ORIGINAL] = tensor.unsqueeze(0)
            continue
        block = _OURS_BLOCK.fullmatch(name)
        if block:
            i, module, kind = block.groups()
            part = module.removeprefix("attention.")
            if part in _QKV:
                qkv.setdefault((i, kind), {})[part] = tensor
                continue
            if module in inverse_block:
                original[f"trunk.blocks.{i}.{inverse_block[module]}.{kind}"] = tensor
                continue
        leaf = _LEAF.fullmatch(name)
        if leaf and leaf.group(1) in inverse_top:
            original[f"{inverse_top[leaf.group(1)]}.{leaf.group(2)}"] = tensor
            continue
        if name.startswith("head."):
            raise ValueError(
                "this AIMv2 backbone has a pooling head, which the original Ovis2 layout has no place for (Ovis never "
                "uses it): build the backbone with use_head=False"
            )
        raise ValueError(f"Aimv2VisionModel parameter {name!r} has no counterpart in the original Ovis2 layout")
    for (i, kind), parts in qkv.items():
        if set(parts) != set(_QKV):
            raise ValueError(f"block {i}: q, k and v {kind} must all be present to stack them, got {sorted(parts)}")
        original[f"trunk.blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in _QKV], dim=0)
    return original


# ------------------------------------------------------------------------------------------------------ config
def config_to_ours(original: dict[str, Any]) -> transformers.Aimv2VisionConfig:
    """The original `backbone_config` (model_type aimv2) -> an Aimv2VisionConfig computing the same function."""
    if original.get("model_type") != ORIGINAL_MODEL_TYPE:
        raise ValueError(f"expected an AIMv2 backbone_config (model_type 'aimv2'), got {original.get('model_type')!r}")
    qkv_bias, use_bias = bool(original.get("qkv_bias", False)), bool(original.get("use_bias", False))
    if qkv_bias != use_bias:
        # The original gives q/k/v `qkv_bias` and the output projection and MLP `use_bias`; transformers ties the
        # output projection's bias to qkv_bias. Every released AIMv2 has neither.
        raise ValueError(f"AIMv2 with qkv_bias={qkv_bias} but use_bias={use_bias} has no transformers equivalent")
    if original.get("projection_dropout", 0.0):
        log.warning("AIMv2 projection_dropout %s is ignored (transformers' AIMv2 has none)", original["projection_dropout"])
    return transformers.Aimv2VisionConfig(
        hidden_size=original["hidden_size"],
        intermediate_size=original["intermediate_size"],
        num_hidden_layers=original["num_hidden_layers"],
        num_attention_heads=original["num_attention_heads"],
        num_channels=original.get("num_channels", 3),
        image_size=original["image_size"],
        patch_size=original["patch_size"],
        rms_norm_eps=original.get("rms_norm_eps", 1e-5),
        attention_dropout=original.get("attention_dropout", 0.0),
        qkv_bias=qkv_bias,
        mlp_bias=use_bias,
        hidden_act="silu",
        is_native=False,  # learned position embedding, as the original
        use_head=False,  # Ovis has no use for AIMv2's pooling head
    )


def config_to_original(config: transformers.Aimv2VisionConfig) -> dict[str, Any]:
    """An Aimv2VisionConfig -> the original `backbone_config` dict (with the fields transformers 4.4x wrote)."""
    if config.is_native or config.hidden_act != "silu" or config.qkv_bias != config.mlp_bias:
        raise ValueError(
            "the original Ovis2 AIMv2 has a learned position embedding, SiLU and one bias setting for attention and "
            f"MLP; this backbone has is_native={config.is_native}, hidden_act={config.hidden_act!r}, "
            f"qkv_bias={config.qkv_bias}, mlp_bias={config.mlp_bias}"
        )
    d = copy.deepcopy(LEGACY_COMMON_FIELDS)
    d.update(
        {
            "attention_dropout": float(config.attention_dropout),
            "hidden_size": config.hidden_size,
            "image_size": config.image_size,
            "intermediate_size": config.intermediate_size,
            "model_type": ORIGINAL_MODEL_TYPE,
            "num_attention_heads": config.num_attention_heads,
            "num_channels": config.num_channels,
            "num_hidden_layers": config.num_hidden_layers,
            "patch_size": config.patch_size,
            "projection_dropout": 0.0,
            "qkv_bias": config.qkv_bias,
            "rms_norm_eps": config.rms_norm_eps,
            "use_bias": config.mlp_bias,
        }
    )
    return d
