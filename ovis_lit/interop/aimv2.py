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
from collections.abc import Callable
from typing import Any

import torch
import transformers

from .legacy_config import LEGACY_COMMON_FIELDS

log = logging.getLogger(__name__)

ORIGINAL_MODEL_TYPE = "aimv2"

# Module paths, original -> ours (`{}`: a block index); the inverse map is derived from this one. q/k/v are not here:
# one original tensor, three of ours.
_MODULES = {
    "trunk.blocks.{}.norm_1": "encoder.layers.{}.rms_norm1",
    "trunk.blocks.{}.norm_2": "encoder.layers.{}.rms_norm2",
    "trunk.blocks.{}.attn.proj": "encoder.layers.{}.attention.out_proj",
    "trunk.blocks.{}.mlp.fc1": "encoder.layers.{}.ffn.gate_proj",  # the SiLU-gated branch
    "trunk.blocks.{}.mlp.fc3": "encoder.layers.{}.ffn.up_proj",  # the linear branch
    "trunk.blocks.{}.mlp.fc2": "encoder.layers.{}.ffn.down_proj",
    "preprocessor.patchifier.proj": "embeddings.patch_embed",
    "preprocessor.patchifier.norm": "embeddings.rms_norm",
    "trunk.post_trunk_norm": "rms_norm",
}
_POS_ORIGINAL = "preprocessor.pos_embed"
_POS_OURS = "embeddings.position_embedding.weight"
_QKV_ORIGINAL = re.compile(r"trunk\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)")
_QKV_OURS = re.compile(r"encoder\.layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)")


def _renamer(modules: dict[str, str]) -> Callable[[str], str | None]:
    """A parameter name -> its name on the other side by `modules` (module path -> module path), or None."""
    rules = [
        (re.compile(re.escape(source).replace(r"\{\}", r"(\d+)") + r"\.(weight|bias)"), target)
        for source, target in modules.items()
    ]

    def rename(name: str) -> str | None:
        for pattern, target in rules:
            match = pattern.fullmatch(name)
            if match:
                *block, kind = match.groups()
                return f"{target.format(*block)}.{kind}"
        return None

    return rename


_to_ours = _renamer(_MODULES)
_to_original = _renamer({ours: original for original, ours in _MODULES.items()})


# ----------------------------------------------------------------------------------------------------- weights
def state_to_ours(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AIMv2 tensors (names without the `visual_tokenizer.backbone.` prefix) -> Aimv2VisionModel's."""
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in original.items():
        qkv = _QKV_ORIGINAL.fullmatch(name)
        if name == _POS_ORIGINAL:
            if tensor.dim() != 3 or tensor.shape[0] != 1:
                raise ValueError(f"AIMv2 {name} should be [1, patches, d], got {tuple(tensor.shape)}")
            ours[_POS_OURS] = tensor[0]
        elif qkv:
            if tensor.shape[0] % 3:
                raise ValueError(f"AIMv2 {name} has {tensor.shape[0]} rows, not q, k and v stacked")
            i, kind = qkv.groups()
            for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                ours[f"encoder.layers.{i}.attention.{part}_proj.{kind}"] = chunk
        elif (renamed := _to_ours(name)) is not None:
            ours[renamed] = tensor
        else:
            raise ValueError(f"unknown AIMv2 parameter {name!r} in the original Ovis2 layout")
    return ours


def state_to_original(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `state_to_ours` (also maps gradients, which have the parameters' names and shapes)."""
    original: dict[str, torch.Tensor] = {}
    stacks: dict[tuple[str, str], dict[str, torch.Tensor]] = {}  # (block, weight/bias) -> q, k, v
    for name, tensor in ours.items():
        qkv = _QKV_OURS.fullmatch(name)
        if name == _POS_OURS:
            original[_POS_ORIGINAL] = tensor.unsqueeze(0)
        elif qkv:
            i, part, kind = qkv.groups()
            stacks.setdefault((i, kind), {})[part] = tensor
        elif (renamed := _to_original(name)) is not None:
            original[renamed] = tensor
        elif name.startswith("head."):
            raise ValueError(
                "this AIMv2 backbone has a pooling head, which the original Ovis2 layout has no place for (Ovis never "
                "uses it): build the backbone with use_head=False"
            )
        else:
            raise ValueError(f"Aimv2VisionModel parameter {name!r} has no counterpart in the original Ovis2 layout")
    for (i, kind), parts in stacks.items():
        if set(parts) != set("qkv"):
            raise ValueError(f"block {i}: q, k and v {kind} must all be present to stack them, got {sorted(parts)}")
        original[f"trunk.blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in "qkv"], dim=0)
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
