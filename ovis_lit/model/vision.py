"""Vision backbones: transformers ViTs that return patch features from the last layer, before the final norm.

Every supported family is described by a `BackboneFamily`: how to build it from a config, whether to drop a CLS
token, where its encoder layers live (for FSDP wrapping and activation checkpointing) and which of its parameters
Ovis never uses (final norms and pooling heads: they stay frozen so DDP/FSDP never wait for their gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import transformers
from torch import nn


def _patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, (H/p)*(W/p), p*p*C], the patch layout of transformers' Siglip2 image processor."""
    n, c, h, w = pixel_values.shape
    x = pixel_values.reshape(n, c, h // patch_size, patch_size, w // patch_size, patch_size)
    x = x.permute(0, 2, 4, 3, 5, 1)  # n, gh, gw, p, p, c
    return x.reshape(n, (h // patch_size) * (w // patch_size), patch_size * patch_size * c)


def _siglip2_inputs(backbone: nn.Module, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    p = backbone.config.patch_size
    n, _, h, w = pixel_values.shape
    patches = _patchify(pixel_values, p)
    grid = torch.tensor([h // p, w // p], device=pixel_values.device).expand(n, 2)
    mask = torch.ones(patches.shape[:2], dtype=torch.long, device=pixel_values.device)
    return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": grid}


@dataclass(frozen=True)
class BackboneFamily:
    model_type: str  # transformers' model_type of the vision config
    config_class: type
    model_class: type
    drop_cls_token: bool
    unused_prefixes: tuple[str, ...]  # parameters Ovis never uses
    make_inputs: Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]] | None = None
    # config fields Ovis sets unless told otherwise (e.g. no pooling head that every forward would compute for nothing)
    config_defaults: tuple[tuple[str, Any], ...] = ()


def _family(name: str, drop_cls_token: bool = False, unused_prefixes: tuple[str, ...] = ("post_layernorm.", "head."),
            **extra) -> BackboneFamily:
    """transformers' `{name}VisionConfig` / `{name}VisionModel` as a family. `unused_prefixes` by default: the
    pooled output's final norm and pooling head, which Ovis (taking the last hidden states) never runs."""
    config_class, model_class = getattr(transformers, f"{name}VisionConfig"), getattr(transformers, f"{name}VisionModel")
    return BackboneFamily(config_class.model_type, config_class, model_class, drop_cls_token, unused_prefixes, **extra)


FAMILIES: dict[str, BackboneFamily] = {
    f.model_type: f
    for f in (
        _family("Siglip"),
        # CLIP's first token is its class token; its post_layernorm only feeds the pooled output (it has no head).
        _family("CLIP", drop_cls_token=True, unused_prefixes=("post_layernorm.",)),
        # AIMv2's final rms_norm: Ovis2 takes its features before it (see interop/aimv2.py).
        _family("Aimv2", unused_prefixes=("rms_norm.", "head."), config_defaults=(("use_head", False),)),
        _family("Siglip2", make_inputs=_siglip2_inputs),
    )
}


def family_of(backbone: nn.Module) -> BackboneFamily:
    model_type = backbone.config.model_type
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported vision backbone {model_type!r}; supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    return backbone.encoder.layers


def build_vision_backbone(
    model_type: str,
    config: dict[str, Any] | None = None,
    pretrained: str | Path | None = None,
    attn_implementation: str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A vision backbone from a config dict (random init) or from a local checkpoint directory."""
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported vision backbone {model_type!r}; supported: {sorted(FAMILIES)}")
    family = FAMILIES[model_type]
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if pretrained is not None:
        path = Path(pretrained)
        if not path.is_dir():
            raise FileNotFoundError(f"vision backbone directory not found: {path} (only local paths are loaded)")
        from ..interop.local_files import safetensors_files

        safetensors_files(path)  # inside the directory, readable; pickled weights never
        return family.model_class.from_pretrained(
            path, local_files_only=True, dtype=dtype, use_safetensors=True, trust_remote_code=False,
            **dict(family.config_defaults), **extra,
        )
    cfg = family.config_class(**{**dict(family.config_defaults), **(config or {})})
    if attn_implementation:
        cfg._attn_implementation = attn_implementation
    model = family.model_class(cfg)
    return model.to(dtype) if dtype is not None else model


def vision_features(backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Patch features [N, patches, d] of the last encoder layer, before the backbone's final norm."""
    family = family_of(backbone)
    inputs = family.make_inputs(backbone, pixel_values) if family.make_inputs else {"pixel_values": pixel_values}
    out = backbone(**inputs, output_hidden_states=True)
    features = out.hidden_states[-1]
    if family.drop_cls_token:
        features = features[:, 1:]
    return features


def keep_residual_stream_contiguous(backbone: nn.Module, enabled: bool = True) -> None:
    """Make the patch embeddings contiguous before they enter the encoder (a speed-up; `enabled=False` removes it).

    Conv patch embeddings come out as `[N, C, h*w].transpose(1, 2)`: a [N, patches, C] view whose channels are
    strided. Elementwise ops keep that layout, so the whole residual stream stays transposed: every Linear then
    copies its input to a contiguous buffer and every norm reduces over a strided axis (AIMv2: 6 copies per layer,
    about 4% of the benchmark step). One copy here avoids all of them. The matmuls then run on the other memory
    layout, which rounds differently in the last float32 bit: the original code (strided stream) is reproduced
    bitwise only without this copy (AIMv2 fixture: visual tokens 1.8e-7 apart with it, 0.0 without). Idempotent;
    the hook is not in the state dict.
    """
    embeddings = backbone.embeddings
    hook_id = getattr(embeddings, "_ovis_contiguous_hook", None)
    if enabled and hook_id is None:
        embeddings._ovis_contiguous_hook = embeddings.register_forward_hook(_contiguous_output).id
    elif not enabled and hook_id is not None:
        embeddings._forward_hooks.pop(hook_id, None)
        embeddings._ovis_contiguous_hook = None


def residual_stream_is_contiguous(backbone: nn.Module) -> bool:
    return getattr(backbone.embeddings, "_ovis_contiguous_hook", None) is not None


def _contiguous_output(module: nn.Module, args: Any, output: Any) -> Any:
    return output.contiguous() if isinstance(output, torch.Tensor) else output


def unused_parameter_names(backbone: nn.Module) -> list[str]:
    prefixes = family_of(backbone).unused_prefixes
    return [name for name, _ in backbone.named_parameters() if name.startswith(prefixes)]


def crop_side(backbone: nn.Module) -> int:
    """The square crop size (pixels) the backbone was configured for."""
    cfg = backbone.config
    if getattr(cfg, "image_size", None):
        return int(cfg.image_size)
    return int(round(cfg.num_patches**0.5)) * cfg.patch_size  # Siglip2 describes itself by patch count
